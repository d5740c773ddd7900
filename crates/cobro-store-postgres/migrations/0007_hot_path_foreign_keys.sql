-- 0007: no foreign-key checks on the rows a purchase writes.
--
-- Each foreign key costs a lookup and a row lock (FOR KEY SHARE) on the referenced row for
-- every inserted row: three per purchase (purchase and ledger entry -> orgs, job -> purchase)
-- and one per event; all but the job's lock the organisation's one `orgs` row. Measured with
-- pg_stat_statements under `bench/purchases`, dropping them made the purchase-creation
-- statements about a quarter cheaper. The references still hold by construction:
-- * a purchase is written for the organisation of the API key that made it (api_keys keeps
--   its foreign key to orgs); a production purchase and its ledger entry only together with
--   the debit of that organisation's org_balances row (which keeps its foreign key too);
-- * every other ledger entry moves the org_balances row in the same transaction, and fails
--   when there is none;
-- * a job is inserted by the statement that inserts its purchase;
-- * an event takes its organisation from the purchase it reports.
-- Organisations and purchases are never deleted.
ALTER TABLE purchases DROP CONSTRAINT purchases_org_id_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_org_id_fkey;
ALTER TABLE fulfilment_jobs DROP CONSTRAINT fulfilment_jobs_purchase_id_fkey;
ALTER TABLE outbox_events DROP CONSTRAINT outbox_events_org_id_fkey;
