//! The decisions of a purchase batch, shared by every backend.
//!
//! A backend loads what the batch needs (purchases already stored under the batch's keys, and
//! the balances of the organisations that pay, locked for the transaction), calls [`plan`],
//! and writes the plan with a few set-based statements. The plan walks the batch in order,
//! exactly as if the purchases had arrived one by one: a key seen before (stored, or earlier in
//! this batch) is a replay or a reuse; a real purchase is accepted if the running balance covers
//! it; a sandbox purchase always is.

use std::collections::HashMap;

use crate::{NewPurchase, PurchaseRecord, PurchaseResult};

/// The key that makes a purchase unique.
pub type PurchaseKey = (String, &'static str, String);

pub fn key_of(r: &PurchaseRecord) -> PurchaseKey {
    (
        r.org_id.clone(),
        r.environment.as_str(),
        r.idempotency_key.clone(),
    )
}

/// What to write for one accepted purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Index in the batch.
    pub index: usize,
    /// For a real purchase, the organisation's balance after its debit.
    pub balance_after: Option<i64>,
}

/// The outcome of planning a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan {
    /// One result per input, in order.
    pub results: Vec<PurchaseResult>,
    /// The purchases to store, in order.
    pub accepted: Vec<Accepted>,
    /// The final balance of every organisation that was debited.
    pub balances: HashMap<String, i64>,
}

/// Decides every purchase of `batch`. `existing`: stored purchases by key; `balances`: the
/// current balance of every organisation paying for a real purchase in the batch (an absent
/// organisation cannot pay).
pub fn plan(
    batch: &[NewPurchase],
    mut existing: HashMap<PurchaseKey, PurchaseRecord>,
    mut balances: HashMap<String, i64>,
) -> BatchPlan {
    let mut results = Vec::with_capacity(batch.len());
    let mut accepted = Vec::new();
    let mut debited = HashMap::new();
    for (index, p) in batch.iter().enumerate() {
        let r = &p.record;
        let key = key_of(r);
        if let Some(prior) = existing.get(&key) {
            results.push(if prior.request_hash == r.request_hash {
                PurchaseResult::Replayed(prior.clone())
            } else {
                PurchaseResult::KeyReused(prior.clone())
            });
            continue;
        }
        let balance_after = if r.sandbox {
            None
        } else {
            match balances.get_mut(&r.org_id) {
                Some(balance) if *balance >= r.total.0 => {
                    *balance -= r.total.0;
                    debited.insert(r.org_id.clone(), *balance);
                    Some(*balance)
                }
                _ => {
                    results.push(PurchaseResult::InsufficientBalance);
                    continue;
                }
            }
        };
        existing.insert(key, r.clone());
        accepted.push(Accepted {
            index,
            balance_after,
        });
        results.push(PurchaseResult::Created(r.clone()));
    }
    BatchPlan {
        results,
        accepted,
        balances: debited,
    }
}

/// The organisations a batch would debit (those of its production purchases), sorted, once
/// each: the balances to read (and to lock in this order).
pub fn payers(batch: &[NewPurchase]) -> Vec<&str> {
    let mut payers: Vec<&str> = batch
        .iter()
        .filter(|p| !p.record.sandbox)
        .map(|p| p.record.org_id.as_str())
        .collect();
    payers.sort_unstable();
    payers.dedup();
    payers
}

