-- Direct SQL access for one partner on a ClickHouse server deployment.
-- `beacon partners sql` prints this for every partner in the registry, with fresh passwords.
-- The row policy makes every SELECT of this user see only rows of its own scope;
-- users without a row policy (Beacon's flushers and API) keep seeing every row.
CREATE USER IF NOT EXISTS beacon_partner_adco IDENTIFIED WITH sha256_password BY 'change-me'
    SETTINGS readonly = 1;
GRANT SELECT ON beacon.events TO beacon_partner_adco;
CREATE ROW POLICY OR REPLACE beacon_partner_adco_scope ON beacon.events FOR SELECT
    USING scope = 'adco' TO beacon_partner_adco;
