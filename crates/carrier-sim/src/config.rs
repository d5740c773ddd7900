//! The run-level configuration: latency and the probabilities of each fault.

use serde::{Deserialize, Serialize};

/// How the simulator behaves when no per-account [plan](crate::Sim::plan) applies.
///
/// Every rate is a probability in `[0, 1]`, drawn independently per request from a PRNG
/// seeded by `seed`. The default injects no fault at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct SimConfig {
    /// Delay added before every `/v1` answer.
    pub latency_ms: u64,
    /// A uniform random extra delay in `[0, latency_jitter_ms]`.
    pub latency_jitter_ms: u64,
    /// Probability of a definitive refusal (`422`, `INVALID_NUMBER` or `CARRIER_UNAVAILABLE`).
    pub failure_rate: f64,
    /// Probability of a `503` with nothing processed.
    pub unavailable_rate: f64,
    /// Probability that a recharge is processed but answered only after `timeout_ms`.
    pub timeout_rate: f64,
    /// How long a "timeout" answer sleeps.
    pub timeout_ms: u64,
    /// Probability that a recharge is processed but its answer is cut (unreadable).
    pub lost_rate: f64,
    /// Probability that a recharge is answered `202 pending`.
    pub pending_rate: f64,
    /// How long a pending recharge stays pending before it succeeds.
    pub pending_ms: u64,
    /// Window of the `DUPLICATE_RECHARGE` rule (same account and amount under another
    /// reference); `0` disables the rule.
    pub duplicate_window_secs: u64,
    /// Seed of the fault draws: same seed and same requests give the same outcomes.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency_ms: 0,
            latency_jitter_ms: 0,
            failure_rate: 0.0,
            unavailable_rate: 0.0,
            timeout_rate: 0.0,
            timeout_ms: 30_000,
            lost_rate: 0.0,
            pending_rate: 0.0,
            pending_ms: 2_000,
            duplicate_window_secs: 900,
            seed: 0,
        }
    }
}

/// A configuration with a rate outside `[0, 1]`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} must be a number between 0 and 1, got {value}")]
pub struct ConfigError {
    pub field: &'static str,
    pub value: f64,
}

impl SimConfig {
    fn rates(&self) -> [(&'static str, f64); 5] {
        [
            ("failureRate", self.failure_rate),
            ("unavailableRate", self.unavailable_rate),
            ("timeoutRate", self.timeout_rate),
            ("lostRate", self.lost_rate),
            ("pendingRate", self.pending_rate),
        ]
    }

    /// Checks that every rate is a probability.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self
            .rates()
            .into_iter()
            .find(|(_, v)| !(0.0..=1.0).contains(v))
        {
            Some((field, value)) => Err(ConfigError { field, value }),
            None => Ok(()),
        }
    }

    /// The same configuration with every rate clamped into `[0, 1]` (NaN becomes 0).
    pub fn sanitized(mut self) -> Self {
        for rate in [
            &mut self.failure_rate,
            &mut self.unavailable_rate,
            &mut self.timeout_rate,
            &mut self.lost_rate,
            &mut self.pending_rate,
        ] {
            *rate = if rate.is_nan() {
                0.0
            } else {
                rate.clamp(0.0, 1.0)
            };
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_has_no_faults_and_validates() {
        let c = SimConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.timeout_ms, 30_000);
        assert_eq!(c.pending_ms, 2_000);
        assert_eq!(c.duplicate_window_secs, 900);
    }

    #[test]
    fn bad_rates_are_rejected_or_clamped() {
        let c = SimConfig {
            lost_rate: 1.5,
            failure_rate: f64::NAN,
            ..SimConfig::default()
        };
        assert!(c.validate().is_err());
        let s = c.sanitized();
        assert_eq!(s.lost_rate, 1.0);
        assert_eq!(s.failure_rate, 0.0);
    }

    #[test]
    fn camel_case_and_partial() -> Result<(), serde_json::Error> {
        let c: SimConfig = serde_json::from_str(r#"{"failureRate":0.5,"timeoutMs":10}"#)?;
        assert_eq!(c.failure_rate, 0.5);
        assert_eq!(c.timeout_ms, 10);
        assert_eq!(c.pending_ms, 2_000);
        let json = serde_json::to_value(&c)?;
        assert!(json.get("duplicateWindowSecs").is_some());
        Ok(())
    }
}