/// The organisation of a batch that a backend may write without reading first: production
/// purchases of one organisation, with no events, under distinct keys. Whether the keys are
/// new and the balance covers them is for the write to find out (and undo if not).
pub fn single_payer(batch: &[NewPurchase]) -> Option<&str> {
    let org = batch.first()?.record.org_id.as_str();
    let mut keys = std::collections::HashSet::with_capacity(batch.len());
    batch
        .iter()
        .all(|p| {
            let r = &p.record;
            !r.sandbox
                && p.events.is_empty()
                && r.org_id == org
                && keys.insert((r.environment, r.idempotency_key.as_str()))
        })
        .then_some(org)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cobro_types::{Currency, Environment, MinorAmount, PurchaseStatus, Timestamp, UsdMicros};

    fn p(key: &str, hash: &str, total: i64, sandbox: bool) -> NewPurchase {
        NewPurchase {
            record: PurchaseRecord {
                id: format!("id-{key}-{hash}"),
                org_id: "org".into(),
                environment: if sandbox {
                    Environment::Dev
                } else {
                    Environment::Prod
                },
                idempotency_key: key.into(),
                request_hash: hash.into(),
                status: PurchaseStatus::Pending,
                api_public_key: "pk".into(),
                customer_id: "c".into(),
                sku_id: "s".into(),
                sku_name: "n".into(),
                carrier_name: "c".into(),
                sku_reference: "r".into(),
                amount: MinorAmount(100),
                currency: Currency::Mxn,
                chain: "STARKNET".into(),
                token: "USDC".into(),
                wallet_address: "0x0".into(),
                fx_rate: "1".into(),
                base: UsdMicros(total),
                markup: UsdMicros(0),
                total: UsdMicros(total),
                org_markup: None,
                ledger_entry_id: format!("le-{key}"),
                sandbox,
                file_number: None,
                error_message: None,
                created_at: Timestamp::from_unix_millis(0),
                updated_at: Timestamp::from_unix_millis(0),
                confirmed_at: None,
            },
            events: vec![],
        }
    }

    #[test]
    fn only_production_batches_of_one_payer_and_distinct_keys_skip_the_reads() {
        let plain = [p("a", "h1", 60, false), p("b", "h1", 60, false)];
        assert_eq!(single_payer(&plain), Some("org"));
        assert_eq!(payers(&plain), vec!["org"]);
        let repeated = [p("a", "h1", 60, false), p("a", "h2", 60, false)];
        assert_eq!(single_payer(&repeated), None);
        let sandbox = [p("a", "h1", 60, false), p("d", "h1", 60, true)];
        assert_eq!(single_payer(&sandbox), None);
        let mut other = p("c", "h1", 60, false);
        other.record.org_id = "org2".into();
        let two = [p("a", "h1", 60, false), other];
        assert_eq!(single_payer(&two), None);
        assert_eq!(payers(&two), vec!["org", "org2"]);
        assert_eq!(single_payer(&[]), None);
    }

    #[test]
    fn a_batch_is_decided_as_if_its_purchases_came_one_by_one() {
        let batch = [
            p("a", "h1", 60, false),
            p("b", "h1", 60, false),   // does not fit after a
            p("a", "h1", 60, false),   // replay of a
            p("a", "h2", 60, false),   // reuse of a
            p("c", "h1", 40, false),   // fits exactly
            p("d", "h1", 1_000, true), // sandbox: always
            p("b", "h1", 10, false), // b was refused, so this is a fresh attempt... that no longer fits
        ];
        let plan = plan(
            &batch,
            HashMap::new(),
            HashMap::from([("org".to_string(), 100)]),
        );
        let kinds: Vec<&str> = plan
            .results
            .iter()
            .map(|r| match r {
                PurchaseResult::Created(_) => "created",
                PurchaseResult::Replayed(_) => "replayed",
                PurchaseResult::KeyReused(_) => "reused",
                PurchaseResult::InsufficientBalance => "insufficient",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "created",
                "insufficient",
                "replayed",
                "reused",
                "created",
                "created",
                "insufficient"
            ]
        );
        assert_eq!(
            plan.accepted
                .iter()
                .map(|a| (a.index, a.balance_after))
                .collect::<Vec<_>>(),
            [(0, Some(40)), (4, Some(0)), (5, None)]
        );
        assert_eq!(plan.balances, HashMap::from([("org".to_string(), 0)]));
    }

    #[test]
    fn stored_keys_replay_and_unknown_organisations_cannot_pay() {
        let stored = p("a", "h1", 60, false).record;
        let existing = HashMap::from([(key_of(&stored), stored.clone())]);
        let plan = plan(
            &[p("a", "h1", 60, false), p("z", "h1", 1, false)],
            existing,
            HashMap::new(),
        );
        assert_eq!(
            plan.results,
            vec![
                PurchaseResult::Replayed(stored),
                PurchaseResult::InsufficientBalance
            ]
        );
        assert!(plan.accepted.is_empty() && plan.balances.is_empty());
    }
}
