//! The catalog: validation of catalog records, and the in-memory index the API reads from.
//!
//! The server keeps one immutable [`Catalog`] snapshot behind an `Arc` and swaps it when the
//! stored catalog changes, so a list request is a scan of a few hundred records in memory and
//! never touches the database.
//!
//! List semantics (also in the API docs):
//! * only active SKUs are listed or returned by id;
//! * order: carrier name (case-insensitive), then category, then fixed amount (variable-amount
//!   SKUs last), then id, so pages are stable;
//! * `provider` and `category` are enums (unknown values are 400, `TELEFONICA` means
//!   `TELEFONIA`); `chipiCategory` is an admin-curated code compared case-insensitively;
//!   `carrierName` is a case-insensitive substring;
//! * `limit` is 1..=100 (default 10); `page` is 1-based (default 1); `offset`, when given,
//!   wins over `page` and the reported page is the one that contains that offset.

use std::{cmp::Ordering, collections::HashMap, sync::Arc};

use cobro_types::{CatalogEntry, MinorAmount, Paginated, Provider, Sku, SkuCategory, Timestamp};

use crate::ParamError;

/// Largest page size.
pub const MAX_LIMIT: u64 = 100;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: u64 = 10;
/// Largest accepted `page` and `offset` (far beyond any catalog; keeps the arithmetic exact).
pub const MAX_POSITION: u64 = 1_000_000_000;

/// The languages the catalog has texts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locale {
    #[default]
    En,
    Es,
}

impl Locale {
    /// Parses `en`, `es`, and regional forms such as `es-MX` or `en_US` (case-insensitive).
    pub fn parse(s: &str) -> Option<Locale> {
        let lang = s
            .split(['-', '_'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match lang.as_str() {
            "en" => Some(Locale::En),
            "es" => Some(Locale::Es),
            _ => None,
        }
    }

    /// The key of this language in a record's `translations` (None for the base language).
    fn translation_key(self) -> Option<&'static str> {
        match self {
            Locale::En => None,
            Locale::Es => Some("es"),
        }
    }
}

/// A validated `GET /v1/skus` query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CatalogQuery {
    pub page: Option<u64>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    pub provider: Option<Provider>,
    pub category: Option<SkuCategory>,
    pub chipi_category: Option<String>,
    pub carrier_name: Option<String>,
    pub locale: Locale,
}

fn parse_u64(param: &str, value: &str) -> Result<u64, ParamError> {
    let n = value.parse::<u64>().map_err(|_| {
        ParamError::new(
            param,
            format!("must be a non-negative integer, got {value:?}"),
        )
    })?;
    if n > MAX_POSITION {
        return Err(ParamError::new(
            param,
            format!("must be at most {MAX_POSITION}"),
        ));
    }
    Ok(n)
}

/// Parses `page` (1..=MAX_POSITION).
pub fn parse_page(value: &str) -> Result<u64, ParamError> {
    let page = parse_u64("page", value)?;
    if page == 0 {
        return Err(ParamError::new("page", "pages are numbered from 1"));
    }
    Ok(page)
}

/// Parses `limit` (1..=MAX_LIMIT).
pub fn parse_limit(value: &str) -> Result<u64, ParamError> {
    let limit = parse_u64("limit", value)?;
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ParamError::new(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}, got {limit}"),
        ));
    }
    Ok(limit)
}

/// Parses `offset` (0..=MAX_POSITION).
pub fn parse_offset(value: &str) -> Result<u64, ParamError> {
    parse_u64("offset", value)
}

/// The `(offset, limit, page)` a query asks for: `offset` wins over `page`.
pub fn window(page: Option<u64>, limit: Option<u64>, offset: Option<u64>) -> (u64, u64, u64) {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    let offset = offset.unwrap_or_else(|| (page.unwrap_or(1) - 1).saturating_mul(limit));
    (offset, limit, offset / limit + 1)
}

fn one_of(values: &[&str]) -> String {
    format!("must be one of {}", values.join(", "))
}

