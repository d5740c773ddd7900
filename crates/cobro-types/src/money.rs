//! Money as integers. Floats exist only at the JSON edge, converted here and nowhere else.
//!
//! * [`MinorAmount`]: an amount of a fiat currency in minor units (centavos, cents). MXN and
//!   USD both have two decimals. On the wire it is a JSON number in major units (`10`, `99.5`),
//!   because that is what Chipi's SDKs send and read (`fixedAmount`, `currencyAmount`).
//! * [`UsdMicros`]: US dollars in millionths (USDC base units), for credits and the ledger.
//!
//! Conversions from JSON numbers accept at most the type's decimals: `10.005` is not a peso
//! amount and is refused rather than silently rounded.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Error from parsing or converting an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount must be a decimal number such as 12.50")]
    NotANumber,
    #[error("amount must not be negative")]
    Negative,
    #[error("amount has more than {0} decimal places")]
    TooPrecise(u32),
    #[error("amount is too large")]
    Overflow,
}

/// Parses a non-negative decimal string (`"12"`, `"12.5"`, `"0.000001"`) into an integer
/// count of `10^-decimals` units, exactly.
fn parse_decimal(s: &str, decimals: u32) -> Result<i64, AmountError> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err(AmountError::Negative);
    }
    let (int_part, frac_part) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty()) || !digits(int_part) || !digits(frac_part) {
        return Err(AmountError::NotANumber);
    }
    if s.ends_with('.') {
        return Err(AmountError::NotANumber);
    }
    if frac_part.len() > decimals as usize {
        return Err(AmountError::TooPrecise(decimals));
    }
    let scale = 10i64.pow(decimals);
    let int: i64 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| AmountError::Overflow)?
    };
    let mut frac: i64 = 0;
    for (i, b) in frac_part.bytes().enumerate() {
        frac += i64::from(b - b'0') * 10i64.pow(decimals - 1 - i as u32);
    }
    int.checked_mul(scale)
        .and_then(|v| v.checked_add(frac))
        .ok_or(AmountError::Overflow)
}

/// Converts a JSON float into units of `10^-decimals`, refusing values that need more decimals.
///
/// The float's shortest round-trip decimal text (what the sender wrote: `10.1`, `999.999`) is
/// parsed exactly, so `999.999` is refused as a peso amount instead of becoming `1000.00`.
fn from_f64(value: f64, decimals: u32) -> Result<i64, AmountError> {
    if !value.is_finite() {
        return Err(AmountError::NotANumber);
    }
    if value < 0.0 {
        return Err(AmountError::Negative);
    }
    let text = value.to_string();
    if text.contains(['e', 'E']) {
        // Only very large or very small magnitudes print in exponent form.
        return Err(if value >= 1.0 {
            AmountError::Overflow
        } else {
            AmountError::TooPrecise(decimals)
        });
    }
    parse_decimal(&text, decimals)
}

/// Formats units of `10^-decimals` as a plain decimal string with trailing zeros removed.
fn format_decimal(units: i64, decimals: u32) -> String {
    let scale = 10i64.pow(decimals);
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    let (int, frac) = (abs / scale as u64, abs % scale as u64);
    if frac == 0 {
        return format!("{sign}{int}");
    }
    let frac = format!("{frac:0width$}", width = decimals as usize);
    format!("{sign}{int}.{}", frac.trim_end_matches('0'))
}

/// Serialises units as a JSON number: an integer when whole, otherwise the shortest float.
fn serialize_number<S: Serializer>(units: i64, decimals: u32, s: S) -> Result<S::Ok, S::Error> {
    let scale = 10i64.pow(decimals);
    if units % scale == 0 {
        s.serialize_i64(units / scale)
    } else {
        // Every value with at most 6 decimals and |v| < 2^53 / 10^6 round-trips through f64
        // and prints in its shortest decimal form, which is the exact decimal.
        s.serialize_f64(units as f64 / scale as f64)
    }
}

/// Accepts a JSON number or a decimal string; negative values only when `signed`.
fn deserialize_number<'de, D: Deserializer<'de>>(
    d: D,
    decimals: u32,
    signed: bool,
) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Int(i64),
        Big(u64),
        Float(f64),
        Str(String),
    }
    let (negative, units) = match NumOrStr::deserialize(d)? {
        NumOrStr::Int(i) => (
            i < 0,
            i.unsigned_abs()
                .try_into()
                .ok()
                .and_then(|i: i64| i.checked_mul(10i64.pow(decimals)))
                .ok_or(AmountError::Overflow),
        ),
        NumOrStr::Big(i) => (
            false,
            i64::try_from(i)
                .ok()
                .and_then(|i| i.checked_mul(10i64.pow(decimals)))
                .ok_or(AmountError::Overflow),
        ),
        NumOrStr::Float(f) => (f < 0.0, from_f64(f.abs(), decimals)),
        NumOrStr::Str(s) => match s.trim().strip_prefix('-') {
            Some(rest) => (true, parse_decimal(rest, decimals)),
            None => (false, parse_decimal(&s, decimals)),
        },
    };
    if negative && !signed {
        return Err(serde::de::Error::custom(AmountError::Negative));
    }
    let units = units.map_err(serde::de::Error::custom)?;
    Ok(if negative { -units } else { units })
}

/// A fiat amount in minor units (two decimals: centavos for MXN, cents for USD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MinorAmount(pub i64);

impl MinorAmount {
    pub const DECIMALS: u32 = 2;

