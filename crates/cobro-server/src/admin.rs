//! Operator actions on the database, used by `cobro admin …` and by the tests.
//! They work on the store directly (no running server needed); a running server sees their
//! effect within `auth.refresh_interval_ms`.

use std::collections::HashSet;

use cobro_domain::{catalog::validate_entry, keys};
use cobro_store::{ApiKeyRecord, Org, Store, StoreError};
use cobro_types::{
    ApiKeyCreated, Balance, CatalogEntry, Environment, OrgCreated, Timestamp, TokenIssued,
    UsdMicros,
};

use crate::{Config, auth::issuer::BuiltinIssuer};

/// Why an admin action failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn random(e: keys::RandomError) -> AdminError {
    AdminError::Invalid(e.to_string())
}

/// Creates an organisation.
pub async fn create_org(store: &dyn Store, name: &str) -> Result<OrgCreated, AdminError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(AdminError::Invalid(
            "the organisation name must be 1-200 characters".into(),
        ));
    }
    let org = Org {
        id: keys::new_id("org").map_err(random)?,
        name: name.to_string(),
        created_at: Timestamp::now(),
    };
    store.create_org(&org).await?;
    Ok(OrgCreated { id: org.id })
}

/// Options of a new API key.
#[derive(Debug, Clone, Default)]
pub struct KeyOptions {
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// Builds a key pair record (not stored yet) and the one-time view of its secret.
pub fn new_key(
    org_id: &str,
    env: Environment,
    opts: &KeyOptions,
) -> Result<(ApiKeyRecord, ApiKeyCreated), AdminError> {
    if let Some(url) = &opts.jwks_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(AdminError::Invalid(format!(
            "the JWKS URL must be http(s): {url}"
        )));
    }
    if opts.jwks_url.is_none() && (opts.issuer.is_some() || opts.audience.is_some()) {
        return Err(AdminError::Invalid(
            "--issuer and --audience apply to an external JWKS (--jwks-url); keys without one trust the built-in issuer".into(),
        ));
    }
    let pair = keys::generate_key_pair(env).map_err(random)?;
    let record = ApiKeyRecord {
        public_key: pair.public_key.clone(),
        org_id: org_id.to_string(),
        environment: env,
        secret_hash: pair.secret_hash,
        jwks_url: opts.jwks_url.clone(),
        issuer: opts.issuer.clone(),
        audience: opts.audience.clone(),
        created_at: Timestamp::now(),
        revoked_at: None,
    };
    let shown = ApiKeyCreated {
        public_key: pair.public_key,
        secret_key: pair.secret_key,
        environment: env,
        org_id: org_id.to_string(),
    };
    Ok((record, shown))
}

/// Creates a key pair for an organisation. The secret is in the result and nowhere else.
pub async fn create_key(
    store: &dyn Store,
    org_id: &str,
    env: Environment,
    opts: &KeyOptions,
) -> Result<ApiKeyCreated, AdminError> {
    let (record, shown) = new_key(org_id, env, opts)?;
    match store.create_api_key(&record).await {
        Err(StoreError::NotFound(_)) => {
            Err(AdminError::NotFound(format!("no organisation {org_id}")))
        }
        other => other.map(|()| shown).map_err(AdminError::from),
    }
}

/// Revokes a key; running servers refuse it within the refresh interval.
pub async fn revoke_key(store: &dyn Store, public_key: &str) -> Result<(), AdminError> {
    if store.revoke_api_key(public_key, Timestamp::now()).await? {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("no API key {public_key}")))
    }
}

/// Largest single top-up, far above any real one; keeps balances far from `i64` overflow.
pub const MAX_TOP_UP_USD: &str = "1000000000";

/// Adds credits (a positive USD decimal string) to an organisation; returns the new balance.
pub async fn add_credits(
    store: &dyn Store,
    org_id: &str,
    usd: &str,
    note: Option<&str>,
) -> Result<Balance, AdminError> {
    let amount = UsdMicros::parse_usd(usd)
        .map_err(|e| AdminError::Invalid(format!("--usd {usd:?}: {e}")))?;
    if amount.0 == 0 {
        return Err(AdminError::Invalid("--usd must be greater than 0".into()));
    }
    if amount > UsdMicros::parse_usd(MAX_TOP_UP_USD).unwrap_or_default() {
        return Err(AdminError::Invalid(format!(
            "one top-up is at most {MAX_TOP_UP_USD} USD"
        )));
    }
    let entry_id = keys::new_id("le").map_err(random)?;
    let entry = match store
        .adjust_credits(org_id, &entry_id, amount, note, Timestamp::now())
        .await
    {
        Err(StoreError::NotFound(_)) => {
            return Err(AdminError::NotFound(format!("no organisation {org_id}")));
        }
        other => other?,
    };
    Ok(Balance {
        org_id: org_id.to_string(),
        available_usd: entry.balance_after,
        available_micros: entry.balance_after.0,
    })
}

/// Parses a duration such as `90s`, `30m`, `1h`, `7d` (a bare number is seconds).
pub fn parse_ttl(s: &str) -> Result<i64, AdminError> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = digits.parse().map_err(|_| {
        AdminError::Invalid(format!("bad duration {s:?}; use e.g. 90s, 30m, 1h, 7d"))
    })?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(AdminError::Invalid(format!(
                "bad duration unit in {s:?}; use s, m, h or d"
            )));
        }
    };
    let secs = n.saturating_mul(mult);
    if !(1..=366 * 86_400).contains(&secs) {
        return Err(AdminError::Invalid(
            "the token lifetime must be between 1 second and 366 days".into(),
        ));
    }
    Ok(secs)
}

