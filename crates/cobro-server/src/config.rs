//! Configuration: defaults < `cobro.toml` < `COBRO_*` environment variables < command-line flags.
//!
//! Every option lives in a section (`[database] url`) and has one environment variable,
//! `COBRO_<SECTION>_<KEY>` (`COBRO_DATABASE_URL`); top-level options drop the section
//! (`COBRO_LISTEN`). `cobro config print-default` prints them all with their defaults.

use std::path::Path;

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

/// The sections of the configuration file; used to map `COBRO_SECTION_KEY` variables.
const SECTIONS: &[&str] = &[
    "database",
    "http",
    "auth",
    "demo",
    "log",
    "fx",
    "purchases",
    "carrier",
    "webhooks",
    "x402",
];

/// The whole configuration of a cobro process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server listens on. Port 0 picks a free port.
    pub listen: String,
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub demo: DemoConfig,
    pub log: LogConfig,
    pub fx: FxConfig,
    pub purchases: PurchasesConfig,
    pub carrier: CarrierConfig,
    pub webhooks: WebhooksConfig,
    /// x402 pay-per-request: the facilitator routes and the paid catalog route.
    pub x402: cobro_x402::X402Config,
}

/// The webhook dispatcher (see `workers::webhooks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Run the dispatcher in this process.
    pub enabled: bool,
    /// Delay before each attempt, in ms: the first entry is the first attempt (0 = at once),
    /// each later entry the wait after the previous failure. After the last, the delivery
    /// fails for good. Default: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
    pub retry_schedule_ms: Vec<u64>,
    /// Timeout of one delivery attempt.
    pub timeout_ms: u64,
    /// How long a dispatcher holds a claimed delivery; must exceed twice `timeout_ms`.
    pub lease_ms: u64,
    /// How often an idle dispatcher looks for work (events from this process wake it at once).
    pub poll_interval_ms: u64,
    /// Most deliveries in flight in this process.
    pub max_in_flight: u32,
    /// Most deliveries in flight to one endpoint from this process.
    pub max_in_flight_per_endpoint: u32,
    /// Allow endpoints on loopback, private, link-local and other non-public addresses.
    /// Loopback endpoints alone are also allowed, without this, while the server listens on
    /// a loopback address only (see [`WebhooksConfig::allow_loopback`]).
    pub allow_private_addresses: bool,
    /// Derived, not configurable: the server listens on a loopback address only, so whoever
    /// can register an endpoint is already on this machine, and a loopback endpoint (such as
    /// `cobro webhook listen`) exposes nothing new. Set from `listen` when the configuration
    /// is loaded and from the bound address when the server starts.
    #[serde(skip)]
    pub allow_loopback: bool,
    /// How long the previous secret keeps signing after a rotation.
    pub rotation_overlap_secs: u64,
    /// Longest `Retry-After` honoured, in seconds.
    pub max_retry_after_secs: u64,
    /// Most endpoints per organisation and environment.
    pub max_endpoints: u32,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        const MIN: u64 = 60_000;
        const HOUR: u64 = 60 * MIN;
        WebhooksConfig {
            enabled: true,
            retry_schedule_ms: vec![
                0,
                5_000,
                5 * MIN,
                30 * MIN,
                2 * HOUR,
                5 * HOUR,
                10 * HOUR,
                14 * HOUR,
                20 * HOUR,
                24 * HOUR,
            ],
            timeout_ms: 15_000,
            lease_ms: 60_000,
            poll_interval_ms: 250,
            max_in_flight: 256,
            max_in_flight_per_endpoint: 32,
            allow_private_addresses: false,
            allow_loopback: false,
            rotation_overlap_secs: 24 * 3600,
            max_retry_after_secs: 24 * 3600,
            max_endpoints: 16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CarrierConfig {
    /// Base URL of the carrier aggregator (the protocol of docs/carrier-protocol.md). Empty: no
    /// carrier, and production purchases are refused with CARRIER_UNAVAILABLE before any debit.
    pub url: String,
    /// Timeout of one call to the carrier.
    pub timeout_ms: u64,
    /// How long a worker holds a claimed purchase; must exceed two carrier calls.
    pub lease_ms: u64,
    /// How often an idle worker looks for work.
    pub poll_interval_ms: u64,
    /// Most purchases a worker takes per round.
    pub batch: u32,
    /// After a round that took fewer than `batch` purchases, how long the worker waits before
    /// it claims again, so that under load each round (two transactions) takes many
    /// purchases instead of a few. A full round is followed at once.
    pub linger_ms: u64,
    /// First retry delay; it doubles per attempt up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Attempts after which a purchase is flagged as stuck (and still retried).
    pub flag_after_attempts: u32,
}

impl Default for CarrierConfig {
    fn default() -> Self {
        CarrierConfig {
            url: String::new(),
            timeout_ms: 10_000,
            lease_ms: 60_000,
            poll_interval_ms: 200,
            batch: 32,
            linger_ms: 20,
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
            flag_after_attempts: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FxConfig {
    /// USD per Mexican peso (the fixed-table rate source), e.g. "0.0588".
    pub mxn_usd: String,
}

impl Default for FxConfig {
    fn default() -> Self {
        FxConfig {
            mxn_usd: "0.0588".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PurchasesConfig {
    /// Most purchases written in one database commit (group commit under load).
    pub max_batch: usize,
}

impl Default for PurchasesConfig {
    fn default() -> Self {
        PurchasesConfig { max_batch: 128 }
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created if missing) or `postgres://USER@HOST:PORT/DB`.
    pub url: String,
    /// Connection pool size.
    pub max_connections: u32,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// A database URL with any password replaced, for logs: the password of the user-info part
/// (everything before the last `@` of the authority) and any `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let (head, rest) = url.split_at(scheme_end);
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***{host}"),
                None => authority.to_string(),
            }
        }
        None => authority.to_string(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{head}{authority}{path}?{q}"),
        None => format!("{head}{authority}{path}"),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// A request still running after this long is answered with REQUEST_TIMEOUT.
    pub request_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How often each server checks the database for new or revoked keys and catalog changes.
    pub refresh_interval_ms: u64,
    /// How long a fetched JWKS is used before it is fetched again.
    pub jwks_cache_ttl_secs: u64,
    /// At most one JWKS fetch per URL within this interval, whatever unknown `kid`s arrive.
    pub jwks_min_refresh_interval_ms: u64,
    /// Timeout of one JWKS fetch.
    pub jwks_fetch_timeout_ms: u64,
    /// Allowed clock skew when checking `exp` and `nbf`.
    pub jwt_leeway_secs: u64,
    /// `iss` of the tokens minted by the built-in development issuer.
    pub builtin_issuer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// On a database with no organisation, create the demo organisation, keys and catalog.
    pub bootstrap: bool,
    /// Credits given to the demo organisation, in USD.
    pub credits_usd: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter such as `info` or `cobro_server=debug,info`.
    pub filter: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            database: DatabaseConfig::default(),
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            demo: DemoConfig::default(),
            log: LogConfig::default(),
            fx: FxConfig::default(),
            purchases: PurchasesConfig::default(),
            carrier: CarrierConfig::default(),
            webhooks: WebhooksConfig::default(),
            x402: cobro_x402::X402Config::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://cobro.db".into(),
            max_connections: 8,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            body_limit_bytes: 64 * 1024,
            request_timeout_ms: 30_000,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            refresh_interval_ms: 1_000,
            jwks_cache_ttl_secs: 300,
            jwks_min_refresh_interval_ms: 10_000,
            jwks_fetch_timeout_ms: 5_000,
            jwt_leeway_secs: 30,
            builtin_issuer: "cobro".into(),
        }
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            bootstrap: true,
            credits_usd: "1000".into(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            filter: "info".into(),
        }
    }
}

/// Maps `database_url` to `database.url` for the known sections.
fn env_key_to_path(key: &str) -> String {
    for section in SECTIONS {
        if let Some(rest) = key.strip_prefix(section).and_then(|r| r.strip_prefix('_')) {
            return format!("{section}.{rest}");
        }
    }
    key.to_string()
}

/// Every option's dotted path (`listen`, `database.url`, …), from the defaults.
fn option_paths() -> Vec<String> {
    let mut paths = Vec::new();
    if let Ok(toml::Value::Table(table)) = toml::Value::try_from(Config::default()) {
        for (k, v) in table {
            match v {
                toml::Value::Table(section) => {
                    paths.extend(section.keys().map(|sk| format!("{k}.{sk}")))
                }
                _ => paths.push(k),
            }
        }
    }
    paths
}

impl Config {
    /// Loads defaults, then the file (if given; it must exist), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        Self::load_from(file, Env::prefixed("COBRO_"))
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Config, Box<figment::Error>> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(Box::new(figment::Error::from(format!(
                    "configuration file {} does not exist",
                    path.display()
                ))));
            }
            fig = fig.merge(Toml::file(path));
        }
        // Only variables naming a known option are read: COBRO_URL, COBRO_API_KEY and the
        // like belong to the client commands and must not break the server's configuration.
        let known = option_paths();
        let env = env
            .map(|k| env_key_to_path(&k.as_str().to_ascii_lowercase()).into())
            .filter(move |k| known.iter().any(|p| p == k.as_str()));
        let mut config: Config = fig.merge(env).extract().map_err(Box::new)?;
        config.webhooks.allow_loopback = listens_on_loopback(&config.listen);
        config
            .validate()
            .map_err(|e| Box::new(figment::Error::from(e)))?;
        Ok(config)
    }

    /// Refuses values that would break a guarantee (revocation within 10 s, a JWKS rate
    /// limit, sane limits).
    pub fn validate(&self) -> Result<(), String> {
        let a = &self.auth;
        let rate_ok = rust_decimal::Decimal::from_str_exact(&self.fx.mxn_usd)
            .is_ok_and(|d| d > rust_decimal::Decimal::ZERO);
        let c = &self.carrier;
        let w = &self.webhooks;
        let checks: [(bool, &str); 15] = [
            (
                !w.retry_schedule_ms.is_empty() && w.retry_schedule_ms.len() <= 50,
                "webhooks.retry_schedule_ms must have 1..=50 entries",
            ),
            (
                (100..=120_000).contains(&w.timeout_ms)
                    && w.lease_ms > w.timeout_ms.saturating_mul(2),
                "webhooks.timeout_ms must be 100..=120000 and webhooks.lease_ms more than twice it",
            ),
            (
                (1..=10_000).contains(&w.max_in_flight)
                    && (1..=w.max_in_flight).contains(&w.max_in_flight_per_endpoint),
                "webhooks.max_in_flight must be 1..=10000 and max_in_flight_per_endpoint 1..=max_in_flight",
            ),
            (
                w.poll_interval_ms >= 10 && (1..=1000).contains(&w.max_endpoints),
                "webhooks.poll_interval_ms must be at least 10 and webhooks.max_endpoints 1..=1000",
            ),
            (
                c.lease_ms > c.timeout_ms.saturating_mul(2),
                "carrier.lease_ms must exceed twice carrier.timeout_ms",
            ),
            (
                (1..=1000).contains(&c.batch)
                    && c.retry_base_ms >= 1
                    && c.retry_max_ms >= c.retry_base_ms,
                "carrier.batch must be 1..=1000 and 1 <= carrier.retry_base_ms <= carrier.retry_max_ms",
            ),
            (
                c.url.is_empty() || c.url.starts_with("http://") || c.url.starts_with("https://"),
                "carrier.url must be empty or an http(s) URL",
            ),
            (
                rate_ok,
                "fx.mxn_usd must be a positive decimal such as \"0.0588\"",
            ),
            (
                (1..=1000).contains(&self.purchases.max_batch),
                "purchases.max_batch must be 1..=1000",
            ),
            (
                (50..=10_000).contains(&a.refresh_interval_ms),
                "auth.refresh_interval_ms must be 50..=10000 (revoked keys must stop working within 10 s)",
            ),
            (
                a.jwks_min_refresh_interval_ms >= 100,
                "auth.jwks_min_refresh_interval_ms must be at least 100",
            ),
            (
                a.jwt_leeway_secs <= 300,
                "auth.jwt_leeway_secs must be at most 300",
            ),
            (
                (100..=60_000).contains(&a.jwks_fetch_timeout_ms),
                "auth.jwks_fetch_timeout_ms must be 100..=60000",
            ),
            (
                (1024..=16 * 1024 * 1024).contains(&self.http.body_limit_bytes),
                "http.body_limit_bytes must be 1 KiB..=16 MiB",
            ),
            (
                self.http.request_timeout_ms >= 100,
                "http.request_timeout_ms must be at least 100",
            ),
        ];
        if self.x402.enabled {
            self.x402.validate().map_err(|e| e.to_string())?;
        }
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err((*msg).to_string()),
            None => Ok(()),
        }
    }

    /// The default configuration as commented TOML, each option with its variable.
    pub fn default_toml() -> String {
        let mut out = String::from(
            "# cobro configuration: every option, with its default.\n\
             # Precedence: defaults < this file (--config) < COBRO_* variables < flags.\n",
        );
        let value = toml::Value::try_from(Config::default())
            .unwrap_or(toml::Value::Table(Default::default()));
        let Some(table) = value.as_table() else {
            return out;
        };
        let line = |out: &mut String, key: &str, v: &toml::Value, var: &str| {
            out.push_str(&format!("{key} = {v}    # {var}\n"));
        };
        for (k, v) in table.iter().filter(|(_, v)| !v.is_table()) {
            line(&mut out, k, v, &format!("COBRO_{}", k.to_uppercase()));
        }
        for (section, v) in table.iter().filter(|(_, v)| v.is_table()) {
            out.push_str(&format!("\n[{section}]\n"));
            for (k, v) in v.as_table().into_iter().flatten() {
                line(
                    &mut out,
                    k,
                    v,
                    &format!("COBRO_{}_{}", section.to_uppercase(), k.to_uppercase()),
                );
            }
        }
        out
    }
}