    /// From a JSON float in major units; refuses more than two decimals.
    pub fn from_major_f64(value: f64) -> Result<Self, AmountError> {
        from_f64(value, Self::DECIMALS).map(MinorAmount)
    }

    /// Parses a decimal string in major units (`"200"`, `"99.50"`).
    pub fn parse_major(s: &str) -> Result<Self, AmountError> {
        parse_decimal(s, Self::DECIMALS).map(MinorAmount)
    }

    /// The amount in major units as a plain decimal (`"10"`, `"99.5"`).
    pub fn to_major_string(self) -> String {
        format_decimal(self.0, Self::DECIMALS)
    }
}

impl Serialize for MinorAmount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_number(self.0, Self::DECIMALS, s)
    }
}

impl<'de> Deserialize<'de> for MinorAmount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_number(d, Self::DECIMALS, false).map(MinorAmount)
    }
}

/// US dollars in micro-dollars (10^-6), the unit of credits, the ledger and USDC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UsdMicros(pub i64);

impl UsdMicros {
    pub const DECIMALS: u32 = 6;

    /// Parses a decimal string of dollars (`"1000"`, `"0.000001"`), exactly.
    pub fn parse_usd(s: &str) -> Result<Self, AmountError> {
        parse_decimal(s, Self::DECIMALS).map(UsdMicros)
    }

    /// Dollars as a plain decimal string (`"1000"`, `"11.76"`).
    pub fn to_usd_string(self) -> String {
        format_decimal(self.0, Self::DECIMALS)
    }

    /// Dollars as a float, for JSON fields that are numbers.
    pub fn to_usd_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

impl Serialize for UsdMicros {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_number(self.0, Self::DECIMALS, s)
    }
}

impl<'de> Deserialize<'de> for UsdMicros {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Ledger amounts are signed (debits are negative).
        deserialize_number(d, Self::DECIMALS, true).map(UsdMicros)
    }
}

macro_rules! number_schema {
    ($t:ty) => {
        impl utoipa::PartialSchema for $t {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::Number)
                    .into()
            }
        }
        impl utoipa::ToSchema for $t {}
    };
}
number_schema!(MinorAmount);
number_schema!(UsdMicros);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_parse_exactly() {
        assert_eq!(UsdMicros::parse_usd("1000"), Ok(UsdMicros(1_000_000_000)));
        assert_eq!(UsdMicros::parse_usd("0.000001"), Ok(UsdMicros(1)));
        assert_eq!(UsdMicros::parse_usd(".5"), Ok(UsdMicros(500_000)));
        assert_eq!(
            UsdMicros::parse_usd("0.0000001"),
            Err(AmountError::TooPrecise(6))
        );
        assert_eq!(UsdMicros::parse_usd("-1"), Err(AmountError::Negative));
        assert_eq!(UsdMicros::parse_usd("1e3"), Err(AmountError::NotANumber));
        assert_eq!(UsdMicros::parse_usd("1."), Err(AmountError::NotANumber));
        assert_eq!(UsdMicros::parse_usd(""), Err(AmountError::NotANumber));
        assert_eq!(
            UsdMicros::parse_usd("99999999999999999999"),
            Err(AmountError::Overflow)
        );
        assert_eq!(MinorAmount::parse_major("99.5"), Ok(MinorAmount(9950)));
    }

    #[test]
    fn floats_convert_when_they_have_at_most_the_allowed_decimals() {
        assert_eq!(MinorAmount::from_major_f64(10.1), Ok(MinorAmount(1010)));
        assert_eq!(MinorAmount::from_major_f64(0.29), Ok(MinorAmount(29)));
        assert_eq!(
            MinorAmount::from_major_f64(10.105),
            Err(AmountError::TooPrecise(2))
        );
        assert_eq!(
            MinorAmount::from_major_f64(-1.0),
            Err(AmountError::Negative)
        );
        assert_eq!(
            MinorAmount::from_major_f64(f64::NAN),
            Err(AmountError::NotANumber)
        );
    }

    #[test]
    fn json_numbers_are_integers_when_whole() {
        assert_eq!(
            serde_json::to_string(&MinorAmount(1000)).ok().as_deref(),
            Some("10")
        );
        assert_eq!(
            serde_json::to_string(&MinorAmount(9950)).ok().as_deref(),
            Some("99.5")
        );
        assert_eq!(
            serde_json::to_string(&UsdMicros(11_760_000))
                .ok()
                .as_deref(),
            Some("11.76")
        );
        assert_eq!(UsdMicros(11_760_000).to_usd_string(), "11.76");
        assert_eq!(UsdMicros(-5).to_usd_string(), "-0.000005");
        let back: MinorAmount = serde_json::from_str("99.5").unwrap_or_default();
        assert_eq!(back, MinorAmount(9950));
        let back: UsdMicros = serde_json::from_str("\"12.000001\"").unwrap_or_default();
        assert_eq!(back, UsdMicros(12_000_001));
        for (json, micros) in [
            ("-0.588", -588_000),
            ("-3", -3_000_000),
            ("\"-1.5\"", -1_500_000),
        ] {
            let v: Result<UsdMicros, _> = serde_json::from_str(json);
            assert_eq!(v.ok(), Some(UsdMicros(micros)), "{json}");
            assert_eq!(
                serde_json::to_string(&UsdMicros(micros))
                    .ok()
                    .and_then(|t| serde_json::from_str::<UsdMicros>(&t).ok()),
                Some(UsdMicros(micros))
            );
        }
        assert!(
            serde_json::from_str::<MinorAmount>("-10").is_err(),
            "fiat amounts are never negative"
        );
    }
}
