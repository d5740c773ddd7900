//! Pricing: what a purchase costs the organisation in USD credits.
//!
//! `total = base + markup`, where
//! * `base` is the SKU amount converted to USD at the current rate:
//!   `amount_minor × usd_per_unit × 10^4` micro-dollars (two-decimal currencies), and
//! * `markup` is the organisation's markup for the SKU (or its category):
//!   `base × percent / 100 + fixed`.
//!
//! **Rounding happens here and nowhere else**: each product is rounded once, half-up (half away
//! from zero; every amount is positive), to the micro-dollar, the unit of USDC and of the ledger.
//! Rates are exact decimals (`rust_decimal`), never floats, and the rate used is returned so it
//! can be stored on the purchase.

use rust_decimal::{Decimal, RoundingStrategy, prelude::ToPrimitive};

use cobro_types::{Currency, MinorAmount, UsdMicros};

/// Why a price could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("no exchange rate for {0}")]
    NoRate(&'static str),
    #[error("the amount is too large to price")]
    Overflow,
    #[error("the amount must be greater than zero")]
    NotPositive,
}

/// Where exchange rates come from: USD per one unit of a currency.
pub trait RateSource: Send + Sync + std::fmt::Debug {
    fn usd_per_unit(&self, currency: Currency) -> Option<Decimal>;
}

/// A fixed table of rates (the default source, from configuration). USD is always 1.
#[derive(Debug, Clone)]
pub struct FixedRates {
    mxn: Decimal,
}

impl FixedRates {
    /// `mxn_usd`: USD per peso, e.g. `0.0588`. Must be positive.
    pub fn new(mxn_usd: Decimal) -> Result<FixedRates, PricingError> {
        if mxn_usd <= Decimal::ZERO {
            return Err(PricingError::NotPositive);
        }
        Ok(FixedRates { mxn: mxn_usd })
    }
}

impl RateSource for FixedRates {
    fn usd_per_unit(&self, currency: Currency) -> Option<Decimal> {
        match currency {
            Currency::Usd => Some(Decimal::ONE),
            Currency::Mxn => Some(self.mxn),
        }
    }
}

/// An organisation's markup for a SKU or category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Markup {
    /// Percentage of the base amount, e.g. `2.5` for 2.5 %.
    pub percent: Decimal,
    /// A fixed amount added per purchase.
    pub fixed: UsdMicros,
}

/// The price of one purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub currency: Currency,
    pub amount: MinorAmount,
    /// USD per unit of `currency` used for `base`.
    pub fx_rate: Decimal,
    pub base: UsdMicros,
    pub markup: UsdMicros,
    /// `base + markup`: what is debited.
    pub total: UsdMicros,
}

fn round_micros(value: Decimal) -> Result<UsdMicros, PricingError> {
    value
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .map(UsdMicros)
        .ok_or(PricingError::Overflow)
}

/// Converts a two-decimal amount to micro-dollars at `usd_per_unit`, rounding half-up once.
pub fn to_usd_micros(
    amount: MinorAmount,
    usd_per_unit: Decimal,
) -> Result<UsdMicros, PricingError> {
    let value = Decimal::from(amount.0)
        .checked_mul(usd_per_unit)
        .and_then(|v| v.checked_mul(Decimal::from(10_000)))
        .ok_or(PricingError::Overflow)?;
    round_micros(value)
}

/// The markup on `base`, rounding the percentage part half-up once.
pub fn markup_micros(base: UsdMicros, markup: &Markup) -> Result<UsdMicros, PricingError> {
    let pct = Decimal::from(base.0)
        .checked_mul(markup.percent)
        .map(|v| v / Decimal::ONE_HUNDRED)
        .ok_or(PricingError::Overflow)?;
    let pct = round_micros(pct)?;
    pct.0
        .checked_add(markup.fixed.0)
        .map(UsdMicros)
        .ok_or(PricingError::Overflow)
}

