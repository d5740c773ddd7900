-- 0002: purchases, markups, fulfilment jobs and the event outbox.

-- An organisation's markup per SKU or per category (a SKU rule wins over its category's).
CREATE TABLE markups (
    org_id        TEXT NOT NULL REFERENCES orgs(id),
    scope         TEXT NOT NULL CHECK (scope IN ('sku', 'category')),
    target        TEXT NOT NULL,
    percent       TEXT NOT NULL,
    fixed_micros  INTEGER NOT NULL CHECK (fixed_micros >= 0),
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (org_id, scope, target)
);

-- Servers keep markups in memory and reload them when this counter moves.
INSERT INTO change_versions (name, version) VALUES ('markups', 0);

-- One row per purchase. The SKU's name and carrier are copied at purchase time, so history
-- survives catalog changes. (org_id, environment, idempotency_key) is unique for ever: the same
-- key can never charge twice, and a reused key with another body is detected by request_hash.
CREATE TABLE purchases (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    org_id           TEXT NOT NULL REFERENCES orgs(id),
    environment      TEXT NOT NULL CHECK (environment IN ('dev', 'prod')),
    idempotency_key  TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('PENDING', 'PROCESSING', 'SUCCESS', 'FAILED', 'CANCELLED')),
    api_public_key   TEXT NOT NULL,
    customer_id      TEXT NOT NULL,
    sku_id           TEXT NOT NULL,
    sku_name         TEXT NOT NULL,
    carrier_name     TEXT NOT NULL,
    sku_reference    TEXT NOT NULL,
    amount_minor     INTEGER NOT NULL CHECK (amount_minor > 0),
    currency         TEXT NOT NULL,
    chain            TEXT NOT NULL,
    token            TEXT NOT NULL,
    wallet_address   TEXT NOT NULL,
    fx_rate          TEXT NOT NULL,
    base_micros      INTEGER NOT NULL CHECK (base_micros >= 0),
    markup_micros    INTEGER NOT NULL CHECK (markup_micros >= 0),
    total_micros     INTEGER NOT NULL CHECK (total_micros = base_micros + markup_micros),
    org_markup       TEXT,
    ledger_entry_id  TEXT NOT NULL,
    sandbox          INTEGER NOT NULL,
    file_number      TEXT,
    error_message    TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    confirmed_at     INTEGER,
    UNIQUE (org_id, environment, idempotency_key)
);
CREATE INDEX purchases_by_org ON purchases (org_id, environment, seq DESC);

-- Work for the fulfilment worker: one row per purchase that must reach the carrier, claimed
-- with a lease so several processes can share the work.
CREATE TABLE fulfilment_jobs (
    purchase_id      TEXT PRIMARY KEY REFERENCES purchases(id),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_until      INTEGER,
    last_error       TEXT,
    -- Set when a purchase has been retried beyond the configured limit: it is still retried,
    -- and operators are told (metrics, logs), but never silently dropped.
    flagged_at       INTEGER
);
CREATE INDEX fulfilment_jobs_due ON fulfilment_jobs (next_attempt_at);

-- The outbox: every event someone must hear about, written in the same transaction as the
-- change it reports. The webhook dispatcher delivers from here.
CREATE TABLE outbox_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    org_id       TEXT NOT NULL REFERENCES orgs(id),
    environment  TEXT NOT NULL,
    type         TEXT NOT NULL,
    purchase_id  TEXT,
    payload      TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX outbox_events_by_org ON outbox_events (org_id, environment, seq DESC);