/// Mints a customer JWT from the built-in issuer for a key that trusts it.
pub async fn mint_token(
    store: &dyn Store,
    config: &Config,
    public_key: &str,
    sub: &str,
    ttl_secs: i64,
) -> Result<TokenIssued, AdminError> {
    let key = store
        .get_api_key(public_key)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no API key {public_key}")))?;
    if key.revoked_at.is_some() {
        return Err(AdminError::Invalid(format!(
            "API key {public_key} is revoked"
        )));
    }
    if let Some(url) = key.jwks_url {
        return Err(AdminError::Invalid(format!(
            "API key {public_key} verifies customer JWTs against {url}; mint tokens with that identity provider"
        )));
    }
    if sub.is_empty() || sub.len() > 255 {
        return Err(AdminError::Invalid("--sub must be 1-255 characters".into()));
    }
    let issuer = BuiltinIssuer::load_or_create(store, &config.auth.builtin_issuer).await?;
    let (token, expires_at) = issuer
        .mint(
            sub,
            &crate::auth::issuer::audience(&key.org_id, key.environment),
            ttl_secs,
        )
        .map_err(|e| AdminError::Invalid(format!("signing failed: {e}")))?;
    Ok(TokenIssued { token, expires_at })
}

/// What a markup applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkupTarget {
    Sku(String),
    Category(String),
}

/// Sets an organisation's markup for a SKU or a category: a percentage of the converted amount
/// and/or a fixed USD amount per purchase. A SKU rule wins over its category's.
pub async fn set_markup(
    store: &dyn Store,
    org_id: &str,
    target: MarkupTarget,
    percent: Option<&str>,
    usd: Option<&str>,
) -> Result<cobro_store::MarkupRule, AdminError> {
    if percent.is_none() && usd.is_none() {
        return Err(AdminError::Invalid("give --percent, --usd or both".into()));
    }
    let pct = rust_decimal::Decimal::from_str_exact(percent.unwrap_or("0"))
        .map_err(|e| AdminError::Invalid(format!("--percent: {e}")))?;
    if pct.is_sign_negative() || pct > rust_decimal::Decimal::ONE_HUNDRED {
        return Err(AdminError::Invalid(
            "--percent must be between 0 and 100".into(),
        ));
    }
    let fixed = UsdMicros::parse_usd(usd.unwrap_or("0"))
        .map_err(|e| AdminError::Invalid(format!("--usd: {e}")))?;
    let (scope, target) = match target {
        MarkupTarget::Sku(id) => ("sku", id),
        MarkupTarget::Category(c) => {
            let cat = cobro_types::SkuCategory::parse(&c)
                .ok_or_else(|| AdminError::Invalid(format!("unknown category {c:?}")))?;
            ("category", cat.as_str().to_string())
        }
    };
    let rule = cobro_store::MarkupRule {
        org_id: org_id.to_string(),
        scope: scope.into(),
        target,
        percent: pct.normalize().to_string(),
        fixed,
        updated_at: Timestamp::now(),
    };
    match store.set_markup(&rule).await {
        Err(StoreError::NotFound(_)) => {
            Err(AdminError::NotFound(format!("no organisation {org_id}")))
        }
        other => other.map(|()| rule).map_err(AdminError::from),
    }
}

/// Result of a catalog import.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportSummary {
    pub imported: usize,
    pub active: usize,
}

/// Parses and validates a catalog file (a JSON array of catalog records).
pub fn parse_catalog(json: &str) -> Result<Vec<CatalogEntry>, AdminError> {
    let de = &mut serde_json::Deserializer::from_str(json);
    let entries: Vec<CatalogEntry> = serde_path_to_error::deserialize(de).map_err(|e| {
        AdminError::Invalid(format!("catalog file, at {}: {}", e.path(), e.inner()))
    })?;
    let mut seen = HashSet::new();
    for e in &entries {
        validate_entry(e).map_err(|err| AdminError::Invalid(err.to_string()))?;
        if !seen.insert(e.id.as_str()) {
            return Err(AdminError::Invalid(format!("SKU {} appears twice", e.id)));
        }
    }
    Ok(entries)
}

/// Imports (upserts by id) a catalog file; all or nothing.
pub async fn import_catalog(store: &dyn Store, json: &str) -> Result<ImportSummary, AdminError> {
    let entries = parse_catalog(json)?;
    let imported = store.upsert_catalog(&entries, Timestamp::now()).await?;
    Ok(ImportSummary {
        imported,
        active: entries.iter().filter(|e| e.active).count(),
    })
}

/// The whole stored catalog, inactive records included, in import format.
pub async fn export_catalog(store: &dyn Store) -> Result<Vec<CatalogEntry>, AdminError> {
    Ok(store.list_catalog().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_units() {
        assert_eq!(parse_ttl("90").ok(), Some(90));
        assert_eq!(parse_ttl("30m").ok(), Some(1800));
        assert_eq!(parse_ttl("1h").ok(), Some(3600));
        assert_eq!(parse_ttl("7d").ok(), Some(604_800));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("9999d").is_err());
    }

    #[test]
    fn the_demo_catalog_is_valid_and_rich() {
        let entries = parse_catalog(crate::bootstrap::DEMO_CATALOG).expect("demo catalog parses");
        assert!(entries.len() >= 60);
        let categories: HashSet<_> = entries.iter().map(|e| e.category).collect();
        assert!(categories.len() >= 10);
        assert!(entries.iter().all(|e| e.translations.contains_key("es")));
        for id in ["sku-tl-TEL010", "sku-vir-VIR020"] {
            assert!(entries.iter().any(|e| e.id == id), "{id}");
        }
    }
}