/// Prices `amount` of `currency` with `rates` and `markup`.
pub fn quote(
    amount: MinorAmount,
    currency: Currency,
    rates: &dyn RateSource,
    markup: &Markup,
) -> Result<Quote, PricingError> {
    if amount.0 <= 0 {
        return Err(PricingError::NotPositive);
    }
    let fx_rate = rates
        .usd_per_unit(currency)
        .ok_or(PricingError::NoRate(currency.as_str()))?;
    let base = to_usd_micros(amount, fx_rate)?;
    let markup = markup_micros(base, markup)?;
    let total = base
        .0
        .checked_add(markup.0)
        .map(UsdMicros)
        .ok_or(PricingError::Overflow)?;
    Ok(Quote {
        currency,
        amount,
        fx_rate,
        base,
        markup,
        total,
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use proptest::prelude::*;

    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap_or_default()
    }

    #[test]
    fn the_guides_example_converts_exactly() {
        let rates = FixedRates::new(dec("0.0588")).expect("positive");
        let q = quote(
            MinorAmount(20_000),
            Currency::Mxn,
            &rates,
            &Markup::default(),
        )
        .expect("quote");
        assert_eq!(q.base, UsdMicros(11_760_000)); // 200 MXN -> 11.76 USD
        assert_eq!(q.total, q.base);
        let q = quote(
            MinorAmount(1_000),
            Currency::Usd,
            &rates,
            &Markup::default(),
        )
        .expect("quote");
        assert_eq!(q.total, UsdMicros(10_000_000), "USD in, USD out");
    }

    #[test]
    fn halves_round_up_once() {
        // 1 centavo at 0.00005 USD/MXN = 0.5 micro -> 1 micro
        assert_eq!(
            to_usd_micros(MinorAmount(1), dec("0.00005")),
            Ok(UsdMicros(1))
        );
        // 0.49999 micro -> 0
        assert_eq!(
            to_usd_micros(MinorAmount(1), dec("0.000049999")),
            Ok(UsdMicros(0))
        );
        // 2.5 % of 1.000001 USD = 25000.025 micros -> 25000, plus 0.10 fixed
        let m = Markup {
            percent: dec("2.5"),
            fixed: UsdMicros(100_000),
        };
        assert_eq!(
            markup_micros(UsdMicros(1_000_001), &m),
            Ok(UsdMicros(125_000))
        );
        // 3 % of 0.500000 USD = 15000 exactly; of 16.666683 USD = 500000.49 -> 500000
        let m = Markup {
            percent: dec("3"),
            fixed: UsdMicros(0),
        };
        assert_eq!(markup_micros(UsdMicros(500_000), &m), Ok(UsdMicros(15_000)));
        assert_eq!(
            markup_micros(UsdMicros(16_666_683), &m),
            Ok(UsdMicros(500_000))
        );
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let rates = FixedRates::new(dec("0.0588")).expect("positive");
        assert_eq!(
            quote(MinorAmount(0), Currency::Mxn, &rates, &Markup::default()),
            Err(PricingError::NotPositive)
        );
        assert!(FixedRates::new(Decimal::ZERO).is_err());
        assert_eq!(
            to_usd_micros(MinorAmount(i64::MAX), dec("79228162514264337593543950335")),
            Err(PricingError::Overflow)
        );
        let huge = Markup {
            percent: dec("1000000000000000000"),
            fixed: UsdMicros(0),
        };
        assert_eq!(
            markup_micros(UsdMicros(i64::MAX), &huge),
            Err(PricingError::Overflow)
        );
    }

    proptest! {
        #[test]
        fn conversion_is_within_half_a_micro_of_the_exact_value(cents in 1i64..10_000_000_000, rate_e8 in 1i64..1_000_000_000) {
            let rate = Decimal::new(rate_e8, 8);
            let got = to_usd_micros(MinorAmount(cents), rate).expect("in range");
            let exact = Decimal::from(cents) * rate * Decimal::from(10_000);
            prop_assert!((Decimal::from(got.0) - exact).abs() <= dec("0.5"));
        }

        #[test]
        fn conversion_is_monotonic(a in 1i64..1_000_000_000, b in 1i64..1_000_000_000, rate_e8 in 1i64..1_000_000_000) {
            let rate = Decimal::new(rate_e8, 8);
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(to_usd_micros(MinorAmount(lo), rate).expect("lo") <= to_usd_micros(MinorAmount(hi), rate).expect("hi"));
        }

        #[test]
        fn the_total_is_base_plus_markup_and_markup_is_at_least_the_fixed_part(
            cents in 1i64..1_000_000_000, pct_e2 in 0i64..10_000, fixed in 0i64..10_000_000,
        ) {
            let rates = FixedRates::new(dec("0.0588")).expect("positive");
            let m = Markup { percent: Decimal::new(pct_e2, 2), fixed: UsdMicros(fixed) };
            let q = quote(MinorAmount(cents), Currency::Mxn, &rates, &m).expect("quote");
            prop_assert_eq!(q.total.0, q.base.0 + q.markup.0);
            prop_assert!(q.markup.0 >= fixed);
            if pct_e2 == 0 { prop_assert_eq!(q.markup.0, fixed); }
        }

        #[test]
        fn usd_amounts_convert_without_rounding(cents in 1i64..1_000_000_000_000) {
            prop_assert_eq!(to_usd_micros(MinorAmount(cents), Decimal::ONE), Ok(UsdMicros(cents * 10_000)));
        }
    }
}