/// Whether a `listen` address (`IP:PORT` or `localhost:PORT`) is on loopback only.
pub fn listens_on_loopback(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    listen
        .rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

impl WebhooksConfig {
    /// Which endpoint addresses this configuration allows.
    pub fn address_policy(&self) -> crate::webhooks::AddressPolicy {
        crate::webhooks::AddressPolicy {
            private: self.allow_private_addresses,
            loopback: self.allow_private_addresses || self.allow_loopback,
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn environment_variables_override_the_file_which_overrides_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("cobro.toml", "listen = \"0.0.0.0:9000\"\n[database]\nurl = \"sqlite://x.db\"\nmax_connections = 3\n")?;
            jail.set_env("COBRO_DATABASE_URL", "postgres://u@h/db");
            jail.set_env("COBRO_AUTH_JWT_LEEWAY_SECS", "5");
            jail.set_env("COBRO_URL", "http://client.setting/");
            jail.set_env("COBRO_API_KEY", "pk_dev_client_setting");
            let c = Config::load(Some(Path::new("cobro.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "0.0.0.0:9000");
            assert_eq!(c.database.url, "postgres://u@h/db");
            assert_eq!(c.database.max_connections, 3);
            assert_eq!(c.auth.jwt_leeway_secs, 5);
            assert_eq!(c.http.body_limit_bytes, 65536);
            Ok(())
        });
    }

    #[test]
    fn unknown_options_and_missing_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[database]\nurll = \"typo\"\n")?;
            assert!(Config::load(Some(Path::new("bad.toml"))).is_err());
            assert!(Config::load(Some(Path::new("missing.toml"))).is_err());
            jail.set_env("COBRO_AUTH_REFRESH_INTERVAL_MS", "60000");
            assert!(
                Config::load(None).is_err(),
                "revocation must stay within 10 s"
            );
            Ok(())
        });
    }

    #[test]
    fn the_printed_defaults_parse_back_to_the_defaults() {
        let text = Config::default_toml();
        assert!(text.contains("COBRO_DATABASE_URL"));
        assert!(text.contains("COBRO_LISTEN"));
        let parsed: Config = toml::from_str(&text).expect("defaults parse");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn passwords_are_redacted_in_debug_output() {
        let db = DatabaseConfig {
            url: "postgres://app:hunter2@db:5432/cobro".into(),
            max_connections: 1,
        };
        assert!(!format!("{db:?}").contains("hunter2"));
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=s3cret"),
            "postgres://h/db?user=u&password=***"
        );
        assert_eq!(redact_url("sqlite://cobro.db"), "sqlite://cobro.db");
    }
}
