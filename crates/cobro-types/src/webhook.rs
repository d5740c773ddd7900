//! Webhook signatures: how cobro signs a delivery and how a receiver checks it.
//!
//! Every delivery carries two signatures of the same raw body:
//!
//! * `chipi-signature`: lowercase hex HMAC-SHA256 of the raw body, keyed with the endpoint
//!   secret exactly as shown (the whole `whsec_…` string, as UTF-8 bytes), which is how
//!   Chipi's docs tell receivers to check it;
//! * Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`):
//!   `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the base64-decoded
//!   part of the secret after `whsec_`.
//!
//! While a rotated secret is still in its overlap, each header carries one signature per
//! secret, separated by a space (the newest first), and a receiver accepts the delivery when
//! any of them verifies with the secret it holds.

use aws_lc_rs::{constant_time, hmac};
use base64::{Engine, engine::general_purpose::STANDARD};

/// The `chipi-signature` header.
pub const CHIPI_SIGNATURE: &str = "chipi-signature";
/// The Standard Webhooks message id header (the event id; stable across retries).
pub const WEBHOOK_ID: &str = "webhook-id";
/// The Standard Webhooks timestamp header (Unix seconds of the attempt).
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// The Standard Webhooks signature header.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// Why a delivery failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the secret is not a whsec_<base64> secret")]
    BadSecret,
    #[error("a signature header is missing: {0}")]
    MissingHeader(&'static str),
    #[error("the webhook-timestamp header is not a Unix time in seconds")]
    BadTimestamp,
    #[error("the webhook-timestamp is outside the tolerance (possible replay)")]
    StaleTimestamp,
    #[error("no signature matches")]
    NoMatch,
}

/// The HMAC key of the Standard Webhooks scheme: the bytes after `whsec_`, base64-decoded.
fn standard_key(secret: &str) -> Result<hmac::Key, VerifyError> {
    let raw = secret
        .strip_prefix("whsec_")
        .ok_or(VerifyError::BadSecret)?;
    let bytes = STANDARD.decode(raw).map_err(|_| VerifyError::BadSecret)?;
    if bytes.is_empty() {
        return Err(VerifyError::BadSecret);
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

/// A new endpoint secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> Result<String, aws_lc_rs::error::Unspecified> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)?;
    Ok(format!("whsec_{}", STANDARD.encode(bytes)))
}

/// Whether `secret` has the `whsec_<base64>` shape signing needs.
pub fn is_valid_secret(secret: &str) -> bool {
    standard_key(secret).is_ok()
}

/// The `chipi-signature` of `body` under `secret`: lowercase hex HMAC-SHA256.
pub fn chipi_signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hex::encode(hmac::sign(&key, body).as_ref())
}

