//! Faults that can be planned for an account, and their string form.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One injected behaviour for one request.
///
/// String forms: `fail:CODE` (`fail` alone means `fail:INVALID_NUMBER`), `unavailable`,
/// `timeout`, `lost`, `latency:MS`, `pending:MS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A definitive refusal (`422 failed`) with this code.
    Fail(String),
    /// A `503`: nothing processed.
    Unavailable,
    /// Processed, then answered only after the configured `timeout_ms`.
    Timeout,
    /// Processed, then the answer is cut after its headers (unreadable).
    Lost,
    /// Answered normally, after this many milliseconds (instead of the configured latency).
    Latency(u64),
    /// Answered `202 pending`; succeeds once asked after this many milliseconds.
    Pending(u64),
}

/// A string that is not a [`Fault`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown fault {0:?}: expected fail:CODE, unavailable, timeout, lost, latency:MS or pending:MS"
)]
pub struct ParseFaultError(pub String);

impl FromStr for Fault {
    type Err = ParseFaultError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseFaultError(s.to_owned());
        let s = s.trim();
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k.trim(), Some(a.trim())),
            None => (s, None),
        };
        let ms = |a: Option<&str>| a.and_then(|a| a.parse::<u64>().ok()).ok_or_else(err);
        match (kind.to_ascii_lowercase().as_str(), arg) {
            ("fail", None) => Ok(Fault::Fail("INVALID_NUMBER".to_owned())),
            ("fail", Some(code))
                if !code.is_empty()
                    && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                Ok(Fault::Fail(code.to_ascii_uppercase()))
            }
            ("unavailable", None) => Ok(Fault::Unavailable),
            ("timeout", None) => Ok(Fault::Timeout),
            ("lost", None) => Ok(Fault::Lost),
            ("latency", a) => ms(a).map(Fault::Latency),
            ("pending", a) => ms(a).map(Fault::Pending),
            _ => Err(err()),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Fail(code) => write!(f, "fail:{code}"),
            Fault::Unavailable => f.write_str("unavailable"),
            Fault::Timeout => f.write_str("timeout"),
            Fault::Lost => f.write_str("lost"),
            Fault::Latency(ms) => write!(f, "latency:{ms}"),
            Fault::Pending(ms) => write!(f, "pending:{ms}"),
        }
    }
}

impl Serialize for Fault {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fault {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let cases = [
            ("fail:INVALID_NUMBER", Fault::Fail("INVALID_NUMBER".into())),
            (
                "fail:carrier_unavailable",
                Fault::Fail("CARRIER_UNAVAILABLE".into()),
            ),
            ("fail", Fault::Fail("INVALID_NUMBER".into())),
            ("unavailable", Fault::Unavailable),
            ("timeout", Fault::Timeout),
            ("lost", Fault::Lost),
            ("latency:500", Fault::Latency(500)),
            ("pending:2000", Fault::Pending(2000)),
            (" Timeout ", Fault::Timeout),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<Fault>(), Ok(want), "{s}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "boom",
            "latency",
            "latency:x",
            "pending:-1",
            "fail:",
            "fail:a b",
            "lost:3",
        ] {
            assert!(s.parse::<Fault>().is_err(), "{s}");
        }
    }

    #[test]
    fn display_round_trips() {
        for f in [
            Fault::Fail("DUPLICATE_RECHARGE".into()),
            Fault::Unavailable,
            Fault::Timeout,
            Fault::Lost,
            Fault::Latency(5),
            Fault::Pending(7),
        ] {
            assert_eq!(f.to_string().parse::<Fault>(), Ok(f));
        }
    }
}