impl CatalogQuery {
    /// Builds a query from decoded query-string pairs. Unknown parameters are ignored (the
    /// SDKs add `__chipi_api_version`); a known parameter given twice, or with a bad value, is
    /// an error naming it. Empty values count as absent, as query builders often send them.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<CatalogQuery, ParamError> {
        let mut q = CatalogQuery::default();
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in pairs {
            const KNOWN: [&str; 8] = [
                "page",
                "limit",
                "offset",
                "provider",
                "category",
                "chipiCategory",
                "carrierName",
                "locale",
            ];
            let Some(key) = KNOWN.iter().copied().find(|k| *k == key) else {
                continue;
            };
            if seen.contains(&key) {
                return Err(ParamError::new(key, "must not be given more than once"));
            }
            seen.push(key);
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match key {
                "page" => q.page = Some(parse_page(value)?),
                "limit" => q.limit = Some(parse_limit(value)?),
                "offset" => q.offset = Some(parse_offset(value)?),
                "provider" => {
                    q.provider = Some(Provider::parse(value).ok_or_else(|| {
                        ParamError::new(
                            key,
                            one_of(&[Provider::Tet.as_str(), Provider::Chipi.as_str()]),
                        )
                    })?);
                }
                "category" => {
                    q.category = Some(SkuCategory::parse(value).ok_or_else(|| {
                        let names: Vec<&str> =
                            SkuCategory::ALL.iter().map(|c| c.as_str()).collect();
                        ParamError::new(key, one_of(&names))
                    })?);
                }
                "chipiCategory" => {
                    let ok = value.len() <= 64
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    if !ok {
                        return Err(ParamError::new(
                            key,
                            "must be a taxonomy code such as RECARGAS, GIFT_CARDS, GENERAL, TELEFONIA",
                        ));
                    }
                    q.chipi_category = Some(value.to_ascii_uppercase());
                }
                "carrierName" => {
                    if value.chars().count() > 100 {
                        return Err(ParamError::new(key, "must be at most 100 characters"));
                    }
                    q.carrier_name = Some(value.to_lowercase());
                }
                "locale" => {
                    q.locale = Locale::parse(value)
                        .ok_or_else(|| ParamError::new(key, one_of(&["en", "es"])))?;
                }
                _ => {}
            }
        }
        Ok(q)
    }

    fn matches(&self, item: &Indexed) -> bool {
        let e = &item.entry;
        self.provider.is_none_or(|p| e.provider == p)
            && self.category.is_none_or(|c| e.category == c)
            && self
                .chipi_category
                .as_deref()
                .is_none_or(|c| item.chipi_category_upper == c)
            && self
                .carrier_name
                .as_deref()
                .is_none_or(|n| item.carrier_lower.contains(n))
    }
}

/// A catalog record that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SKU {id}: {field}: {message}")]
pub struct EntryError {
    pub id: String,
    pub field: &'static str,
    pub message: String,
}

/// Checks one catalog record: id shape, regexes that compile (and stay small), amounts that
/// make sense, known translation languages, non-empty texts.
pub fn validate_entry(e: &CatalogEntry) -> Result<(), EntryError> {
    let err = |field: &'static str, message: &str| EntryError {
        id: e.id.clone(),
        field,
        message: message.to_string(),
    };
    let id_ok = !e.id.is_empty()
        && e.id.len() <= 64
        && e.id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !id_ok {
        return Err(err(
            "id",
            "must be 1-64 characters of letters, digits, '-' and '_'",
        ));
    }
    for (field, text) in [
        ("providerId", &e.provider_id),
        ("name", &e.name),
        ("referenceLabel", &e.reference_label),
        ("amountLabel", &e.amount_label),
        ("chipiCategory", &e.chipi_category),
        ("carrierName", &e.carrier_name),
    ] {
        if text.trim().is_empty() || text.len() > 200 {
            return Err(err(field, "must be 1-200 characters"));
        }
    }
    for (field, pattern) in [
        ("referenceRegexValidation", &e.reference_regex_validation),
        ("amountRegexValidation", &e.amount_regex_validation),
    ] {
        if !(pattern.starts_with('^') && pattern.ends_with('$')) {
            return Err(err(field, "must be anchored with ^ and $"));
        }
        compile_regex(pattern).map_err(|m| err(field, &m))?;
    }
    match (e.fixed_amount, e.min_amount, e.max_amount) {
        (Some(f), None, None) if f.0 > 0 => {}
        (Some(_), None, None) => return Err(err("fixedAmount", "must be greater than 0")),
        (Some(_), _, _) => {
            return Err(err(
                "fixedAmount",
                "a fixed-amount SKU takes no minAmount or maxAmount",
            ));
        }
        (None, Some(min), Some(max)) if min.0 > 0 && min <= max => {}
        (None, _, _) => {
            return Err(err(
                "minAmount",
                "a variable-amount SKU needs 0 < minAmount <= maxAmount",
            ));
        }
    }
    for lang in e.translations.keys() {
        if Locale::parse(lang).and_then(Locale::translation_key) != Some(lang.as_str()) {
            return Err(err("translations", "only the language \"es\" is supported"));
        }
    }
    Ok(())
}

