//! The simulator's state: recorded outcomes, fulfilment counts, planned faults, and the
//! decisions taken for each request.
//!
//! Everything is behind one `std::sync::Mutex` that is never held across an `.await`: a
//! request takes its decision under the lock, sleeps outside it, then records its outcome
//! under the lock again.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{
    config::SimConfig,
    fault::Fault,
    protocol::{
        CheckAnswer, RechargeAnswer, RechargeRequest, Status, failure_message, parse_cents,
    },
    rng::{SplitMix64, hash},
};

/// What the simulator has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Recharges actually applied (successful), all references together.
    pub total: u64,
    /// Recharges applied per reference: anything above 1 is a double fulfilment.
    pub by_reference: BTreeMap<String, u64>,
    /// Every `POST /v1/recharges` per reference, whatever its answer.
    pub attempts: BTreeMap<String, u64>,
}

/// The simulated aggregator. Cheap to clone: clones share the same state.
#[derive(Debug, Clone, Default)]
pub struct Sim {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    config: SimConfig,
    outcomes: HashMap<String, Outcome>,
    counts: Counts,
    plans: HashMap<String, VecDeque<Plan>>,
    /// (account, amount in minor units) → (reference, when) of accepted recharges.
    recent: HashMap<(String, u64), Vec<(String, Instant)>>,
    /// Receipts issued so far; never reset, so receipts stay unique for the process.
    receipts: u64,
    /// Requests that are not recharges (`GET`, checks), for their latency draws.
    other_requests: u64,
}

#[derive(Debug, Clone)]
struct Plan {
    fault: Fault,
    remaining: u32,
}

#[derive(Debug, Clone)]
enum Outcome {
    Success { file_number: String },
    Failed { code: String },
    Pending { ready_at: Instant },
}

/// What happens to one `POST /v1/recharges`, decided before it is processed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Decision {
    pub(crate) latency: Duration,
    pub(crate) unavailable: bool,
    pub(crate) fail: Option<String>,
    pub(crate) pending: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) lost: bool,
}

