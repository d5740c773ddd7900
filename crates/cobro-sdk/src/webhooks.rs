//! Verifying cobro's webhook deliveries in a receiver.
//!
//! ```
//! use cobro_sdk::webhooks;
//! # let secret = webhooks::new_secret().unwrap();
//! # let body = br#"{"id":"evt_1","type":"sku-purchase.completed"}"#;
//! # let now = 1_700_000_000;
//! # let (chipi, sig) = webhooks::sign(&[&secret], "evt_1", now, body).unwrap();
//! # let mut headers = reqwest::header::HeaderMap::new();
//! # headers.insert("webhook-id", "evt_1".parse().unwrap());
//! # headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
//! # headers.insert("webhook-signature", sig.parse().unwrap());
//! # headers.insert("chipi-signature", chipi.parse().unwrap());
//! // In your handler: the raw body bytes and the request headers.
//! match webhooks::verify_headers(&secret, body, &headers, now, 300) {
//!     Ok(()) => { /* parse the body and act on it; deduplicate on webhook-id */ }
//!     Err(e) => { /* answer 400 and ignore the request */ let _ = e; }
//! }
//! ```

pub use cobro_types::webhook::{
    CHIPI_SIGNATURE, VerifyError, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP,
    chipi_signature, new_secret, sign, standard_signature, verify, verify_chipi, verify_standard,
};

/// Checks both signature schemes of a delivery from its headers, at `now_secs` (Unix
/// seconds), refusing timestamps more than `tolerance_secs` away (300 is customary).
///
/// ```
/// let headers = reqwest::header::HeaderMap::new();
/// let err = cobro_sdk::webhooks::verify_headers("whsec_c2VjcmV0", b"{}", &headers, 0, 300);
/// assert!(err.is_err(), "no signature headers, no trust");
/// ```
pub fn verify_headers(
    secret: &str,
    body: &[u8],
    headers: &reqwest::header::HeaderMap,
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    verify(
        secret,
        body,
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        now_secs,
        tolerance_secs,
    )
}
