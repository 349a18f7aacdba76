//! `WorkerPool`: what cluster admins tune about the workers the operator runs.

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A pool of worker Jobs the operator scales with the backlog of chunk
/// tasks, like a ScaledJob: running plus pending workers follow
/// `backlog / targetBacklogPerWorker` within `minWorkers` and `maxWorkers`,
/// and idle workers exit (scale to zero).
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "picsift.io",
    version = "v1alpha1",
    kind = "WorkerPool",
    doc = "A pool of picsift worker Jobs that the operator scales with the backlog of chunk tasks.",
    status = "WorkerPoolStatus",
    shortname = "wp",
    category = "picsift",
    printcolumn = r#"{"name":"Min","type":"integer","jsonPath":".spec.minWorkers"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.maxWorkers"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desired"}"#,
    printcolumn = r#"{"name":"Running","type":"integer","jsonPath":".status.running"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","jsonPath":".status.pending"}"#,
    printcolumn = r#"{"name":"Backlog","type":"integer","jsonPath":".status.backlog"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.minWorkers <= self.maxWorkers").message("minWorkers must not exceed maxWorkers"))]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolSpec {
    /// Workers kept even with no backlog (0 lets the pool scale to zero).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_workers: i32,
    /// Most workers at once, running and pending together.
    #[serde(default = "default_max_workers")]
    #[schemars(range(min = 0))]
    pub max_workers: i32,
    /// Chunk tasks waiting per worker before another worker is started.
    #[serde(default = "default_target_backlog")]
    #[schemars(range(min = 1))]
    pub target_backlog_per_worker: i32,
    /// Seconds a worker waits without a task before it exits.
    #[serde(default = "default_idle_timeout")]
    #[schemars(range(min = 0))]
    pub idle_timeout_seconds: i64,
    /// Namespace of the worker Jobs; defaults to the operator's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The picsift container image the workers run.
    pub image: String,
    /// Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// The accelerator each worker asks for; none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
    /// CPU and memory requests and limits of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the worker pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the worker pods tolerate (GPU nodes are often tainted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// PriorityClass of the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Kueue LocalQueue: set as the `kueue.x-k8s.io/queue-name` label of
    /// every Job, so Kueue admits them against its quotas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kueue_queue_name: Option<String>,
    /// ServiceAccount of the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Environment of the worker container (picsift's PICSIFT_* settings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// ConfigMaps and Secrets whose keys become environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn default_max_workers() -> i32 {
    10
}
fn default_target_backlog() -> i32 {
    4
}
fn default_idle_timeout() -> i64 {
    300
}

/// An extended resource each worker requests, such as `nvidia.com/gpu`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Gpu {
    /// The resource name the device plugin advertises.
    pub resource_name: String,
    /// How many per worker.
    #[schemars(range(min = 1))]
    pub count: i32,
}

/// What the autoscaler decided and saw.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolStatus {
    /// Workers the backlog calls for, within the bounds.
    #[schemars(range(min = 0))]
    pub desired: i32,
    /// Worker pods running.
    #[schemars(range(min = 0))]
    pub running: i32,
    /// Worker pods not running yet (unscheduled, pulling, or suspended by Kueue).
    #[schemars(range(min = 0))]
    pub pending: i32,
    /// This pool's share of the chunk tasks waiting in the queue (every
    /// pool's workers take from the one queue, so the backlog is split
    /// between the pools in proportion to their `maxWorkers`).
    #[schemars(range(min = 0))]
    pub backlog: i64,
    /// Worker Jobs that failed in a row (reset when a worker ends well).
    /// While it is above zero the pool waits, exponentially longer, before
    /// it starts another worker, and keeps the failed Jobs for their logs.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0))]
    pub consecutive_failures: i32,
    /// When the last worker Job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
