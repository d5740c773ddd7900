-- 0005: the idempotency lookup is a probe of a single-column unique index, whatever the
-- statistics say.
--
-- The lookup `WHERE org_id = … AND environment = … AND idempotency_key = …` was open to two
-- bad plans: on purchases_by_org (org_id, environment, seq DESC), smaller than the unique
-- index, scanning every purchase of the organisation per key; and, once that was ruled out,
-- a generic plan cached while the table had no statistics that hash-joined the batch against
-- a sequential scan of all purchases. Both made purchase creation slower as the table grew
-- (37 ms, then 82 ms per batch at 64,000-90,000 purchases). The scope of a key is now one
-- column with a unique index, so PostgreSQL knows a lookup returns at most one row per key.
-- Ids contain no '/', and the environment is dev or prod, so the scope is unambiguous.
ALTER TABLE purchases ADD COLUMN key_scope TEXT
    GENERATED ALWAYS AS (org_id || '/' || environment || '/' || idempotency_key) STORED;
CREATE UNIQUE INDEX purchases_key_scope ON purchases (key_scope);
ALTER TABLE purchases DROP CONSTRAINT purchases_org_id_environment_idempotency_key_key;
