-- The scanner's two PostgreSQL roles on its database: one that migrates (owns the tables) and
-- one that runs (reads and writes rows, nothing else). Run once as an administrator (a
-- superuser, or a role with CREATEROLE that owns the database), with psql:
--
--   psql "$ADMIN_URL" -v db=payments -v migrator=scanner_migrator -v runtime=scanner \
--        -f config/postgres-roles.sql
--
-- then give each role a password (\password scanner_migrator, \password scanner) and use
--   scanner migrate upgrade   with DATABASE_URL=postgresql://scanner_migrator:...@host/payments
--   scanner run (and status, check, backfill, webhooks)
--                             with DATABASE_URL=postgresql://scanner:...@host/payments
-- The gateway's own role needs its grants on payments and tokens (and reads the rest).

CREATE ROLE :"migrator" LOGIN;
CREATE ROLE :"runtime" LOGIN;

-- CONNECT; TEMPORARY for the temporary tables of bulk writes and of backfill --dry-run.
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"migrator", :"runtime";

\connect :"db"

-- The migrator creates and alters the tables in the schema: it owns them.
GRANT USAGE, CREATE ON SCHEMA public TO :"migrator";
GRANT USAGE ON SCHEMA public TO :"runtime";

-- The runtime role: rows of every table the migrator creates, now and in later migrations, and
-- its sequences (payment_events ids). Advisory locks and LISTEN/NOTIFY need no grant.
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"runtime";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO :"runtime";

-- A database migrated before these roles existed: the same on the tables already there.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"runtime";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"runtime";