/// The Standard Webhooks signature (`v1,<base64>`) of a delivery.
pub fn standard_signature(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, VerifyError> {
    let key = standard_key(secret)?;
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    Ok(format!("v1,{}", STANDARD.encode(ctx.sign().as_ref())))
}

/// The signature headers of one delivery, signed with every secret in `secrets` (newest
/// first): `(chipi-signature, webhook-signature)`.
pub fn sign(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<(String, String), VerifyError> {
    let mut chipi = Vec::with_capacity(secrets.len());
    let mut standard = Vec::with_capacity(secrets.len());
    for s in secrets {
        chipi.push(chipi_signature(s, body));
        standard.push(standard_signature(s, id, timestamp, body)?);
    }
    Ok((chipi.join(" "), standard.join(" ")))
}

/// Checks a `chipi-signature` header (one or more space-separated hex signatures).
pub fn verify_chipi(secret: &str, body: &[u8], header: &str) -> Result<(), VerifyError> {
    let expected = chipi_signature(secret, body);
    let ok = header.split_ascii_whitespace().any(|candidate| {
        constant_time::verify_slices_are_equal(candidate.as_bytes(), expected.as_bytes()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

/// Checks the Standard Webhooks headers of a delivery received at `now_secs` (Unix seconds),
/// refusing timestamps more than `tolerance_secs` away from it.
pub fn verify_standard(
    secret: &str,
    body: &[u8],
    id: &str,
    timestamp: &str,
    signature_header: &str,
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    if (now_secs - ts).abs() > tolerance_secs {
        return Err(VerifyError::StaleTimestamp);
    }
    let expected = standard_signature(secret, id, ts, body)?;
    let expected = expected.trim_start_matches("v1,").as_bytes();
    let ok = signature_header
        .split_ascii_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|sig| constant_time::verify_slices_are_equal(sig.as_bytes(), expected).is_ok());
    if ok {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

/// Checks both schemes of a delivery, given a header lookup (`get("webhook-id")`), at
/// `now_secs` with `tolerance_secs` (300 is the Standard Webhooks recommendation).
pub fn verify<'a>(
    secret: &str,
    body: &[u8],
    get: impl Fn(&'static str) -> Option<&'a str>,
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let header = |name| get(name).ok_or(VerifyError::MissingHeader(name));
    verify_standard(
        secret,
        body,
        header(WEBHOOK_ID)?,
        header(WEBHOOK_TIMESTAMP)?,
        header(WEBHOOK_SIGNATURE)?,
        now_secs,
        tolerance_secs,
    )?;
    verify_chipi(secret, body, header(CHIPI_SIGNATURE)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification (its README's test vector).
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn reproduces_the_standard_webhooks_vector() {
        let sig = standard_signature(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY.as_bytes()).unwrap();
        assert_eq!(sig, SPEC_SIG);
        verify_standard(
            SPEC_SECRET,
            SPEC_BODY.as_bytes(),
            SPEC_ID,
            "1614265330",
            SPEC_SIG,
            SPEC_TS + 10,
            300,
        )
        .unwrap();
    }

    #[test]
    fn chipi_signature_is_hex_hmac_of_the_body_with_the_whole_secret() {
        // HMAC-SHA256(key = "key", "The quick brown fox jumps over the lazy dog") (RFC 4231 style).
        assert_eq!(
            chipi_signature("key", b"The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn tampering_wrong_secret_and_stale_timestamps_fail() {
        let secret = new_secret().unwrap();
        let other = new_secret().unwrap();
        let body = br#"{"id":"evt_1"}"#;
        let (chipi, standard) = sign(&[&secret], "evt_1", 1_000, body).unwrap();
        let headers = |name: &'static str| -> Option<&str> {
            match name {
                WEBHOOK_ID => Some("evt_1"),
                WEBHOOK_TIMESTAMP => Some("1000"),
                WEBHOOK_SIGNATURE => Some(standard.as_str()),
                CHIPI_SIGNATURE => Some(chipi.as_str()),
                _ => None,
            }
        };
        verify(&secret, body, headers, 1_100, 300).unwrap();
        assert_eq!(
            verify(&secret, br#"{"id":"evt_2"}"#, headers, 1_100, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&other, body, headers, 1_100, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&secret, body, headers, 1_301, 300),
            Err(VerifyError::StaleTimestamp)
        );
        assert_eq!(
            verify(&secret, body, headers, 699, 300),
            Err(VerifyError::StaleTimestamp)
        );
        assert_eq!(
            verify_chipi(&other, body, &chipi),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(
                &secret,
                body,
                |n| if n == CHIPI_SIGNATURE {
                    None
                } else {
                    headers(n)
                },
                1_100,
                300
            ),
            Err(VerifyError::MissingHeader(CHIPI_SIGNATURE))
        );
    }

    #[test]
    fn during_a_rotation_both_secrets_verify() {
        let new = new_secret().unwrap();
        let old = new_secret().unwrap();
        let body = b"{}";
        let (chipi, standard) = sign(&[&new, &old], "evt_r", 5, body).unwrap();
        assert_eq!(chipi.split(' ').count(), 2);
        for s in [&new, &old] {
            verify_chipi(s, body, &chipi).unwrap();
            verify_standard(s, body, "evt_r", "5", &standard, 5, 300).unwrap();
        }
        let (chipi_new_only, _) = sign(&[&new], "evt_r", 5, body).unwrap();
        assert_eq!(
            verify_chipi(&old, body, &chipi_new_only),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn secrets_have_the_whsec_shape() {
        let s = new_secret().unwrap();
        assert!(s.starts_with("whsec_") && is_valid_secret(&s));
        assert!(!is_valid_secret("whsec_"));
        assert!(!is_valid_secret("secret"));
    }
}
