//! The configuration file of `picsift gateway`, `picsift worker` and
//! `picsift reindex`: TOML, every key overridable by an environment
//! variable `PICSIFT_<SECTION>_<KEY>` (top-level keys: `PICSIFT_<KEY>`).
//! docs/configuration.md documents each key; a test keeps the two in step.

use anyhow::Context;
use picsift_backends::cluster::S3Config;
use picsift_core::format::Format;
use picsift_core::policy::{
    Animation, AuditPolicy, DedupScope, GainMaps, ModelSpec, Policy, QualityPolicy, Sanitize,
};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

/// Everything the cluster processes read.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// Webhook signing secret (`whsec_` + base64, or any text).
    pub webhook_secret: String,
    /// Internal networks (CIDR) completion webhooks may reach; every other
    /// internal address is refused.
    pub webhook_allowed_networks: Vec<ipnet::IpNet>,
    /// Limits and formats.
    pub policy: PolicyConfig,
    /// The object store.
    pub s3: S3Section,
    /// Dedup claims and the work queue.
    pub redis: RedisSection,
    /// The catalog.
    pub postgres: PostgresSection,
    /// Worker behaviour.
    pub worker: WorkerSection,
    /// `[kubernetes]`: running under the operator.
    pub kubernetes: KubernetesSection,
    /// `[operator]`: `picsift operator`.
    pub operator: OperatorSection,
    /// `[ml]`: the quality and ML checks' device and batching.
    pub ml: MlSection,
    /// `[limits]`: per-tenant request rates and quotas.
    pub limits: LimitsSection,
}

/// `[limits]`: per-tenant limits (admin keys are exempt); 0 turns one off.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Requests a second per tenant, on average.
    pub requests_per_second: f64,
    /// Requests a tenant may make at once above that rate.
    pub burst: f64,
    /// Batches a tenant may have received or processing at once.
    pub max_open_batches: u64,
    /// Bytes a tenant may upload per calendar month (UTC).
    pub max_bytes_per_month: u64,
    /// Seconds a client has to send a request's head.
    pub header_timeout_secs: u64,
    /// Longest pause, in seconds, within a request body.
    pub body_idle_timeout_secs: u64,
    /// Connections served at once.
    pub max_connections: usize,
    /// Requests handled at once (more get 503).
    pub max_requests: usize,
    /// Seconds an unfinished resumable upload (tus, direct) is kept before
    /// its parts are dropped.
    pub upload_expiry_secs: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let d = picsift_gateway::TenantLimits::default();
        let t = picsift_gateway::Transport::default();
        Self {
            requests_per_second: d.requests.map_or(0.0, |r| r.per_second),
            burst: d.requests.map_or(0.0, |r| r.burst),
            max_open_batches: d.max_open_batches.unwrap_or(0),
            max_bytes_per_month: d.max_bytes_per_month.unwrap_or(0),
            header_timeout_secs: t.header_timeout.as_secs(),
            body_idle_timeout_secs: t.body_idle_timeout.as_secs(),
            max_connections: t.max_connections,
            max_requests: t.max_requests,
            upload_expiry_secs: d.upload_ttl_ms as u64 / 1000,
        }
    }
}

impl LimitsSection {
    /// The gateway's limits.
    pub fn tenant_limits(&self) -> picsift_gateway::TenantLimits {
        let on = |v: u64| (v > 0).then_some(v);
        picsift_gateway::TenantLimits {
            requests: (self.requests_per_second > 0.0).then(|| picsift_core::rate::Rate {
                per_second: self.requests_per_second,
                burst: self.burst.max(1.0),
            }),
            max_open_batches: on(self.max_open_batches),
            max_bytes_per_month: on(self.max_bytes_per_month),
            upload_ttl_ms: (self.upload_expiry_secs.max(1) as i64).saturating_mul(1000),
        }
    }

    /// The server's transport limits.
    pub fn transport(&self) -> picsift_gateway::Transport {
        picsift_gateway::Transport {
            header_timeout: std::time::Duration::from_secs(self.header_timeout_secs.max(1)),
            body_idle_timeout: std::time::Duration::from_secs(self.body_idle_timeout_secs.max(1)),
            max_connections: self.max_connections.max(1),
            max_requests: self.max_requests.max(1),
        }
    }
}

