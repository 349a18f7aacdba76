//! The worker Job a WorkerPool slot runs. Pure.

use crate::{POOL_LABEL, SLOT_LABEL};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use picsift_crds::WorkerPoolSpec;
use std::collections::BTreeMap;

/// The deterministic name of a pool's worker Job in `slot`.
pub fn job_name(pool: &str, slot: u32) -> String {
    format!("{pool}-worker-{slot}")
}

/// The Job for `slot` of the pool `pool` (uid `pool_uid`) in `namespace`.
///
/// Slots below `minWorkers` never time out (the pool keeps them); the rest
/// exit after the pool's idle timeout. The pod has no Kubernetes API
/// access, runs as non-root with a read-only root filesystem (a writable
/// `/tmp` emptyDir, where CUDA keeps its kernel cache: the worker image
/// sets `CUDA_CACHE_PATH` there), and does not deliver webhooks or plan
/// batches (the operator does).
pub fn worker_job(
    pool: &str,
    pool_uid: &str,
    spec: &WorkerPoolSpec,
    slot: u32,
    namespace: &str,
) -> Job {
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "picsift".to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            "worker".to_string(),
        ),
        (POOL_LABEL.to_string(), pool.to_string()),
        (SLOT_LABEL.to_string(), slot.to_string()),
    ]);
    let pod_labels = labels.clone();
    if let Some(queue) = &spec.kueue_queue_name {
        labels.insert("kueue.x-k8s.io/queue-name".into(), queue.clone());
    }
    let keep = i64::from(slot) < i64::from(spec.min_workers);
    let idle = if keep { 0 } else { spec.idle_timeout_seconds };
    let mut env = vec![
        EnvVar {
            name: "PICSIFT_WORKER_IDLE_TIMEOUT_SECS".into(),
            value: Some(idle.to_string()),
            ..EnvVar::default()
        },
        EnvVar {
            name: "PICSIFT_KUBERNETES_ENABLED".into(),
            value: Some("true".into()),
            ..EnvVar::default()
        },
    ];
    env.extend(spec.env.iter().cloned());
    let mut resources = spec.resources.clone().unwrap_or_default();
    if let Some(gpu) = &spec.gpu {
        let q = Quantity(gpu.count.to_string());
        for side in [&mut resources.limits, &mut resources.requests] {
            side.get_or_insert_with(BTreeMap::new)
                .insert(gpu.resource_name.clone(), q.clone());
        }
    }
    let resources = (resources != ResourceRequirements::default()).then_some(resources);
    let container = Container {
        name: "worker".into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.clone(),
        args: Some(vec!["worker".into()]),
        env: Some(env),
        env_from: (!spec.env_from.is_empty()).then(|| spec.env_from.clone()),
        resources,
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let mut job = Job {
        metadata: ObjectMeta {
            name: Some(job_name(pool, slot)),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "picsift.io/v1alpha1".into(),
                kind: "WorkerPool".into(),
                name: pool.into(),
                uid: pool_uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            // A crashed worker is not retried in place: its tasks come back
            // through the queue, and the autoscaler starts a new Job.
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    node_selector: (!spec.node_selector.is_empty())
                        .then(|| spec.node_selector.clone()),
                    tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
                    priority_class_name: spec.priority_class_name.clone(),
                    service_account_name: spec.service_account_name.clone(),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        // The chart's default user for every picsift pod,
                        // and the user of the worker image.
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    };
    // The template's fingerprint: a Job whose label differs was made from
    // an older pool spec and is replaced.
    let fingerprint = template_hash(&job);
    if let Some(labels) = job.metadata.labels.as_mut() {
        labels.insert(TEMPLATE_LABEL.to_string(), fingerprint);
    }
    job
}

/// Label of worker Jobs: the fingerprint of the template they were made from.
pub const TEMPLATE_LABEL: &str = "picsift.io/template";

fn template_hash(job: &Job) -> String {
    use sha2::Digest;
    let spec = serde_json::to_vec(&job.spec).unwrap_or_default();
    hex::encode(&sha2::Sha256::digest(&spec)[..8])
}

/// Whether `job` was made from the template `expected` would be.
pub fn is_current(job: &Job, expected: &Job) -> bool {
    let label = |j: &Job| j.metadata.labels.as_ref()?.get(TEMPLATE_LABEL).cloned();
    label(job).is_some() && label(job) == label(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> WorkerPoolSpec {
        serde_json::from_value(serde_json::json!({
            "minWorkers": 1, "maxWorkers": 4, "idleTimeoutSeconds": 120,
            "image": "picsift/worker:1",
            "gpu": {"resourceName": "nvidia.com/gpu", "count": 1},
            "resources": {"requests": {"cpu": "2"}},
            "nodeSelector": {"gpu": "yes"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "batch",
            "kueueQueueName": "gpu-queue",
            "envFrom": [{"configMapRef": {"name": "picsift-config"}}]
        }))
        .unwrap()
    }

    #[test]
    fn job_carries_the_pool_template() {
        let job = worker_job("gpu", "uid-1", &pool(), 2, "picsift");
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["metadata"]["name"], "gpu-worker-2");
        assert_eq!(
            v["metadata"]["labels"]["kueue.x-k8s.io/queue-name"],
            "gpu-queue"
        );
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        let pod = &v["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "picsift/worker:1");
        assert_eq!(c["args"][0], "worker");
        assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
        assert_eq!(c["resources"]["requests"]["nvidia.com/gpu"], "1");
        assert_eq!(c["resources"]["requests"]["cpu"], "2");
        assert_eq!(pod["nodeSelector"]["gpu"], "yes");
        assert_eq!(pod["tolerations"][0]["key"], "nvidia.com/gpu");
        assert_eq!(pod["priorityClassName"], "batch");
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(c["envFrom"][0]["configMapRef"]["name"], "picsift-config");
        // A read-only root with one writable path, as the container test
        // runs the worker image (tests/tests/containers.rs).
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            c["volumeMounts"],
            serde_json::json!([{"name": "tmp", "mountPath": "/tmp"}])
        );
        assert_eq!(
            pod["volumes"],
            serde_json::json!([{"name": "tmp", "emptyDir": {}}])
        );
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        assert_eq!(pod["securityContext"]["runAsGroup"], 65532);
        let idle = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "PICSIFT_WORKER_IDLE_TIMEOUT_SECS")
            .unwrap();
        assert_eq!(idle["value"], "120");
    }

    #[test]
    fn slots_below_min_workers_never_time_out() {
        let job = worker_job("gpu", "uid-1", &pool(), 0, "picsift");
        let v = serde_json::to_value(&job).unwrap();
        let env = &v["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env[0]["name"], "PICSIFT_WORKER_IDLE_TIMEOUT_SECS");
        assert_eq!(env[0]["value"], "0");
    }

    #[test]
    fn nothing_gpu_specific_without_a_gpu() {
        let mut spec = pool();
        spec.gpu = None;
        spec.resources = None;
        let v = serde_json::to_value(worker_job("cpu", "u", &spec, 0, "ns")).unwrap();
        assert!(v["spec"]["template"]["spec"]["containers"][0]["resources"].is_null());
    }

    #[test]
    fn the_template_label_tells_jobs_of_an_older_spec() {
        let spec = pool();
        let job = worker_job("gpu", "u", &spec, 2, "ns");
        assert!(is_current(&job, &worker_job("gpu", "u", &spec, 2, "ns")));
        let mut newer = spec.clone();
        newer.image = "picsift/worker:2".into();
        assert!(!is_current(&job, &worker_job("gpu", "u", &newer, 2, "ns")));
        // Lowering minWorkers turns a kept slot into one that times out.
        let kept = worker_job("gpu", "u", &spec, 0, "ns");
        let mut fewer = spec.clone();
        fewer.min_workers = 0;
        assert!(!is_current(&kept, &worker_job("gpu", "u", &fewer, 0, "ns")));
        let mut unlabelled = job.clone();
        unlabelled.metadata.labels = None;
        assert!(!is_current(&unlabelled, &job));
    }
}
