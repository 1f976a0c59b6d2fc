"""Helpers for tests/test_browser.py: TLS certificate, static pages, Beacon launcher."""
