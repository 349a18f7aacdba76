//! Completion webhooks: a signed POST per finished batch, retried with
//! backoff; every attempt's outcome is recorded in the batch.
//!
//! A callback URL is the tenant's, the network the POST leaves from is
//! ours: every address the URL's host resolves to is checked at delivery
//! ([`picsift_core::callback_address`]), so loopback, private, link-local
//! (cloud metadata) and other internal addresses are never called unless
//! `webhook_allowed_networks` names them. The check sits in the HTTP
//! client's resolver, so the address checked is the address connected to
//! (no second lookup to rebind); redirects are not followed; and what a
//! tenant reads back in `notification.last_error` is one of three fixed
//! sentences, never the receiver's answer (details go to the log).

use ipnet::IpNet;
use picsift_core::Result;
use picsift_core::backend::Backends;
use picsift_core::backend::Delivery;
use picsift_core::model::BatchView;
use picsift_core::time::{Millis, now_ms};
use picsift_core::webhook::{self, Secret};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Webhook settings.
#[derive(Clone, Debug)]
pub struct NotifierConfig {
    /// The signing secret.
    pub secret: Secret,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Internal networks callbacks may reach all the same (a receiver in
    /// the cluster, a test's loopback server).
    pub allowed_networks: Vec<IpNet>,
}

impl NotifierConfig {
    /// Webhooks signed with `secret`, 10 s per attempt, internal addresses
    /// refused.
    pub fn new(secret: Secret) -> Self {
        Self {
            secret,
            timeout: Duration::from_secs(10),
            allowed_networks: Vec::new(),
        }
    }

    /// The same, with internal networks that callbacks may reach.
    pub fn allowing(mut self, networks: Vec<IpNet>) -> Self {
        self.allowed_networks = networks;
        self
    }
}

/// What a tenant reads when a delivery failed: fixed sentences that say
/// what to fix without telling what answered (no oracle for probing).
pub mod delivery_error {
    /// The URL's host resolves only to internal addresses.
    pub const REFUSED_ADDRESS: &str = "the callback URL's address is internal (loopback, private, link-local or similar) and not allowed; use a public address";
    /// Nothing answered: DNS, connection, TLS or timeout.
    pub const UNREACHABLE: &str = "the callback URL could not be reached";
    /// An answer that is not 2xx (a redirect included).
    pub const NOT_ACCEPTED: &str = "the receiver did not accept the delivery (its answer was not 2xx; redirects are not followed)";
}

/// Whether a callback may connect to `ip`: a public address, or one the
/// allow-list names; else the internal range it falls in.
pub fn permitted(ip: IpAddr, allowed: &[IpNet]) -> Result<(), &'static str> {
    let plain = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match picsift_core::callback_address::internal_range(plain) {
        Some(range)
            if !allowed
                .iter()
                .any(|n| n.contains(&plain) || n.contains(&ip)) =>
        {
            Err(range)
        }
        _ => Ok(()),
    }
}

/// The HTTP client's resolver: the system's lookup, keeping only the
/// addresses a callback may connect to.
struct GuardedResolver {
    allowed: Arc<Vec<IpNet>>,
}

/// Every address of a host was internal.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to internal addresses ({range})")]
struct RefusedAddress {
    host: String,
    range: &'static str,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = self.allowed.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let mut refused = None;
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| match permitted(a.ip(), &allowed) {
                    Ok(()) => true,
                    Err(range) => {
                        refused = Some(range);
                        false
                    }
                })
                .collect();
            match (addrs.is_empty(), refused) {
                (true, Some(range)) => Err(Box::new(RefusedAddress { host, range }) as _),
                _ => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// Why a delivery failed: the tenant's sentence and the log's detail.
fn classify(sent: &Result<reqwest::Response, reqwest::Error>) -> Option<(&'static str, String)> {
    match sent {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some((
            delivery_error::NOT_ACCEPTED,
            format!("receiver answered {}", r.status()),
        )),
        Err(e) => {
            let mut source: Option<&dyn std::error::Error> = Some(e);
            while let Some(err) = source {
                if err.is::<RefusedAddress>() {
                    return Some((delivery_error::REFUSED_ADDRESS, err.to_string()));
                }
                source = err.source();
            }
            Some((delivery_error::UNREACHABLE, format!("{e:?}")))
        }
    }
}

/// A URL whose host is an IP literal is checked here: the resolver is
/// not asked for those.
fn literal_refused(url: &str, allowed: &[IpNet]) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    permitted(ip, allowed)
        .err()
        .map(|range| format!("{ip} is internal ({range})"))
}

/// Delivers due webhooks.
pub struct Notifier {
    backends: Backends,
    config: NotifierConfig,
    http: reqwest::Client,
}