/// Compiles a catalog regex with a size limit, so an imported catalog cannot make the
/// server build a huge automaton.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("is not a valid regex: {e}"))
}

#[derive(Debug)]
struct Indexed {
    entry: CatalogEntry,
    carrier_lower: String,
    chipi_category_upper: String,
    /// `^(?:referenceRegexValidation)$`, so a pattern like `^a|b$` still needs a full match.
    reference: Option<regex::Regex>,
    /// `^(?:amountRegexValidation)$`.
    amount: Option<regex::Regex>,
}

/// Compiles a catalog pattern so that it must match the whole input.
fn full_match(pattern: &str) -> Option<regex::Regex> {
    compile_regex(&format!("^(?:{pattern})$")).ok()
}

/// An immutable, sorted snapshot of the active catalog.
#[derive(Debug, Default)]
pub struct Catalog {
    items: Vec<Indexed>,
    by_id: HashMap<String, usize>,
}

fn order(a: &CatalogEntry, b: &CatalogEntry) -> Ordering {
    let amount = |e: &CatalogEntry| e.fixed_amount.map_or(i64::MAX, |MinorAmount(m)| m);
    a.carrier_name
        .to_lowercase()
        .cmp(&b.carrier_name.to_lowercase())
        .then(a.category.cmp(&b.category))
        .then(amount(a).cmp(&amount(b)))
        .then(a.id.cmp(&b.id))
}

impl Catalog {
    /// Builds the snapshot from stored records; inactive ones are left out.
    pub fn new(entries: impl IntoIterator<Item = CatalogEntry>) -> Arc<Catalog> {
        let mut active: Vec<CatalogEntry> = entries.into_iter().filter(|e| e.active).collect();
        active.sort_by(order);
        let items: Vec<Indexed> = active
            .into_iter()
            .map(|entry| Indexed {
                carrier_lower: entry.carrier_name.to_lowercase(),
                chipi_category_upper: entry.chipi_category.to_ascii_uppercase(),
                reference: full_match(&entry.reference_regex_validation),
                amount: full_match(&entry.amount_regex_validation),
                entry,
            })
            .collect();
        let by_id = items
            .iter()
            .enumerate()
            .map(|(i, x)| (x.entry.id.clone(), i))
            .collect();
        Arc::new(Catalog { items, by_id })
    }

    /// Number of active SKUs.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The stored record of an active SKU.
    pub fn entry(&self, id: &str) -> Option<&CatalogEntry> {
        self.by_id.get(id).map(|&i| &self.items[i].entry)
    }

    /// Whether `reference` fully matches the SKU's reference pattern (`None`: no such SKU).
    /// A pattern that does not compile matches nothing.
    pub fn reference_matches(&self, id: &str, reference: &str) -> Option<bool> {
        let item = &self.items[*self.by_id.get(id)?];
        Some(
            item.reference
                .as_ref()
                .is_some_and(|r| r.is_match(reference)),
        )
    }

    /// Whether `amount` (as written) fully matches the SKU's amount pattern.
    pub fn amount_matches(&self, id: &str, amount: &str) -> Option<bool> {
        let item = &self.items[*self.by_id.get(id)?];
        Some(item.amount.as_ref().is_some_and(|r| r.is_match(amount)))
    }

    /// One active SKU in the given language.
    pub fn get(&self, id: &str, locale: Locale) -> Option<Sku> {
        self.entry(id).map(|e| to_sku(e, locale))
    }

    /// Every active SKU, in catalog order, in the given language.
    pub fn all(&self, locale: Locale) -> Vec<Sku> {
        self.items
            .iter()
            .map(|i| to_sku(&i.entry, locale))
            .collect()
    }

    /// One page of the SKUs matching `q`.
    pub fn list(&self, q: &CatalogQuery) -> Paginated<Sku> {
        let (offset, limit, page) = window(q.page, q.limit, q.offset);
        let mut total: u64 = 0;
        let mut data = Vec::new();
        for item in self.items.iter().filter(|i| q.matches(i)) {
            if total >= offset && (data.len() as u64) < limit {
                data.push(to_sku(&item.entry, q.locale));
            }
            total += 1;
        }
        Paginated {
            data,
            total,
            page,
            limit,
            total_pages: total.div_ceil(limit),
        }
    }
}

