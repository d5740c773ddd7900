-- 0003: webhook endpoints, deliveries and their attempt log.

-- When the dispatcher turned the event into deliveries (NULL: not yet).
ALTER TABLE outbox_events ADD COLUMN routed_at BIGINT;
CREATE INDEX outbox_events_unrouted ON outbox_events (seq) WHERE routed_at IS NULL;
CREATE INDEX outbox_events_by_purchase ON outbox_events (purchase_id);

CREATE TABLE webhook_endpoints (
    id                     TEXT PRIMARY KEY,
    org_id                 TEXT NOT NULL REFERENCES orgs(id),
    environment            TEXT NOT NULL CHECK (environment IN ('dev', 'prod')),
    url                    TEXT NOT NULL,
    description            TEXT,
    -- '*' or ',type,type,'
    events                 TEXT NOT NULL,
    enabled                BOOLEAN NOT NULL,
    disabled_reason        TEXT,
    secret                 TEXT NOT NULL,
    previous_secret        TEXT,
    previous_secret_until  BIGINT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL,
    deleted_at             BIGINT
);
CREATE INDEX webhook_endpoints_by_org ON webhook_endpoints (org_id, environment);

CREATE TABLE webhook_deliveries (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_seq         BIGINT NOT NULL REFERENCES outbox_events(seq),
    endpoint_id       TEXT NOT NULL REFERENCES webhook_endpoints(id),
    status            TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    -- Due time; while leased, the end of the lease.
    next_attempt_at   BIGINT NOT NULL,
    lease_owner       TEXT,
    last_status_code  INTEGER,
    last_error        TEXT,
    created_at        BIGINT NOT NULL,
    finished_at       BIGINT
) WITH (fillfactor = 80);
-- (endpoint_id, next_attempt_at, id) is exactly the claim's order, so a claim reads the first
-- rows of the index instead of sorting every due delivery of the endpoint.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_seq);

-- Every attempt, in order. Never edited.
CREATE TABLE webhook_attempts (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id    BIGINT NOT NULL REFERENCES webhook_deliveries(id),
    event_seq      BIGINT NOT NULL,
    endpoint_id    TEXT NOT NULL,
    attempt        INTEGER NOT NULL,
    attempted_at   BIGINT NOT NULL,
    status_code    INTEGER,
    latency_ms     BIGINT NOT NULL,
    error          TEXT
);
CREATE INDEX webhook_attempts_by_event ON webhook_attempts (event_seq, id);
CREATE FUNCTION webhook_attempts_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'webhook attempts are append-only';
END;
$$;
CREATE TRIGGER webhook_attempts_are_never_changed BEFORE UPDATE OR DELETE ON webhook_attempts
    FOR EACH ROW EXECUTE FUNCTION webhook_attempts_are_append_only();
