-- 0001: the foundation. Organisations, API keys, credits (balance + append-only ledger),
-- the catalog, the built-in JWT issuer, and the change counters servers poll.
-- Times are Unix milliseconds (BIGINT); money is micro-dollars (BIGINT).

CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- One row per organisation, updated in the same transaction as the ledger entry that
-- changes it. The CHECK makes a negative balance impossible whatever the code does.
CREATE TABLE org_balances (
    org_id            TEXT PRIMARY KEY REFERENCES orgs(id),
    available_micros  BIGINT NOT NULL CHECK (available_micros >= 0 AND available_micros <= 1000000000000000000),
    updated_at        BIGINT NOT NULL
);

-- Append-only: the trigger below refuses UPDATE and DELETE. A mistake is corrected by a
-- new, reversing entry. `seq` orders entries; `balance_after_micros` chains them, so an
-- auditor can check balance == sum(amounts) == last balance_after.
CREATE TABLE ledger_entries (
    seq                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                    TEXT NOT NULL UNIQUE,
    org_id                TEXT NOT NULL REFERENCES orgs(id),
    kind                  TEXT NOT NULL CHECK (kind IN ('topup', 'purchase', 'refund', 'adjustment')),
    amount_micros         BIGINT NOT NULL CHECK (amount_micros <> 0),
    balance_after_micros  BIGINT NOT NULL CHECK (balance_after_micros >= 0),
    note                  TEXT,
    purchase_id           TEXT,
    created_at            BIGINT NOT NULL
);
CREATE INDEX ledger_entries_by_org ON ledger_entries (org_id, seq DESC);

CREATE FUNCTION ledger_entries_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are append-only';
END;
$$;
CREATE TRIGGER ledger_entries_are_never_changed BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_are_append_only();

-- The secret key is stored only as its SHA-256 (hex).
CREATE TABLE api_keys (
    public_key   TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES orgs(id),
    environment  TEXT NOT NULL CHECK (environment IN ('dev', 'prod')),
    secret_hash  TEXT NOT NULL UNIQUE,
    jwks_url     TEXT,
    issuer       TEXT,
    audience     TEXT,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_by_org ON api_keys (org_id);

-- The catalog: each record is the CatalogEntry JSON document; `active` is repeated as a
-- column so operators can query it.
CREATE TABLE skus (
    id          TEXT PRIMARY KEY,
    doc         TEXT NOT NULL,
    active      BOOLEAN NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Signing keys of the built-in development issuer. `slot` is unique so that two processes
-- starting at once agree on a single key.
CREATE TABLE issuer_keys (
    kid            TEXT PRIMARY KEY,
    slot           INTEGER NOT NULL UNIQUE,
    alg            TEXT NOT NULL,
    private_pkcs8  BYTEA NOT NULL,
    public_jwk     TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

-- Bumped in the same transaction as every change to keys or the catalog; servers poll these
-- two numbers and reload their in-memory snapshots when they move.
CREATE TABLE change_versions (
    name     TEXT PRIMARY KEY,
    version  BIGINT NOT NULL
);
INSERT INTO change_versions (name, version) VALUES ('keys', 0), ('catalog', 0);
