//! Webhooks: endpoint rules (URL policy, event filters), wire views, and the dispatcher.
//!
//! Who may receive deliveries: an endpoint URL must be `http(s)://` without credentials, and
//! unless `webhooks.allow_private_addresses` is set, its host must not be (or resolve to) a
//! loopback, private, link-local, shared, multicast or otherwise non-public address. The
//! check runs when the endpoint is saved (for IP literals and `localhost`) and again at every
//! delivery through the dispatcher's own DNS resolver, which drops non-public answers, so a
//! name that later re-points at an internal address is refused too (DNS rebinding).
//!
//! One exception needs no setting: a server that listens on a loopback address only (the
//! default, `127.0.0.1:8080`) may deliver to loopback endpoints. Only programs on the same
//! machine can reach such a server, and they can reach its loopback services directly; it is
//! what lets `cobro webhook listen` receive a newcomer's first webhook. Private network
//! addresses stay refused.

pub mod dispatch;
pub mod ops;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use cobro_store::webhooks::{
    ALL_EVENTS, AttemptRecord, DeliveryRecord, EventRecord, WebhookEndpoint,
};
use cobro_types::events::{AttemptView, DeliveryView, EVENT_TYPES, EventView, WebhookEndpointView};

/// Whether an address is on the public internet (not loopback, private, link-local, …).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let seg0 = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg0 == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || seg0 == 0x0064 && v6.segments()[1] == 0xff9b) // NAT64
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240) // reserved
}

/// Which non-public endpoint addresses are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddressPolicy {
    /// Any address (`webhooks.allow_private_addresses`).
    pub private: bool,
    /// Loopback addresses (the server listens on loopback only, or `private`).
    pub loopback: bool,
}

impl AddressPolicy {
    /// Whether a delivery may go to `ip`.
    pub fn allows(self, ip: IpAddr) -> bool {
        self.private || is_public(ip) || (self.loopback && is_loopback(ip))
    }
}

/// Loopback, including IPv4 loopback written as an IPv4-mapped IPv6 address.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Checks an endpoint URL against the policy; the error names what is wrong.
pub fn check_url(raw: &str, policy: AddressPolicy) -> Result<reqwest::Url, String> {
    if raw.len() > 2048 {
        return Err("url must be at most 2048 characters".into());
    }
    let url = reqwest::Url::parse(raw).map_err(|e| format!("url is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("url must start with https:// or http://".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not contain credentials".into());
    }
    let host = url.host().ok_or("url must have a host")?;
    if policy.private {
        return Ok(url);
    }
    let ip = match host {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if d == "localhost" || d.ends_with(".localhost") {
                Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
            } else {
                None
            }
        }
    };
    match ip {
        Some(ip) if !policy.allows(ip) => Err(format!(
            "url points at a non-public address ({ip}); the server does not allow private{} or link-local endpoints",
            if policy.loopback { "" } else { ", loopback" }
        )),
        _ => Ok(url),
    }
}

