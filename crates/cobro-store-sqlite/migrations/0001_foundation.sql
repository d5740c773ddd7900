-- 0001: the foundation. Organisations, API keys, credits (balance + append-only ledger),
-- the catalog, the built-in JWT issuer, and the change counters servers poll.
-- Times are Unix milliseconds (INTEGER); money is micro-dollars (INTEGER).

CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- One row per organisation, updated in the same transaction as the ledger entry that
-- changes it. The CHECK makes a negative balance impossible whatever the code does.
CREATE TABLE org_balances (
    org_id            TEXT PRIMARY KEY REFERENCES orgs(id),
    available_micros  INTEGER NOT NULL CHECK (available_micros >= 0 AND available_micros <= 1000000000000000000),
    updated_at        INTEGER NOT NULL
);

-- Append-only: the triggers below refuse UPDATE and DELETE. A mistake is corrected by a
-- new, reversing entry. `seq` orders entries; `balance_after_micros` chains them, so an
-- auditor can check balance == sum(amounts) == last balance_after.
CREATE TABLE ledger_entries (
    seq                   INTEGER PRIMARY KEY AUTOINCREMENT,
    id                    TEXT NOT NULL UNIQUE,
    org_id                TEXT NOT NULL REFERENCES orgs(id),
    kind                  TEXT NOT NULL CHECK (kind IN ('topup', 'purchase', 'refund', 'adjustment')),
    amount_micros         INTEGER NOT NULL CHECK (amount_micros <> 0),
    balance_after_micros  INTEGER NOT NULL CHECK (balance_after_micros >= 0),
    note                  TEXT,
    purchase_id           TEXT,
    created_at            INTEGER NOT NULL
);
CREATE INDEX ledger_entries_by_org ON ledger_entries (org_id, seq DESC);

CREATE TRIGGER ledger_entries_are_never_updated BEFORE UPDATE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger entries are append-only');
END;
CREATE TRIGGER ledger_entries_are_never_deleted BEFORE DELETE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger entries are append-only');
END;

-- The secret key is stored only as its SHA-256 (hex).
CREATE TABLE api_keys (
    public_key   TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES orgs(id),
    environment  TEXT NOT NULL CHECK (environment IN ('dev', 'prod')),
    secret_hash  TEXT NOT NULL UNIQUE,
    jwks_url     TEXT,
    issuer       TEXT,
    audience     TEXT,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);
CREATE INDEX api_keys_by_org ON api_keys (org_id);

-- The catalog: each record is the CatalogEntry JSON document; `active` is repeated as a
-- column so operators can query it.
CREATE TABLE skus (
    id          TEXT PRIMARY KEY,
    doc         TEXT NOT NULL,
    active      INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Signing keys of the built-in development issuer. `slot` is unique so that two processes
-- starting at once agree on a single key.
CREATE TABLE issuer_keys (
    kid            TEXT PRIMARY KEY,
    slot           INTEGER NOT NULL UNIQUE,
    alg            TEXT NOT NULL,
    private_pkcs8  BLOB NOT NULL,
    public_jwk     TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);

-- Bumped in the same transaction as every change to keys or the catalog; servers poll these
-- two numbers and reload their in-memory snapshots when they move.
CREATE TABLE change_versions (
    name     TEXT PRIMARY KEY,
    version  INTEGER NOT NULL
);
INSERT INTO change_versions (name, version) VALUES ('keys', 0), ('catalog', 0);