/// `[policy]`: what is accepted.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Accepted formats: jpeg, png, webp, heic, avif.
    pub formats: Vec<String>,
    /// Largest upload, bytes.
    pub max_upload_bytes: u64,
    /// Most entries per archive.
    pub max_entries: u64,
    /// Most bytes one entry may inflate to.
    pub max_entry_bytes: u64,
    /// Most pixels per image.
    pub max_pixels: u64,
    /// Refuse near duplicates (PDQ).
    pub near_duplicates: bool,
    /// Most PDQ bits apart that count as the same picture (at most 31).
    pub near_distance: u32,
    /// `[policy.quality]`: quality thresholds (0 turns a minimum off, 1 a maximum).
    pub quality: QualityPolicy,
    /// `[[policy.models]]`: TorchScript models every image must pass.
    pub models: Vec<ModelSpec>,
    /// Fraction of each batch's entries copied to the audit area.
    pub audit_sample_rate: f64,
    /// Duplicates among every tenant's images (`global`) or the uploader's (`tenant`).
    pub dedup_scope: DedupScope,
    /// Every tenant may list and download every stored image.
    pub shared_images: bool,
    /// `strip` metadata losslessly, or `reencode` the decoded pixels.
    pub sanitize: Sanitize,
    /// An HDR photo's gain map: `drop` it, or `keep` it validated.
    pub gain_maps: GainMaps,
    /// An animated PNG: store its checked `still`, or `refuse` it.
    pub animation: Animation,
}

/// A policy file for `picsift serve --policy`: a `[policy]` table's keys
/// at the top level. Relative model paths are taken from the file's folder.
#[cfg(feature = "ml")]
pub fn policy_file(path: &std::path::Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the policy file {}", path.display()))?;
    let mut section: PolicyConfig = toml::from_str(&text).with_context(|| {
        format!(
            "invalid policy file {} (see docs/configuration.md)",
            path.display()
        )
    })?;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    for model in &mut section.models {
        if !model.source.starts_with("blob:") && std::path::Path::new(&model.source).is_relative() {
            model.source = dir.join(&model.source).to_string_lossy().into_owned();
        }
    }
    Config {
        policy: section,
        ..Config::default()
    }
    .policy()
}

/// `[ml]`: where and how the models run.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlSection {
    /// `auto` (a CUDA GPU when there is one), `cpu` or `cuda`.
    pub device: String,
    /// Most images per forward pass.
    pub batch_size: usize,
    /// Milliseconds a partial batch waits for more images.
    pub max_wait_ms: u64,
}

impl Default for MlSection {
    /// `picsift_ml::Options::default()`, written out so that the gateway's
    /// and operator's build (no `ml` feature) reads the same file; a test
    /// keeps the two equal.
    fn default() -> Self {
        Self {
            device: "auto".into(),
            batch_size: 32,
            max_wait_ms: 5,
        }
    }
}

#[cfg(feature = "ml")]
impl MlSection {
    /// The runtime these settings describe (nothing is loaded yet).
    pub fn runtime(&self) -> anyhow::Result<picsift_ml::Runtime> {
        let device = self.device.parse().map_err(anyhow::Error::msg)?;
        Ok(picsift_ml::Runtime::new(picsift_ml::Options {
            device,
            batch_size: self.batch_size,
            max_wait: std::time::Duration::from_millis(self.max_wait_ms),
        })?)
    }
}

/// `[s3]`: see [`S3Config`].
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Section {
    /// Endpoint URL; empty for AWS.
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// Key prefix inside the bucket.
    pub prefix: String,
    /// Path-style addressing.
    pub path_style: bool,
    /// Multipart part size, bytes.
    pub part_size: u64,
    /// Redirect downloads to presigned URLs.
    pub presign_downloads: bool,
    /// Presigned URL lifetime, seconds.
    pub presign_ttl_secs: u64,
    /// Static access key id (empty: the AWS credential chain).
    pub access_key_id: String,
    /// Static secret access key.
    pub secret_access_key: String,
}

/// `[redis]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSection {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key picsift writes.
    pub prefix: String,
    /// A task not acked this long after delivery is delivered again, ms.
    pub visibility_timeout_ms: u64,
}

/// `[postgres]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSection {
    /// `postgres://user:password@host:port/db`.
    pub url: String,
    /// Pool size per process.
    pub max_connections: u32,
}