/// The API view of a record in a language, falling back to the base (English) texts.
pub fn to_sku(e: &CatalogEntry, locale: Locale) -> Sku {
    let texts = locale.translation_key().and_then(|k| e.translations.get(k));
    let pick = |t: Option<&String>, base: &String| t.unwrap_or(base).clone();
    let epoch = Timestamp::from_unix_millis(0);
    Sku {
        id: e.id.clone(),
        provider_id: e.provider_id.clone(),
        name: pick(texts.and_then(|t| t.name.as_ref()), &e.name),
        description: texts
            .and_then(|t| t.description.clone())
            .or_else(|| e.description.clone()),
        category: e.category,
        reference_regex_validation: e.reference_regex_validation.clone(),
        reference_label: pick(
            texts.and_then(|t| t.reference_label.as_ref()),
            &e.reference_label,
        ),
        amount_regex_validation: e.amount_regex_validation.clone(),
        amount_label: pick(texts.and_then(|t| t.amount_label.as_ref()), &e.amount_label),
        fixed_amount: e.fixed_amount,
        min_amount: e.min_amount,
        max_amount: e.max_amount,
        currency: e.currency,
        can_check_sku_reference: e.can_check_sku_reference,
        logo_url: e.logo_url.clone(),
        provider: e.provider,
        chipi_category: e.chipi_category.clone(),
        carrier_name: e.carrier_name.clone(),
        created_at: e.created_at.unwrap_or(epoch),
        updated_at: e.updated_at.unwrap_or(epoch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cobro_types::{Currency, SkuTexts};

    fn entry(id: &str, carrier: &str, category: SkuCategory, amount: Option<i64>) -> CatalogEntry {
        CatalogEntry {
            id: id.into(),
            provider_id: carrier.to_lowercase(),
            name: format!("{carrier} {id}"),
            description: None,
            category,
            reference_regex_validation: "^[0-9]{10}$".into(),
            reference_label: "Phone number".into(),
            amount_regex_validation: "^[0-9]+(\\.[0-9]{1,2})?$".into(),
            amount_label: "Amount (MXN)".into(),
            fixed_amount: amount.map(MinorAmount),
            min_amount: if amount.is_none() {
                Some(MinorAmount(1000))
            } else {
                None
            },
            max_amount: if amount.is_none() {
                Some(MinorAmount(100_000))
            } else {
                None
            },
            currency: Currency::Mxn,
            can_check_sku_reference: false,
            logo_url: None,
            provider: Provider::Tet,
            chipi_category: "RECARGAS".into(),
            carrier_name: carrier.into(),
            active: true,
            translations: Default::default(),
            created_at: None,
            updated_at: None,
        }
    }

    fn query(pairs: &[(&str, &str)]) -> Result<CatalogQuery, ParamError> {
        CatalogQuery::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn pages_walk_the_sorted_catalog_and_end_empty() -> Result<(), ParamError> {
        let entries = (1..=25).map(|i| {
            entry(
                &format!("s{i:02}"),
                "Telcel",
                SkuCategory::Telefonia,
                Some(i * 100),
            )
        });
        let cat = Catalog::new(entries);
        let p1 = cat.list(&query(&[("limit", "10")])?);
        assert_eq!(
            (p1.total, p1.page, p1.limit, p1.total_pages, p1.data.len()),
            (25, 1, 10, 3, 10)
        );
        assert_eq!(p1.data[0].id, "s01");
        let p3 = cat.list(&query(&[("limit", "10"), ("page", "3")])?);
        assert_eq!(p3.data.len(), 5);
        let past = cat.list(&query(&[("limit", "10"), ("page", "9")])?);
        assert_eq!((past.data.len(), past.total, past.page), (0, 25, 9));
        let off = cat.list(&query(&[("limit", "10"), ("offset", "12"), ("page", "1")])?);
        assert_eq!((off.data[0].id.as_str(), off.page), ("s13", 2));
        Ok(())
    }

    #[test]
    fn bad_pagination_values_name_their_parameter() {
        for (k, v) in [
            ("limit", "0"),
            ("limit", "101"),
            ("limit", "ten"),
            ("page", "0"),
            ("page", "-1"),
            ("offset", "1.5"),
        ] {
            assert_eq!(
                query(&[(k, v)]).map_err(|e| e.param),
                Err(k.to_string()),
                "{k}={v}"
            );
        }
        assert!(query(&[("limit", "100"), ("limit", "1")]).is_err());
        for (k, v) in [
            ("offset", "18446744073709551615"),
            ("page", "18446744073709551615"),
            ("page", "1000000001"),
        ] {
            assert_eq!(
                query(&[(k, v)]).map_err(|e| e.param),
                Err(k.to_string()),
                "{k}={v}"
            );
        }
        let far = Catalog::new([])
            .list(&query(&[("page", "1000000000"), ("limit", "100")]).expect("in range"));
        assert_eq!((far.page, far.data.len()), (1_000_000_000, 0));
        assert!(
            query(&[
                ("__chipi_api_version", "2025-12-30"),
                ("whatever", "x"),
                ("page", "")
            ])
            .is_ok()
        );
    }

    #[test]
    fn filters_select_what_they_say() -> Result<(), ParamError> {
        let mut gift = entry("g1", "Netflix", SkuCategory::Streaming, Some(15000));
        gift.chipi_category = "GIFT_CARDS".into();
        gift.provider = Provider::Chipi;
        let mut off = entry("t3", "Telcel", SkuCategory::Telefonia, Some(300));
        off.active = false;
        let cat = Catalog::new([
            entry("t1", "Telcel", SkuCategory::Telefonia, Some(100)),
            entry("a1", "AT&T", SkuCategory::Recargas, Some(100)),
            entry("c1", "CFE", SkuCategory::Luz, None),
            gift,
            off,
        ]);
        let ids = |pairs: &[(&str, &str)]| -> Result<Vec<String>, ParamError> {
            Ok(cat
                .list(&query(pairs)?)
                .data
                .into_iter()
                .map(|s| s.id)
                .collect())
        };
        assert_eq!(ids(&[])?, ["a1", "c1", "g1", "t1"]);
        assert_eq!(ids(&[("carrierName", "tElC")])?, ["t1"]);
        assert_eq!(ids(&[("category", "TELEFONICA")])?, ["t1"]);
        assert_eq!(ids(&[("category", "LUZ")])?, ["c1"]);
        assert_eq!(ids(&[("provider", "CHIPI")])?, ["g1"]);
        assert_eq!(ids(&[("chipiCategory", "gift_cards")])?, ["g1"]);
        assert_eq!(ids(&[("chipiCategory", "NOPE")])?, Vec::<String>::new());
        assert_eq!(
            query(&[("category", "FOOD")]).map_err(|e| e.param),
            Err("category".into())
        );
        assert_eq!(
            query(&[("provider", "tet")]).map_err(|e| e.param),
            Err("provider".into())
        );
        assert_eq!(
            query(&[("locale", "fr")]).map_err(|e| e.param),
            Err("locale".into())
        );
        assert!(
            cat.get("t3", Locale::En).is_none(),
            "inactive SKUs are hidden"
        );
        Ok(())
    }

    #[test]
    fn locale_picks_translations_and_falls_back_to_english() {
        let mut e = entry("t1", "Telcel", SkuCategory::Telefonia, Some(1000));
        e.description = Some("Telcel credit".into());
        e.translations.insert(
            "es".into(),
            SkuTexts {
                name: Some("Recarga Telcel $10".into()),
                ..Default::default()
            },
        );
        let cat = Catalog::new([e]);
        let es = cat.get("t1", Locale::Es);
        assert_eq!(
            es.as_ref().map(|s| s.name.as_str()),
            Some("Recarga Telcel $10")
        );
        assert_eq!(es.and_then(|s| s.description), Some("Telcel credit".into()));
        assert_eq!(
            cat.get("t1", Locale::En).map(|s| s.name),
            Some("Telcel t1".into())
        );
        assert_eq!(Locale::parse("es-MX"), Some(Locale::Es));
    }

    #[test]
    fn validation_refuses_broken_records() {
        assert!(validate_entry(&entry("ok", "Telcel", SkuCategory::Telefonia, Some(100))).is_ok());
        let mut e = entry("x", "Telcel", SkuCategory::Telefonia, Some(100));
        e.reference_regex_validation = "^(unclosed$".into();
        assert_eq!(
            validate_entry(&e).map_err(|e| e.field),
            Err("referenceRegexValidation")
        );
        let mut e = entry("x", "Telcel", SkuCategory::Telefonia, Some(100));
        e.min_amount = Some(MinorAmount(1));
        assert_eq!(validate_entry(&e).map_err(|e| e.field), Err("fixedAmount"));
        let mut e = entry("x", "CFE", SkuCategory::Luz, None);
        e.max_amount = Some(MinorAmount(1));
        assert_eq!(validate_entry(&e).map_err(|e| e.field), Err("minAmount"));
        let e = entry("bad id!", "CFE", SkuCategory::Luz, None);
        assert_eq!(validate_entry(&e).map_err(|e| e.field), Err("id"));
    }
}
