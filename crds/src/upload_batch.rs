//! `UploadBatch`: one upload, from staged zip (or S3 prefix) to report.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The longest a batch may take: seven days from its creation.
pub const MAX_DEADLINE_SECONDS: i64 = 7 * 24 * 3600;

/// One upload of images to check and store. The gateway creates one per
/// HTTP upload; one applied by hand may point at any zip or prefix in
/// picsift's bucket. Per-image verdicts live in the report, not here.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "picsift.io",
    version = "v1alpha1",
    kind = "UploadBatch",
    doc = "One upload of images to check and store; its status shows the phase and verdict counts, its report every entry's verdict.",
    namespaced,
    status = "UploadBatchStatus",
    shortname = "ub",
    category = "picsift",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Accepted","type":"integer","jsonPath":".status.counts.accepted"}"#,
    printcolumn = r#"{"name":"Duplicate","type":"integer","jsonPath":".status.counts.duplicate"}"#,
    printcolumn = r#"{"name":"Rejected","type":"integer","jsonPath":".status.counts.rejected"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct UploadBatchSpec {
    /// Where the images are. Cannot change once set.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.source is immutable; create a new UploadBatch instead"))]
    pub source: Source,
    /// The tenant the batch belongs to: its images are that tenant's, and
    /// only that tenant's API keys (and admins) see it. The gateway sets
    /// it from the uploader's key; an UploadBatch applied by hand without
    /// it belongs to tenant `default`. Whoever may create UploadBatches may
    /// name any tenant: grant that (Kubernetes RBAC) to admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The ValidationPolicy (in this namespace) the batch is checked against.
    #[serde(default)]
    pub policy_ref: PolicyRef,
    /// Seconds from creation by which the batch must finish; entries not
    /// checked by then get `deadline_exceeded` and the batch ends Expired.
    /// Default and maximum: 604800 (7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0 && self <= 604800").message("deadlineSeconds must be between 1 and 604800 (7 days)"))]
    pub deadline_seconds: Option<i64>,
    /// Higher runs first when workers are scarce (reserved; batches are
    /// currently served in arrival order).
    #[serde(default)]
    pub priority: i32,
    /// Where to send the signed completion webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
}

/// Exactly one of `key` (a zip) or `prefix` (every object under it).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.key) != has(self.prefix)").message("set exactly one of source.key and source.prefix"))]
pub struct Source {
    /// Key of a zip archive in picsift's bucket. Archives under `staging/`
    /// were uploaded through the gateway and are deleted when the batch
    /// ends; any other object is left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A key prefix in picsift's bucket ending in `/`: every object under
    /// it is one entry. The objects are never deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.endsWith('/')").message("source.prefix must end with '/'"))]
    pub prefix: Option<String>,
}

impl Source {
    /// The blob key or prefix the catalog records for the batch.
    pub fn location(&self) -> Option<&str> {
        self.key.as_deref().or(self.prefix.as_deref())
    }
}

/// A reference to a ValidationPolicy in the batch's namespace.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct PolicyRef {
    /// The policy's name.
    pub name: String,
}

impl Default for PolicyRef {
    fn default() -> Self {
        Self {
            name: "default".into(),
        }
    }
}

/// The completion webhook (Standard Webhooks, signed with the installation's secret).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct Notification {
    /// An http or https URL.
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("notification.url must be an http(s) URL"))]
    pub url: String,
}

/// Where a batch is in its life.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchPhase {
    /// Waiting to be planned (or for a valid spec).
    Pending,
    /// Entries are being checked.
    Processing,
    /// Every entry has a verdict.
    Completed,
    /// The batch could not be processed (unreadable archive).
    Failed,
    /// The deadline passed first; unchecked entries got `deadline_exceeded`.
    Expired,
}

impl BatchPhase {
    /// Whether the batch has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Expired)
    }
}

/// Verdict counts, aggregated from the catalog.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BatchCounts {
    /// Entries in the source.
    #[schemars(range(min = 0))]
    pub total: i64,
    /// Stored images.
    #[schemars(range(min = 0))]
    pub accepted: i64,
    /// Duplicates of stored images.
    #[schemars(range(min = 0))]
    pub duplicate: i64,
    /// Refused entries.
    #[schemars(range(min = 0))]
    pub rejected: i64,
    /// Entries that failed for reasons not their own.
    #[schemars(range(min = 0))]
    pub failed: i64,
    /// Entries without a verdict yet.
    #[schemars(range(min = 0))]
    pub pending: i64,
}

/// What the operator last observed of the batch.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UploadBatchStatus {
    /// Pending, Processing, Completed, Failed or Expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BatchPhase>,
    /// The batch's id in the catalog and the HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Verdict counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<BatchCounts>,
    /// Whether the batch's chunk tasks were enqueued (they are enqueued once).
    #[serde(default)]
    pub enqueued: bool,
    /// When the deadline falls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Time>,
    /// When the pending count last went down (or the batch was last
    /// planned): a batch that stops progressing while the queue is empty
    /// lost its tasks and is planned again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_time: Option<Time>,
    /// When the batch ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Key of the NDJSON report in the bucket, once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_key: Option<String>,
    /// A human-readable note on the latest state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Ready (spec valid and accepted), Planned, Finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