/// `[worker]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSection {
    /// Chunks processed at once per worker process (0: one per core).
    pub concurrency: usize,
    /// Deliveries of a chunk before it is dead-lettered.
    pub max_deliveries: u32,
    /// Dedup claim lease, ms: how long a crashed worker's claim blocks others.
    pub lease_ms: i64,
    /// Most entries per chunk.
    pub chunk_entries: usize,
    /// Most compressed bytes per chunk.
    pub chunk_bytes: u64,
    /// Seconds without a task after which the worker exits (0: never).
    /// Worker Jobs get their WorkerPool's `idleTimeoutSeconds`.
    pub idle_timeout_secs: u64,
    /// On SIGTERM, seconds the worker may take to finish the chunks in
    /// hand before it exits anyway (keep it below the pod's
    /// `terminationGracePeriodSeconds`, 30 by default).
    pub drain_secs: u64,
}

/// `[kubernetes]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesSection {
    /// Run as part of a Kubernetes installation: the gateway hands batches
    /// to the operator as UploadBatch objects, and planning, re-planning and
    /// notifications are the operator's, not the workers'.
    pub enabled: bool,
    /// Namespace of the gateway's UploadBatches and ValidationPolicies
    /// (empty: the namespace of the service account, else `default`).
    pub namespace: String,
    /// The ValidationPolicy an upload uses when it names none.
    pub default_policy: String,
}

/// `[operator]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperatorSection {
    /// Address of /metrics, /livez and /readyz.
    pub metrics_listen: SocketAddr,
    /// Seconds a finished UploadBatch is kept before it is deleted (its
    /// record stays in the catalog).
    pub ttl_secs_after_finished: u64,
    /// Name of the Lease used for leader election.
    pub lease_name: String,
}

impl Default for KubernetesSection {
    fn default() -> Self {
        Self {
            enabled: false,
            namespace: String::new(),
            default_policy: "default".into(),
        }
    }
}

impl Default for OperatorSection {
    fn default() -> Self {
        Self {
            metrics_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            ttl_secs_after_finished: 86_400,
            lease_name: "picsift-operator".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080"
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080))),
            webhook_secret: String::new(),
            webhook_allowed_networks: Vec::new(),
            policy: PolicyConfig::default(),
            s3: S3Section::default(),
            redis: RedisSection::default(),
            postgres: PostgresSection::default(),
            worker: WorkerSection::default(),
            kubernetes: KubernetesSection::default(),
            operator: OperatorSection::default(),
            ml: MlSection::default(),
            limits: LimitsSection::default(),
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let p = Policy::default();
        Self {
            formats: p
                .allowed_formats
                .iter()
                .map(|f| f.as_str().to_string())
                .collect(),
            max_upload_bytes: p.max_upload_bytes,
            max_entries: p.max_entries,
            max_entry_bytes: p.max_entry_bytes,
            max_pixels: p.max_pixels,
            near_duplicates: p.near_duplicate_distance.is_some(),
            near_distance: p.near_duplicate_distance.unwrap_or(31),
            quality: p.quality,
            models: p.models,
            audit_sample_rate: p.audit.sample_rate,
            dedup_scope: p.dedup_scope,
            shared_images: p.shared_images,
            sanitize: p.sanitize,
            gain_maps: p.gain_maps,
            animation: p.animation,
        }
    }
}

impl Default for S3Section {
    fn default() -> Self {
        let c = S3Config::default();
        Self {
            endpoint: c.endpoint,
            region: c.region,
            bucket: c.bucket,
            prefix: c.prefix,
            path_style: c.path_style,
            part_size: c.part_size as u64,
            presign_downloads: c.presign_downloads,
            presign_ttl_secs: c.presign_ttl_secs,
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
        }
    }
}

impl Default for RedisSection {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            prefix: "picsift:".into(),
            visibility_timeout_ms: 300_000,
        }
    }
}

impl Default for PostgresSection {
    fn default() -> Self {
        Self {
            url: "postgres://picsift@127.0.0.1:5432/picsift".into(),
            max_connections: 8,
        }
    }
}

impl Default for WorkerSection {
    fn default() -> Self {
        let chunks = picsift_core::chunk::ChunkLimits::default();
        Self {
            concurrency: 0,
            max_deliveries: picsift_core::chunk::DEFAULT_MAX_DELIVERIES,
            lease_ms: picsift_core::dedup::DEFAULT_LEASE_MS,
            chunk_entries: chunks.max_entries,
            chunk_bytes: chunks.max_bytes,
            idle_timeout_secs: 0,
            drain_secs: 25,
        }
    }
}

