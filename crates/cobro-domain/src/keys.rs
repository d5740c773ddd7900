//! API keys and identifiers.
//!
//! A public key (`pk_dev_…`, `pk_prod_…`) names an organisation and an environment; it travels
//! in `x-api-key` and is not a secret. A secret key (`sk_dev_…`, `sk_prod_…`) proves the caller
//! is the organisation's back end; only its SHA-256 is stored. Both carry 256 bits or more of
//! randomness in base62, so a plain (unsalted) SHA-256 is a sound storage hash: there is nothing
//! to brute-force that is smaller than the key space.

use aws_lc_rs::{digest, rand::SecureRandom};
use cobro_types::Environment;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Length of the random part of a public key (the SDK requires at least 32).
pub const PUBLIC_KEY_RANDOM_LEN: usize = 40;
/// Length of the random part of a secret key.
pub const SECRET_KEY_RANDOM_LEN: usize = 48;

/// Error from the system random source (practically never happens; never ignored).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// `len` characters of base62, uniformly distributed (rejection sampling, no modulo bias).
pub fn random_base62(len: usize) -> Result<String, RandomError> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        rng.fill(&mut buf).map_err(|_| RandomError)?;
        for b in buf {
            // 248 = 62 * 4: bytes at or above it would bias the first characters.
            if b < 248 && out.len() < len {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// A prefixed, time-ordered identifier such as `pur_…`, `le_…`: 8 base62 characters of the
/// creation time in Unix milliseconds, then 16 random base62 characters (≈ 95 bits).
///
/// The base62 alphabet is in ASCII order, so ids sort by creation time (to the millisecond).
/// That is what makes them cheap to index: a new purchase, ledger entry, job or event lands at
/// the right edge of its table's id index instead of on a random page, so a commit dirties a
/// few pages rather than one per row (measured in docs/BENCHMARKS.md).
pub fn new_id(prefix: &str) -> Result<String, RandomError> {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Ok(format!(
        "{prefix}_{}{}",
        base62_fixed(millis, 8),
        random_base62(16)?
    ))
}

/// `n` written in `width` base62 digits, most significant first (wrapping above 62^width).
fn base62_fixed(mut n: u64, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits.into_iter().map(char::from).collect()
}

/// A freshly generated key pair, before it is stored.
#[derive(Clone)]
pub struct GeneratedKeyPair {
    pub public_key: String,
    pub secret_key: String,
    pub secret_hash: String,
}

impl std::fmt::Debug for GeneratedKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKeyPair")
            .field("public_key", &self.public_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// Generates a public/secret key pair for `env`.
pub fn generate_key_pair(env: Environment) -> Result<GeneratedKeyPair, RandomError> {
    let public_key = format!(
        "pk_{}_{}",
        env.as_str(),
        random_base62(PUBLIC_KEY_RANDOM_LEN)?
    );
    let secret_key = format!(
        "sk_{}_{}",
        env.as_str(),
        random_base62(SECRET_KEY_RANDOM_LEN)?
    );
    let secret_hash = hash_secret(&secret_key);
    Ok(GeneratedKeyPair {
        public_key,
        secret_key,
        secret_hash,
    })
}

/// The stored form of a secret key: lowercase hex SHA-256.
pub fn hash_secret(secret_key: &str) -> String {
    hex_lower(digest::digest(&digest::SHA256, secret_key.as_bytes()).as_ref())
}

fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
    s
}

fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The environment of a well-formed public key: `^pk_(dev|prod)_[a-zA-Z0-9]{32,}$`.
pub fn parse_public_key(key: &str) -> Option<Environment> {
    let rest = key.strip_prefix("pk_")?;
    let (env, random) = rest.split_once('_')?;
    let env = Environment::parse(env)?;
    (random.len() >= 32 && random.len() <= 128 && is_base62(random)).then_some(env)
}

/// The environment of a string shaped like a secret key (`sk_dev_…` / `sk_prod_…`).
pub fn parse_secret_key(key: &str) -> Option<Environment> {
    let rest = key.strip_prefix("sk_")?;
    let (env, random) = rest.split_once('_')?;
    let env = Environment::parse(env)?;
    (!random.is_empty() && random.len() <= 128 && is_base62(random)).then_some(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_shapes_the_sdk_requires() -> Result<(), RandomError> {
        for env in [Environment::Dev, Environment::Prod] {
            let pair = generate_key_pair(env)?;
            assert_eq!(parse_public_key(&pair.public_key), Some(env));
            assert_eq!(parse_secret_key(&pair.secret_key), Some(env));
            assert_eq!(pair.secret_hash, hash_secret(&pair.secret_key));
            assert_eq!(pair.secret_hash.len(), 64);
            assert!(!format!("{pair:?}").contains(&pair.secret_key));
        }
        Ok(())
    }

    #[test]
    fn malformed_public_keys_are_refused() {
        assert_eq!(parse_public_key("pk_dev_short"), None);
        assert_eq!(
            parse_public_key("pk_test_0123456789012345678901234567890123"),
            None
        );
        assert_eq!(
            parse_public_key("sk_dev_0123456789012345678901234567890123"),
            None
        );
        assert_eq!(
            parse_public_key("pk_dev_01234567890123456789012345678901-3"),
            None
        );
        assert_eq!(
            parse_public_key("pk_prod_0123456789abcdefABCDEF0123456789"),
            Some(Environment::Prod)
        );
    }

    #[test]
    fn random_ids_differ_and_are_base62() -> Result<(), RandomError> {
        let a = new_id("org")?;
        let b = new_id("org")?;
        assert_ne!(a, b);
        assert!(a.starts_with("org_") && a.len() == 28 && is_base62(&a[4..]));
        Ok(())
    }

    #[test]
    fn ids_sort_by_creation_time() -> Result<(), RandomError> {
        assert_eq!(base62_fixed(0, 8), "00000000");
        assert_eq!(base62_fixed(61, 3), "00z");
        assert_eq!(base62_fixed(62, 3), "010");
        // 2026-11-21 and a millisecond later, and a year later, keep their order as text.
        let t = 1_795_305_600_000u64;
        let (a, b, c) = (
            base62_fixed(t, 8),
            base62_fixed(t + 1, 8),
            base62_fixed(t + 31_536_000_000, 8),
        );
        assert!(a < b && b < c, "{a} {b} {c}");
        let first = new_id("pur")?;
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_id("pur")?;
        assert!(first[..12] < second[..12], "{first} {second}");
        Ok(())
    }
}
