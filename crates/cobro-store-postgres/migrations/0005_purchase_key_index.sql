-- 0005: the idempotency lookup gets an index that nothing else can be mistaken for.
--
-- The lookup `WHERE org_id = … AND environment = … AND idempotency_key = …` could be planned
-- on purchases_by_org (org_id, environment, seq DESC), which is smaller than the unique index:
-- with the statistics of a young table (or a generic plan cached while the table was small)
-- PostgreSQL picked it, and then scanned every purchase of the organisation per lookup (37 ms
-- per key at 64,000 purchases, growing with the table). The uniqueness rule now lives in an
-- index led by the key itself, and the lookup filters the organisation and environment in a
-- form no other index serves, so the plan is an index probe whatever the statistics say.
CREATE UNIQUE INDEX purchases_idempotency ON purchases (idempotency_key, org_id, environment);
ALTER TABLE purchases DROP CONSTRAINT purchases_org_id_environment_idempotency_key_key;