impl Config {
    /// Reads `path` (if given) and applies `PICSIFT_*` overrides from `env`.
    pub fn load(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut table: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| {
                    format!("cannot read the configuration file {}", p.display())
                })?;
                toml::from_str(&text)
                    .with_context(|| format!("{} is not valid TOML", p.display()))?
            }
            None => toml::Table::new(),
        };
        // Every key the defaults have may be overridden; the defaults'
        // shape is the list of keys.
        let defaults = toml::Table::try_from(Config::default()).context("defaults serialise")?;
        for (key, value) in &defaults {
            match value {
                toml::Value::Table(section) => {
                    for (sub, sub_default) in section {
                        if let Some(v) = env(&format!(
                            "PICSIFT_{}_{}",
                            key.to_uppercase(),
                            sub.to_uppercase()
                        )) {
                            let entry = table
                                .entry(key.clone())
                                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                            if let toml::Value::Table(t) = entry {
                                t.insert(sub.clone(), env_value(&v, sub_default));
                            }
                        }
                    }
                }
                other => {
                    if let Some(v) = env(&format!("PICSIFT_{}", key.to_uppercase())) {
                        table.insert(key.clone(), env_value(&v, other));
                    }
                }
            }
        }
        toml::Value::Table(table)
            .try_into()
            .context("invalid configuration (see docs/configuration.md)")
    }

    /// The validation policy.
    pub fn policy(&self) -> anyhow::Result<Policy> {
        let allowed_formats = self
            .policy
            .formats
            .iter()
            .map(|f| {
                Format::parse(f).with_context(|| {
                    format!("unknown format {f:?} in policy.formats: use jpeg, png or webp")
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let q = &self.policy.quality;
        Ok(Policy {
            allowed_formats,
            max_upload_bytes: self.policy.max_upload_bytes,
            max_entries: self.policy.max_entries,
            max_entry_bytes: self.policy.max_entry_bytes,
            max_pixels: self.policy.max_pixels,
            near_duplicate_distance: self
                .policy
                .near_duplicates
                .then_some(self.policy.near_distance.min(31)),
            quality: QualityPolicy {
                min_contrast: q.min_contrast.filter(|v| *v > 0.0),
                min_sharpness: q.min_sharpness.filter(|v| *v > 0.0),
                max_overexposed: q.max_overexposed.filter(|v| *v < 1.0),
                max_underexposed: q.max_underexposed.filter(|v| *v < 1.0),
            },
            models: self.policy.models.clone(),
            audit: AuditPolicy {
                sample_rate: self.policy.audit_sample_rate.clamp(0.0, 1.0),
            },
            dedup_scope: self.policy.dedup_scope,
            shared_images: self.policy.shared_images,
            sanitize: self.policy.sanitize,
            gain_maps: self.policy.gain_maps,
            animation: self.policy.animation,
            spelling: picsift_core::setting::Spelling::ConfigFile,
            ..Policy::default()
        })
    }

    /// Webhook delivery: the signing secret and the allowed networks.
    pub fn notifier(&self) -> picsift_backends::notify::NotifierConfig {
        picsift_backends::notify::NotifierConfig::new(picsift_core::webhook::Secret::parse(
            &self.webhook_secret,
        ))
        .allowing(self.webhook_allowed_networks.clone())
    }

    /// The S3 settings.
    pub fn s3(&self) -> S3Config {
        let s = &self.s3;
        S3Config {
            endpoint: s.endpoint.clone(),
            region: s.region.clone(),
            bucket: s.bucket.clone(),
            prefix: s.prefix.clone(),
            path_style: s.path_style,
            part_size: s.part_size as usize,
            presign_downloads: s.presign_downloads,
            presign_ttl_secs: s.presign_ttl_secs,
            access_key_id: s.access_key_id.clone(),
            secret_access_key: s.secret_access_key.clone(),
        }
    }
}

/// An environment value typed like the key's default: numbers and booleans
/// parse as such, lists split on commas, everything else is a string.
fn env_value(text: &str, like: &toml::Value) -> toml::Value {
    match like {
        toml::Value::Integer(_) => text
            .trim()
            .parse()
            .map(toml::Value::Integer)
            .unwrap_or_else(|_| toml::Value::String(text.into())),
        toml::Value::Float(_) => text
            .trim()
            .parse()
            .map(toml::Value::Float)
            .unwrap_or_else(|_| toml::Value::String(text.into())),
        toml::Value::Boolean(_) => text
            .trim()
            .parse()
            .map(toml::Value::Boolean)
            .unwrap_or_else(|_| toml::Value::String(text.into())),
        toml::Value::Array(_) => toml::Value::Array(
            text.split(',')
                .map(|s| toml::Value::String(s.trim().into()))
                .filter(|v| v.as_str() != Some(""))
                .collect(),
        ),
        _ => toml::Value::String(text.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[cfg(feature = "ml")]
    #[test]
    fn ml_defaults_are_the_ml_crates() {
        let o = picsift_ml::Options::default();
        let m = MlSection::default();
        assert_eq!(
            m.device.parse::<picsift_ml::DeviceChoice>().ok(),
            Some(o.device)
        );
        assert_eq!(m.batch_size, o.batch_size);
        assert_eq!(m.max_wait_ms, o.max_wait.as_millis() as u64);
    }

    #[test]
    fn file_then_environment_overrides() {
        let dir = std::env::temp_dir().join(format!("picsift-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("picsift.toml");
        std::fs::write(&path, "listen = \"0.0.0.0:9000\"\n[s3]\nbucket = \"from-file\"\nregion = \"garage\"\n[worker]\nconcurrency = 3\n").unwrap();
        let env: HashMap<&str, &str> = [
            ("PICSIFT_S3_BUCKET", "from-env"),
            ("PICSIFT_WORKER_MAX_DELIVERIES", "9"),
            ("PICSIFT_POLICY_FORMATS", "jpeg, png"),
            ("PICSIFT_S3_PATH_STYLE", "false"),
        ]
        .into();
        let c = Config::load(Some(&path), |k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(
            (c.s3.bucket.as_str(), c.s3.region.as_str(), c.s3.path_style),
            ("from-env", "garage", false)
        );
        assert_eq!((c.worker.concurrency, c.worker.max_deliveries), (3, 9));
        assert_eq!(
            c.policy().unwrap().allowed_formats,
            vec![Format::Jpeg, Format::Png]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = std::env::temp_dir().join(format!("picsift-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[s3]\nbuckett = \"typo\"\n").unwrap();
        assert!(Config::load(Some(&path), |_| None).is_err());
        assert!(
            Config::load(None, |k| (k == "PICSIFT_WORKER_CONCURRENCY")
                .then(|| "many".to_string()))
            .is_err()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(feature = "ml")]
    #[test]
    fn the_demo_policy_file_parses_with_model_paths_from_its_folder() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/demo.toml");
        let p = policy_file(&path).unwrap();
        let names: Vec<&str> = p.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["nudenet"]);
        assert!(
            p.models[0]
                .source
                .ends_with("policies/../models/nudenet.pt")
        );
        assert_eq!(p.models[0].labels.len(), 18);
        assert_eq!(p.models[0].fixed_batch, Some(1));
        assert_eq!(p.models[0].reject[0].at_least, 0.6);
        assert_eq!(p.quality.min_sharpness, Some(5.0));
        assert_eq!(p.audit.sample_rate, 0.1);
        // A threshold of 0 (a minimum) or 1 (a maximum) turns a check off.
        let dir = std::env::temp_dir().join(format!("picsift-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let off = dir.join("off.toml");
        std::fs::write(&off, "[quality]\nmin_contrast = 0\nmax_overexposed = 1.0\n").unwrap();
        let p = policy_file(&off).unwrap();
        assert_eq!(
            (p.quality.min_contrast, p.quality.max_overexposed),
            (None, None)
        );
        assert_eq!(p.quality.max_underexposed, Some(0.9));
        std::fs::write(&off, "[quality]\nmin_contrast = \"high\"\n").unwrap();
        assert!(policy_file(&off).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../../docs/configuration.md");
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        for (key, value) in &defaults {
            match value {
                toml::Value::Table(section) => {
                    for (sub, v) in section {
                        // Nested tables and lists of tables come from files only.
                        if matches!(v, toml::Value::Table(_))
                            || (sub == "models" && matches!(v, toml::Value::Array(_)))
                        {
                            let form = if sub == "models" { "[[" } else { "[" };
                            assert!(
                                doc.contains(&format!("`{form}{key}.{sub}")),
                                "docs/configuration.md lacks {form}{key}.{sub}"
                            );
                            continue;
                        }
                        let env = format!("PICSIFT_{}_{}", key.to_uppercase(), sub.to_uppercase());
                        assert!(
                            doc.contains(&format!("`{sub}`")) && doc.contains(&env),
                            "docs/configuration.md lacks [{key}] {sub} / {env}"
                        );
                    }
                }
                _ => assert!(
                    doc.contains(&format!("`PICSIFT_{}`", key.to_uppercase())),
                    "docs/configuration.md lacks {key}"
                ),
            }
        }
    }
}
