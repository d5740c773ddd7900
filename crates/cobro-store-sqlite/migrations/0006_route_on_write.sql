-- 0006: an outbox event is routed in the transaction that writes it (one pending delivery
-- per matching endpoint, and routed_at set), so no event is left waiting for a router. Events
-- written before this version and still unrouted are routed here, due now, exactly as the
-- router used to do it.
INSERT INTO webhook_deliveries (event_seq, endpoint_id, status, attempts, next_attempt_at, created_at)
SELECT e.seq, w.id, 'pending', 0,
       CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
       CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
FROM outbox_events e
JOIN webhook_endpoints w ON w.org_id = e.org_id AND w.environment = e.environment
WHERE e.routed_at IS NULL AND w.enabled = 1 AND w.deleted_at IS NULL
  AND w.created_at <= e.created_at
  AND (w.events = '*' OR w.events LIKE '%,' || e.type || ',%')
ORDER BY e.seq, w.id;
UPDATE outbox_events SET routed_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
WHERE routed_at IS NULL;
DROP INDEX outbox_events_unrouted;
