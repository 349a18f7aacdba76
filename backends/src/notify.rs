//! Completion webhooks: a signed POST per finished batch, retried with
//! backoff; every attempt's outcome is recorded in the batch.

use picsift_core::Result;
use picsift_core::backend::Backends;
use picsift_core::backend::Delivery;
use picsift_core::model::BatchView;
use picsift_core::time::{Millis, now_ms};
use picsift_core::webhook::{self, Secret};
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
}

impl NotifierConfig {
    /// Webhooks signed with `secret`, 10 s per attempt.
    pub fn new(secret: Secret) -> Self {
        Self {
            secret,
            timeout: Duration::from_secs(10),
        }
    }
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
            let sent = self
                .http
                .post(url)
                .header("content-type", "application/json")
                .header("webhook-id", &msg_id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", signature)
                .body(body)
                .send()
                .await;
            let attempt = batch.notify_attempts + 1;
            let outcome = match sent {
                Ok(r) if r.status().is_success() => Delivery::Delivered { at: now_ms() },
                Ok(r) => Delivery::Failed {
                    error: format!("receiver answered {}", r.status()),
                    next_at: webhook::next_attempt(attempt, now_ms()),
                },
                Err(e) => Delivery::Failed {
                    error: format!("delivery failed: {e}"),
                    next_at: webhook::next_attempt(attempt, now_ms()),
                },
            };
            if let Delivery::Failed { error, next_at } = &outcome {
                tracing::warn!(
                    batch = batch.id,
                    attempt,
                    error,
                    retry = next_at.is_some(),
                    "webhook delivery failed"
                );
            }
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