impl Notifier {
    /// A notifier; fails only if the HTTP client cannot be built.
    pub fn new(backends: Backends, config: NotifierConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(GuardedResolver {
                allowed: Arc::new(config.allowed_networks.clone()),
            })
            .build()?;
        Ok(Self {
            backends,
            config,
            http,
        })
    }

    /// Delivers everything due now; returns how many attempts were made.
    pub async fn deliver_due(&self, now: Millis) -> Result<usize> {
        let due = self.backends.catalog.due_notifications(now).await?;
        for batch in &due {
            let Some(url) = &batch.callback_url else {
                continue;
            };
            let counts = self.backends.catalog.counts(&batch.id).await?;
            let body = serde_json::json!({
                "type": format!("batch.{}", batch.phase.as_str()),
                "timestamp": picsift_core::time::rfc3339(now),
                "data": BatchView::new(batch, counts),
            });
            let body = serde_json::to_vec(&body).unwrap_or_default();
            let msg_id = format!("msg_{}", batch.id);
            let ts = now / 1000;
            let signature = self.config.secret.sign(&msg_id, ts, &body);
            let attempt = batch.notify_attempts + 1;
            let failure = match literal_refused(url, &self.config.allowed_networks) {
                Some(detail) => Some((delivery_error::REFUSED_ADDRESS, detail)),
                None => classify(
                    &self
                        .http
                        .post(url)
                        .header("content-type", "application/json")
                        .header("webhook-id", &msg_id)
                        .header("webhook-timestamp", ts.to_string())
                        .header("webhook-signature", signature)
                        .body(body)
                        .send()
                        .await,
                ),
            };
            let outcome = match failure {
                None => Delivery::Delivered { at: now_ms() },
                Some((error, detail)) => {
                    let next_at = webhook::next_attempt(attempt, now_ms());
                    tracing::warn!(
                        batch = batch.id,
                        attempt,
                        error = detail,
                        retry = next_at.is_some(),
                        "webhook delivery failed"
                    );
                    Delivery::Failed {
                        error: error.to_string(),
                        next_at,
                    }
                }
            };
            self.backends
                .catalog
                .record_delivery(&batch.id, &outcome, now_ms())
                .await?;
        }
        Ok(due.len())
    }

    /// Delivers webhooks until `stop`, waking on `completed` or every 500 ms.
    pub async fn run(self, completed: Arc<Notify>, stop: CancellationToken) {
        loop {
            if let Err(e) = self.deliver_due(now_ms()).await {
                tracing::error!(error = %e, "webhook delivery loop failed");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = completed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_pass_only_when_an_allowed_network_names_them() {
        let nets =
            |list: &[&str]| -> Vec<IpNet> { list.iter().map(|n| n.parse().unwrap()).collect() };
        // (address, allowed networks, permitted)
        let cases = [
            ("8.8.8.8", nets(&[]), true),
            ("127.0.0.1", nets(&[]), false),
            ("127.0.0.1", nets(&["127.0.0.1/32"]), true),
            ("127.0.0.2", nets(&["127.0.0.1/32"]), false),
            ("10.3.0.7", nets(&["10.3.0.0/16"]), true),
            ("169.254.169.254", nets(&["10.0.0.0/8"]), false),
            // An IPv4-mapped address is judged, and allowed, as IPv4.
            ("::ffff:127.0.0.1", nets(&[]), false),
            ("::ffff:127.0.0.1", nets(&["127.0.0.0/8"]), true),
            ("::1", nets(&["127.0.0.0/8"]), false),
            ("::1", nets(&["::1/128"]), true),
            ("fd00::5", nets(&["fd00::/8"]), true),
        ];
        for (addr, allowed, ok) in cases {
            let ip: IpAddr = addr.parse().unwrap();
            assert_eq!(
                permitted(ip, &allowed).is_ok(),
                ok,
                "{addr} with {allowed:?}"
            );
        }
    }

    #[test]
    fn ip_literal_hosts_are_checked_without_the_resolver() {
        let none: Vec<IpNet> = Vec::new();
        assert!(literal_refused("http://127.0.0.1:9/x", &none).is_some());
        assert!(literal_refused("http://[::1]:9/x", &none).is_some());
        assert!(literal_refused("http://169.254.169.254/latest/meta-data", &none).is_some());
        assert!(literal_refused("https://8.8.8.8/x", &none).is_none());
        // Names go through the resolver instead.
        assert!(literal_refused("http://localhost:9/x", &none).is_none());
        let lo: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(literal_refused("http://127.0.0.1:9/x", &lo).is_none());
    }
}