impl Sim {
    /// A simulator with this configuration (rates clamped into `[0, 1]`).
    pub fn new(config: SimConfig) -> Self {
        let sim = Sim::default();
        sim.set_config(config);
        sim
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current configuration.
    pub fn config(&self) -> SimConfig {
        self.state().config.clone()
    }

    /// Replaces the configuration (rates clamped into `[0, 1]`; use
    /// [`SimConfig::validate`] first to reject them instead). Recorded outcomes stay.
    pub fn set_config(&self, config: SimConfig) {
        self.state().config = config.sanitized();
    }

    /// Plans `fault` for the next `times` recharges of `account`, after any plan already
    /// queued for it. A planned request skips the random draws. A `fail:` plan also makes
    /// reference checks of the account invalid (without being consumed by them).
    pub fn plan(&self, account: &str, fault: Fault, times: u32) {
        if times == 0 {
            return;
        }
        self.state()
            .plans
            .entry(account.to_owned())
            .or_default()
            .push_back(Plan {
                fault,
                remaining: times,
            });
    }

    /// Forgets every outcome, count and plan (the configuration stays).
    pub fn reset(&self) {
        let mut st = self.state();
        st.outcomes.clear();
        st.counts = Counts::default();
        st.plans.clear();
        st.recent.clear();
        st.other_requests = 0;
    }

    /// What has been fulfilled and attempted so far.
    pub fn fulfilments(&self) -> Counts {
        self.state().counts.clone()
    }

    /// The current outcome of `reference`, as `GET /v1/recharges/{reference}` answers it
    /// (a pending recharge whose time has come succeeds now).
    pub fn outcome(&self, reference: &str) -> Option<RechargeAnswer> {
        self.state().current(reference, Instant::now())
    }

    /// Counts the attempt and decides the faults of one recharge: the account's plan if
    /// any (consuming one of its `times`), else the seeded random draws.
    ///
    /// The draws come from a PRNG seeded by the seed, the reference and the attempt number,
    /// so they do not depend on the order in which concurrent requests arrive.
    pub(crate) fn decide(&self, req: &RechargeRequest) -> Decision {
        let mut st = self.state();
        let attempt = {
            let n = st.counts.attempts.entry(req.reference.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let c = &st.config;
        let mut rng = SplitMix64::new(hash(
            c.seed,
            &[req.reference.as_bytes(), &attempt.to_le_bytes()],
        ));
        // Always draw everything, in a fixed order.
        let jitter = rng.up_to(c.latency_jitter_ms);
        let [u_unavailable, u_fail, u_code, u_pending, u_timeout, u_lost] =
            [(); 6].map(|()| rng.next_f64());
        let latency = Duration::from_millis(c.latency_ms.saturating_add(jitter));
        let timeout = Duration::from_millis(c.timeout_ms);
        let pending = Duration::from_millis(c.pending_ms);

        let planned = st.take_plan(&req.account);
        let c = &st.config;
        match planned {
            Some(fault) => {
                let mut d = Decision {
                    latency,
                    ..Decision::default()
                };
                match fault {
                    Fault::Fail(code) => d.fail = Some(code),
                    Fault::Unavailable => d.unavailable = true,
                    Fault::Timeout => d.timeout = Some(timeout),
                    Fault::Lost => d.lost = true,
                    Fault::Latency(ms) => d.latency = Duration::from_millis(ms),
                    Fault::Pending(ms) => d.pending = Some(Duration::from_millis(ms)),
                }
                d
            }
            None => Decision {
                latency,
                unavailable: u_unavailable < c.unavailable_rate,
                fail: (u_fail < c.failure_rate).then(|| {
                    if u_code < 0.5 {
                        "INVALID_NUMBER"
                    } else {
                        "CARRIER_UNAVAILABLE"
                    }
                    .to_owned()
                }),
                pending: (u_pending < c.pending_rate).then_some(pending),
                timeout: (u_timeout < c.timeout_rate).then_some(timeout),
                lost: u_lost < c.lost_rate,
            },
        }
    }

    /// Processes a recharge that got past the latency and availability: replays the stored
    /// outcome of a known reference, else refuses or accepts it and records the outcome.
    pub(crate) fn process(&self, req: &RechargeRequest, d: &Decision) -> RechargeAnswer {
        let mut st = self.state();
        let now = Instant::now();
        if let Some(answer) = st.current(&req.reference, now) {
            return answer;
        }
        let cents = parse_cents(req.amount.trim());
        let account_ok = !req.account.is_empty() && req.account.bytes().all(|b| b.is_ascii_digit());
        let window = Duration::from_secs(st.config.duplicate_window_secs);
        let key = cents.map(|c| (req.account.clone(), c));
        let duplicate = match &key {
            Some(key) if !window.is_zero() => st.recent.get(key).is_some_and(|seen| {
                seen.iter().any(|(reference, at)| {
                    reference != &req.reference && now.saturating_duration_since(*at) < window
                })
            }),
            _ => false,
        };
        let refusal = if cents.is_none() {
            Some("INVALID_AMOUNT".to_owned())
        } else if !account_ok {
            Some("INVALID_NUMBER".to_owned())
        } else if duplicate {
            Some("DUPLICATE_RECHARGE".to_owned())
        } else {
            d.fail.clone()
        };
        let outcome = match refusal {
            Some(code) => Outcome::Failed { code },
            None => {
                if let Some(key) = key {
                    let seen = st.recent.entry(key).or_default();
                    seen.retain(|(_, at)| now.saturating_duration_since(*at) < window);
                    seen.push((req.reference.clone(), now));
                }
                match d.pending {
                    Some(p) => Outcome::Pending { ready_at: now + p },
                    None => {
                        let file_number = st.next_receipt();
                        st.count_fulfilment(&req.reference);
                        Outcome::Success { file_number }
                    }
                }
            }
        };
        let answer = outcome.answer(&req.reference);
        st.outcomes.insert(req.reference.clone(), outcome);
        answer
    }

    /// Latency for a request that is not a recharge: the configured latency and jitter.
    pub(crate) fn ambient_latency(&self, key: &str) -> Duration {
        let mut st = self.state();
        st.other_requests += 1;
        let c = &st.config;
        let mut rng = SplitMix64::new(hash(
            c.seed,
            &[b"other", key.as_bytes(), &st.other_requests.to_le_bytes()],
        ));
        Duration::from_millis(c.latency_ms.saturating_add(rng.up_to(c.latency_jitter_ms)))
    }

    /// Answers `POST /v1/references/check` for `account`.
    pub(crate) fn check(&self, account: &str) -> CheckAnswer {
        let st = self.state();
        let planned_failure = st.plans.get(account).and_then(|q| {
            q.front().and_then(|p| match &p.fault {
                Fault::Fail(code) => Some(code.clone()),
                _ => None,
            })
        });
        drop(st);
        if let Some(code) = planned_failure {
            return CheckAnswer {
                valid: false,
                holder: None,
                amount_due: None,
                message: Some(failure_message(&code).to_owned()),
            };
        }
        let well_formed =
            matches!(account.len(), 10 | 12) && account.bytes().all(|b| b.is_ascii_digit());
        if !well_formed {
            return CheckAnswer {
                valid: false,
                holder: None,
                amount_due: None,
                message: Some(
                    "Referencia inválida: 10 o 12 dígitos / Invalid reference: 10 or 12 digits"
                        .to_owned(),
                ),
            };
        }
        const HOLDERS: [&str; 8] = [
            "María González",
            "José Hernández",
            "Guadalupe López",
            "Juan Martínez",
            "Ana Rodríguez",
            "Luis Pérez",
            "Carmen Sánchez",
            "Miguel Ramírez",
        ];
        let h = hash(0, &[account.as_bytes()]);
        let holder = HOLDERS
            .get((h % HOLDERS.len() as u64) as usize)
            .copied()
            .unwrap_or("Titular");
        let cents = 10_000 + (h >> 8) % 190_000;
        CheckAnswer {
            valid: true,
            holder: Some(holder.to_owned()),
            amount_due: Some(format!("{}.{:02}", cents / 100, cents % 100)),
            message: None,
        }
    }
}

impl State {
    fn take_plan(&mut self, account: &str) -> Option<Fault> {
        let queue = self.plans.get_mut(account)?;
        let plan = queue.front_mut()?;
        let fault = plan.fault.clone();
        plan.remaining = plan.remaining.saturating_sub(1);
        if plan.remaining == 0 {
            queue.pop_front();
        }
        if queue.is_empty() {
            self.plans.remove(account);
        }
        Some(fault)
    }

    fn next_receipt(&mut self) -> String {
        self.receipts += 1;
        let base = SplitMix64::new(self.config.seed).next_u64() % 1_000_000_000;
        let n = (1_000_000_000 + base + self.receipts) % 10_000_000_000;
        format!("TET-{n:010}")
    }

    fn count_fulfilment(&mut self, reference: &str) {
        self.counts.total += 1;
        *self
            .counts
            .by_reference
            .entry(reference.to_owned())
            .or_insert(0) += 1;
    }

    /// The outcome of `reference`, resolving a pending recharge whose time has come.
    fn current(&mut self, reference: &str, now: Instant) -> Option<RechargeAnswer> {
        let due = match self.outcomes.get(reference)? {
            Outcome::Pending { ready_at } => now >= *ready_at,
            _ => false,
        };
        if due {
            let file_number = self.next_receipt();
            self.count_fulfilment(reference);
            self.outcomes
                .insert(reference.to_owned(), Outcome::Success { file_number });
        }
        self.outcomes.get(reference).map(|o| o.answer(reference))
    }
}

impl Outcome {
    fn answer(&self, reference: &str) -> RechargeAnswer {
        let mut a = RechargeAnswer {
            reference: reference.to_owned(),
            status: Status::Pending,
            file_number: None,
            code: None,
            message: None,
        };
        match self {
            Outcome::Success { file_number } => {
                a.status = Status::Success;
                a.file_number = Some(file_number.clone());
            }
            Outcome::Failed { code } => {
                a.status = Status::Failed;
                a.message = Some(failure_message(code).to_owned());
                a.code = Some(code.clone());
            }
            Outcome::Pending { .. } => {}
        }
        a
    }
}