/// The dispatcher's DNS resolver: the system's answers minus the addresses the policy refuses.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnlyResolver {
    pub policy: AddressPolicy,
}

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let policy = self.policy;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| policy.allows(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Checks an event filter: known types, or `*`. Empty means all.
pub fn check_events(events: &[String]) -> Result<Vec<String>, String> {
    if events.is_empty() || events.iter().any(|e| e == ALL_EVENTS) {
        return Ok(vec![ALL_EVENTS.to_string()]);
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if !EVENT_TYPES.contains(&e.as_str()) {
            return Err(format!(
                "unknown event type {e:?}; expected \"*\" or one of {}",
                EVENT_TYPES.join(", ")
            ));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

/// The wire view of an endpoint (without its secret).
pub fn endpoint_view(e: &WebhookEndpoint) -> WebhookEndpointView {
    WebhookEndpointView {
        id: e.id.clone(),
        url: e.url.clone(),
        description: e.description.clone(),
        events: e.events.clone(),
        enabled: e.enabled,
        disabled_reason: e.disabled_reason.clone(),
        environment: e.environment,
        secret: None,
        previous_secret_expires_at: None,
        created_at: e.created_at,
        updated_at: e.updated_at,
    }
}

/// The wire view of an event: its delivery body, plus the purchase id.
pub fn event_view(e: &EventRecord) -> EventView {
    let data = serde_json::from_str::<serde_json::Value>(&e.payload)
        .ok()
        .and_then(|mut v| v.get_mut("data").map(serde_json::Value::take))
        .unwrap_or(serde_json::Value::Null);
    EventView {
        id: e.id.clone(),
        kind: e.kind.clone(),
        created_at: e.created_at,
        purchase_id: e.purchase_id.clone(),
        data,
    }
}

pub fn delivery_id(id: i64) -> String {
    format!("dlv_{id}")
}

pub fn delivery_view(d: &DeliveryRecord) -> DeliveryView {
    DeliveryView {
        id: delivery_id(d.id),
        endpoint_id: d.endpoint_id.clone(),
        status: d.status.as_str().to_string(),
        attempts: d.attempts,
        next_attempt_at: d.next_attempt_at,
        last_status_code: d.last_status_code,
        last_error: d.last_error.clone(),
        created_at: d.created_at,
        finished_at: d.finished_at,
    }
}

pub fn attempt_view(a: &AttemptRecord) -> AttemptView {
    AttemptView {
        delivery_id: delivery_id(a.delivery_id),
        endpoint_id: a.endpoint_id.clone(),
        attempt: a.attempt,
        attempted_at: a.attempted_at,
        status_code: a.status_code,
        latency_ms: a.latency_ms,
        error: a.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_loopback_urls_are_refused_unless_allowed() {
        for bad in [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://10.1.2.3/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
        ] {
            assert!(check_url(bad, PUBLIC).is_err(), "{bad}");
            assert!(check_url(bad, ANY).is_ok(), "{bad}");
        }
        assert!(check_url("https://hooks.example.com/x", PUBLIC).is_ok());
        assert!(check_url("https://8.8.8.8/x", PUBLIC).is_ok());
        assert!(check_url("ftp://example.com/", ANY).is_err());
        assert!(check_url("https://user:pw@example.com/", ANY).is_err());
        assert!(check_url("not a url", ANY).is_err());
    }

    const PUBLIC: AddressPolicy = AddressPolicy {
        private: false,
        loopback: false,
    };
    const ANY: AddressPolicy = AddressPolicy {
        private: true,
        loopback: true,
    };

    #[test]
    fn a_loopback_only_server_allows_loopback_endpoints_and_nothing_else_private() {
        let local = AddressPolicy {
            private: false,
            loopback: true,
        };
        for ok in [
            "http://127.0.0.1:8787/",
            "http://localhost:8787/",
            "http://[::1]:8787/",
            "http://[::ffff:127.0.0.1]/",
            "https://hooks.example.com/",
        ] {
            assert!(check_url(ok, local).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.1.2.3/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://0.0.0.0/",
            "http://[fe80::1]/",
        ] {
            assert!(check_url(bad, local).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_listen_addresses_are_recognised() {
        use crate::config::listens_on_loopback;
        assert!(listens_on_loopback("127.0.0.1:8080"));
        assert!(listens_on_loopback("[::1]:8080"));
        assert!(listens_on_loopback("localhost:8080"));
        assert!(!listens_on_loopback("0.0.0.0:8080"));
        assert!(!listens_on_loopback("[::]:8080"));
        assert!(!listens_on_loopback("10.0.0.5:8080"));
        assert!(!listens_on_loopback("example.com:8080"));
    }

    #[test]
    fn event_filters_accept_known_types_or_all() {
        assert_eq!(check_events(&[]).unwrap(), ["*"]);
        assert_eq!(
            check_events(&["sku-purchase.failed".into(), "sku-purchase.failed".into()]).unwrap(),
            ["sku-purchase.failed"]
        );
        assert!(check_events(&["sku-purchase.created".into()]).is_err());
    }
}
