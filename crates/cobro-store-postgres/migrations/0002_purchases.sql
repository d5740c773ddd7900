-- 0002: purchases, markups, fulfilment jobs and the event outbox.

-- An organisation's markup per SKU or per category (a SKU rule wins over its category's).
CREATE TABLE markups (
    org_id        TEXT NOT NULL REFERENCES orgs(id),
    scope         TEXT NOT NULL CHECK (scope IN ('sku', 'category')),
    target        TEXT NOT NULL,
    percent       TEXT NOT NULL,
    fixed_micros  BIGINT NOT NULL CHECK (fixed_micros >= 0),
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (org_id, scope, target)
);

-- Servers keep markups in memory and reload them when this counter moves.
INSERT INTO change_versions (name, version) VALUES ('markups', 0);

-- One row per purchase. The SKU's name and carrier are copied at purchase time, so history
-- survives catalog changes. (org_id, environment, idempotency_key) is unique for ever: the same
-- key can never charge twice, and a reused key with another body is detected by request_hash.
CREATE TABLE purchases (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    amount_minor     BIGINT NOT NULL CHECK (amount_minor > 0),
    currency         TEXT NOT NULL,
    chain            TEXT NOT NULL,
    token            TEXT NOT NULL,
    wallet_address   TEXT NOT NULL,
    fx_rate          TEXT NOT NULL,
    base_micros      BIGINT NOT NULL CHECK (base_micros >= 0),
    markup_micros    BIGINT NOT NULL CHECK (markup_micros >= 0),
    total_micros     BIGINT NOT NULL CHECK (total_micros = base_micros + markup_micros),
    org_markup       TEXT,
    ledger_entry_id  TEXT NOT NULL,
    sandbox          BOOLEAN NOT NULL,
    file_number      TEXT,
    error_message    TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    confirmed_at     BIGINT,
    UNIQUE (org_id, environment, idempotency_key)
) WITH (fillfactor = 70);
-- fillfactor 70: room on each page for the fulfilment updates (PROCESSING, then SUCCESS/FAILED)
-- to be HOT updates, which leave the indexes (and the idempotency lookup) untouched.
CREATE INDEX purchases_by_org ON purchases (org_id, environment, seq DESC);

-- Work for the fulfilment worker: one row per purchase that must reach the carrier, claimed
-- with a lease so several processes can share the work.
CREATE TABLE fulfilment_jobs (
    purchase_id      TEXT PRIMARY KEY REFERENCES purchases(id),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_until      BIGINT,
    last_error       TEXT,
    -- Set when a purchase has been retried beyond the configured limit: it is still retried,
    -- and operators are told (metrics, logs), but never silently dropped.
    flagged_at       BIGINT
);
CREATE INDEX fulfilment_jobs_due ON fulfilment_jobs (next_attempt_at);

-- The outbox: every event someone must hear about, written in the same transaction as the
-- change it reports. The webhook dispatcher delivers from here.
CREATE TABLE outbox_events (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    org_id       TEXT NOT NULL REFERENCES orgs(id),
    environment  TEXT NOT NULL,
    type         TEXT NOT NULL,
    purchase_id  TEXT,
    payload      TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX outbox_events_by_org ON outbox_events (org_id, environment, seq DESC);
