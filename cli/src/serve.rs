//! `picsift serve`: the standalone server — gateway, in-process workers and
//! webhook delivery over files on disk, SQLite and an in-process queue.
//! Built only with the `ml` feature (the workers link libtorch).

use anyhow::Context;
use picsift_backends::embedded::{FsBlobStore, MemQueue};
use picsift_backends::notify::NotifierConfig;
use picsift_backends::sql::{SqlCatalog, SqliteDedup};
use picsift_core::backend::Backends;
use picsift_core::format::Format;
use picsift_core::intake::{LocalScheduler, resume};
use picsift_core::policy::Policy;
use picsift_core::webhook::Secret;
use picsift_gateway::AppState;
use picsift_worker::WorkerConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Options of `picsift serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Folder for the catalog (SQLite) and blobs; created if missing.
    #[arg(long, env = "PICSIFT_DATA", default_value = ".data")]
    pub data: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "PICSIFT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Webhook signing secret (`whsec_` + base64, or any text). Default: the
    /// one in DATA/webhook.secret, created on first start.
    #[arg(long, env = "PICSIFT_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Internal networks (CIDR, comma-separated) completion webhooks may
    /// reach, e.g. 127.0.0.1/32 for a receiver on this machine; every other
    /// loopback, private, link-local or otherwise internal address is refused.
    #[arg(long, env = "PICSIFT_WEBHOOK_ALLOWED_NETWORKS", value_delimiter = ',')]
    pub webhook_allowed_networks: Vec<ipnet::IpNet>,
    /// A TOML file with the validation policy: the keys of a config file's
    /// `[policy]` table (formats, limits, `[quality]`, `[[models]]`,
    /// audit_sample_rate; see docs/configuration.md). Relative model paths
    /// are read from the file's folder. The options below override it.
    #[arg(long, env = "PICSIFT_POLICY")]
    pub policy: Option<PathBuf>,
    /// Image formats accepted, comma-separated: jpeg, png, webp, heic, avif (default: all five).
    #[arg(long, env = "PICSIFT_POLICY_FORMATS", value_delimiter = ',')]
    pub formats: Option<Vec<String>>,
    /// Largest upload in bytes.
    #[arg(long, env = "PICSIFT_POLICY_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Chunks processed at once (default: one per core).
    #[arg(long, env = "PICSIFT_WORKER_CONCURRENCY", alias = "workers")]
    pub concurrency: Option<usize>,
    /// Most PDQ bits apart that count as the same picture (a near
    /// duplicate); 0–31, or `off` to store near duplicates.
    /// (default 31)
    #[arg(long, env = "PICSIFT_POLICY_NEAR_DISTANCE", value_parser = parse_near)]
    pub near_distance: Option<NearDistance>,
    /// Where the quality and ML checks run: auto (a CUDA GPU when there is
    /// one), cpu or cuda.
    #[arg(long, env = "PICSIFT_ML_DEVICE", default_value = "auto")]
    pub ml_device: picsift_ml::DeviceChoice,
    /// Most images per forward pass of a model.
    #[arg(long, env = "PICSIFT_ML_BATCH_SIZE", alias = "ml-batch", default_value_t = crate::config::MlSection::default().batch_size)]
    pub ml_batch_size: usize,
    /// Requests a second per tenant, on average (0: unlimited; admin keys
    /// are never limited).
    #[arg(long, env = "PICSIFT_LIMITS_REQUESTS_PER_SECOND", alias = "rate-limit", default_value_t = crate::config::LimitsSection::default().requests_per_second)]
    pub requests_per_second: f64,
    /// Requests a tenant may make at once above that rate.
    #[arg(long, env = "PICSIFT_LIMITS_BURST", alias = "rate-burst", default_value_t = crate::config::LimitsSection::default().burst)]
    pub burst: f64,
    /// Batches a tenant may have in progress at once (0: unlimited).
    #[arg(long, env = "PICSIFT_LIMITS_MAX_OPEN_BATCHES", default_value_t = crate::config::LimitsSection::default().max_open_batches)]
    pub max_open_batches: u64,
    /// Bytes a tenant may upload per calendar month, UTC (0: unlimited).
    #[arg(long, env = "PICSIFT_LIMITS_MAX_BYTES_PER_MONTH", default_value_t = 0)]
    pub max_bytes_per_month: u64,
    /// Seconds a client has to send a request's head.
    #[arg(long, env = "PICSIFT_LIMITS_HEADER_TIMEOUT_SECS", alias = "header-read-timeout-secs", default_value_t = crate::config::LimitsSection::default().header_timeout_secs)]
    pub header_timeout_secs: u64,
    /// Longest pause, in seconds, within a request body (a stalled upload gets 408).
    #[arg(long, env = "PICSIFT_LIMITS_BODY_IDLE_TIMEOUT_SECS", default_value_t = crate::config::LimitsSection::default().body_idle_timeout_secs)]
    pub body_idle_timeout_secs: u64,
    /// Connections served at once.
    #[arg(long, env = "PICSIFT_LIMITS_MAX_CONNECTIONS", default_value_t = crate::config::LimitsSection::default().max_connections)]
    pub max_connections: usize,
    /// Requests handled at once (more get 503).
    #[arg(long, env = "PICSIFT_LIMITS_MAX_REQUESTS", default_value_t = crate::config::LimitsSection::default().max_requests)]
    pub max_requests: usize,
    /// Seconds an unfinished resumable upload is kept before its parts are dropped.
    #[arg(long, env = "PICSIFT_LIMITS_UPLOAD_EXPIRY_SECS", default_value_t = crate::config::LimitsSection::default().upload_expiry_secs)]
    pub upload_expiry_secs: u64,
}

impl ServeArgs {
    fn limits(&self) -> crate::config::LimitsSection {
        crate::config::LimitsSection {
            requests_per_second: self.requests_per_second,
            burst: self.burst,
            max_open_batches: self.max_open_batches,
            max_bytes_per_month: self.max_bytes_per_month,
            header_timeout_secs: self.header_timeout_secs,
            body_idle_timeout_secs: self.body_idle_timeout_secs,
            max_connections: self.max_connections,
            max_requests: self.max_requests,
            upload_expiry_secs: self.upload_expiry_secs,
        }
    }
}

/// `--near-distance`: bits, or `None` for off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NearDistance(pub Option<u32>);

fn parse_near(s: &str) -> Result<NearDistance, String> {
    match s {
        "off" => Ok(NearDistance(None)),
        n => match n.parse::<u32>() {
            Ok(d) if d <= 31 => Ok(NearDistance(Some(d))),
            _ => Err(format!("{n:?}: give 0 to 31, or off")),
        },
    }
}

/// Reads the webhook secret from `DATA/webhook.secret`, creating it (mode 0600) on first start.
fn webhook_secret(data: &Path) -> anyhow::Result<String> {
    let path = data.join("webhook.secret");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(text.trim().to_string());
    }
    let mut key = uuid::Uuid::new_v4().into_bytes().to_vec();
    key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    let secret = Secret::encode(&key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    options.open(&path)?.write_all(secret.as_bytes())?;
    eprintln!("created a webhook signing secret in {}", path.display());
    Ok(secret)
}

fn policy(args: &ServeArgs) -> anyhow::Result<Policy> {
    let mut policy = match &args.policy {
        None => Policy::default(),
        Some(path) => crate::config::policy_file(path)?,
    };
    if let Some(formats) = &args.formats {
        policy.allowed_formats = formats
            .iter()
            .map(|f| {
                Format::parse(f.trim())
                    .with_context(|| format!("unknown format {f:?}: use jpeg, png or webp"))
            })
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(n) = args.max_upload_bytes {
        policy.max_upload_bytes = n;
    }
    if let Some(near) = args.near_distance {
        policy.near_duplicate_distance = near.0;
    }
    policy.spelling = picsift_core::setting::Spelling::Serve;
    Ok(policy)
}

/// Runs the standalone server until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    crate::process::init_logging();
    let policy = policy(&args)?;
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create the data folder {}", args.data.display()))?;
    let secret = match &args.webhook_secret {
        Some(s) => s.clone(),
        None => webhook_secret(&args.data)?,
    };
    let catalog = Arc::new(
        SqlCatalog::open_sqlite(&args.data.join("catalog.db"))
            .await
            .context("cannot open the catalog")?,
    );
    crate::admin::first_admin_key(catalog.as_ref(), &args.data).await?;
    let blobs = Arc::new(
        FsBlobStore::open(args.data.join("blobs"))
            .await
            .context("cannot open the blob store")?,
    );
    let backends = Backends {
        blobs: blobs.clone(),
        uploads: catalog.clone(),
        catalog: catalog.clone(),
        dedup: Arc::new(SqliteDedup::of(&catalog).expect("a SQLite catalog")),
        queue: Arc::new(MemQueue::new()),
    };
    let ml = picsift_ml::Runtime::new(picsift_ml::Options {
        device: args.ml_device,
        batch_size: args.ml_batch_size,
        ..picsift_ml::Options::default()
    })?;
    // Decoders run in child processes: an abort or a hang in one costs an
    // entry, never the server (picsift_worker::isolated).
    let decoders = picsift_worker::isolated::DecoderPool::new(
        picsift_worker::isolated::DecoderCommand::this_executable()
            .context("cannot find this executable to start decoder processes")?,
        picsift_worker::isolated::DEFAULT_TIMEOUT,
    );
    let mut config = WorkerConfig {
        policy: policy.clone(),
        ml: Arc::new(ml),
        decoders: Some(Arc::new(decoders)),
        ..WorkerConfig::default()
    };
    if let Some(n) = args.concurrency {
        config.concurrency = n.max(1);
    }
    if let Some(pool) = &config.decoders {
        pool.start(config.concurrency);
    }
    picsift_worker::checks::start_checks(&backends, &config)
        .await
        .context("the policy's quality and ML checks cannot run")?;

    let resumed = resume(&backends, &config.intake())
        .await
        .context("cannot resume unfinished batches")?;
    if resumed > 0 {
        tracing::info!(batches = resumed, "resumed unfinished batches");
    }
    let stop = CancellationToken::new();
    let background = crate::worker::start_workers(
        backends.clone(),
        config.clone(),
        Some(
            NotifierConfig::new(Secret::parse(&secret))
                .allowing(args.webhook_allowed_networks.clone()),
        ),
        stop.clone(),
    )?;

    let queue: Arc<dyn picsift_core::backend::WorkQueue> = backends.queue.clone();
    let dedup = backends.dedup.clone();
    let state = AppState {
        uploads: backends.uploads.clone(),
        metrics: Default::default(),
        dedup,
        rebuilding: Default::default(),
        blobs,
        catalog,
        queue: Some(queue),
        scheduler: Arc::new(LocalScheduler::new(backends, config.intake())),
        policy,
        limits: args.limits().tenant_limits(),
        rate: Arc::new(picsift_core::rate::MemoryRateLimiter::default()),
    };
    // Abandoned resumable uploads are cleaned up when they expire.
    picsift_gateway::sweep::spawn(state.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "picsift listening on http://{addr} (data in {})",
        args.data.display()
    );
    picsift_gateway::serve(
        listener,
        picsift_gateway::router(state),
        args.limits().transport(),
        crate::process::shutdown_signal(),
    )
    .await
    .context("server failed")?;
    stop.cancel();
    for task in background {
        let _ = task.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// One name per setting: a flag that is also a configuration key has
    /// the key's name and environment variable, and the docs list it.
    #[test]
    fn every_flag_is_named_for_its_configuration_key() {
        use clap::CommandFactory;
        let doc = include_str!("../../docs/configuration.md");
        let defaults = toml::Table::try_from(crate::config::Config::default()).unwrap();
        let mut keys = std::collections::HashMap::new();
        for (key, value) in &defaults {
            match value {
                toml::Value::Table(section) => {
                    for sub in section.keys() {
                        let env = format!("PICSIFT_{}_{}", key.to_uppercase(), sub.to_uppercase());
                        let flag = if key == "ml" {
                            format!("ml-{}", sub.replace('_', "-"))
                        } else {
                            sub.replace('_', "-")
                        };
                        keys.insert(env, flag);
                    }
                }
                _ => {
                    keys.insert(
                        format!("PICSIFT_{}", key.to_uppercase()),
                        key.replace('_', "-"),
                    );
                }
            }
        }
        let serve_only = ["PICSIFT_DATA", "PICSIFT_POLICY"];
        for arg in Cli::command().get_arguments() {
            let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
                continue;
            };
            let env = env.to_string_lossy().into_owned();
            if serve_only.contains(&env.as_str()) {
                continue;
            }
            assert_eq!(
                keys.get(&env),
                Some(&long.to_string()),
                "--{long} reads {env}"
            );
            assert!(
                doc.contains(&format!("`--{long}`")),
                "docs/configuration.md lacks --{long}"
            );
        }
    }

    #[test]
    fn near_distance_takes_a_number_or_off() {
        let parse = |v: &[&str]| {
            let mut args = vec!["picsift"];
            args.extend(v);
            Cli::try_parse_from(args).map(|c| policy(&c.serve).unwrap().near_duplicate_distance)
        };
        assert_eq!(parse(&[]).unwrap(), Some(31));
        assert_eq!(parse(&["--near-distance", "12"]).unwrap(), Some(12));
        assert_eq!(parse(&["--near-distance", "off"]).unwrap(), None);
        assert!(parse(&["--near-distance", "40"]).is_err());
    }
}
