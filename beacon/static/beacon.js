/* placeholder: replaced by the real script */
