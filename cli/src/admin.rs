//! `picsift admin keys …`: API keys, created, listed and revoked directly
//! in the catalog (the standalone server's SQLite file, or the cluster's
//! PostgreSQL), so no key is needed to make the first one. And the
//! bootstrap keys: the standalone server's first admin key in
//! DATA/admin.key, and a cluster's from `PICSIFT_ADMIN_KEY`.

use anyhow::{Context, bail};
use picsift_backends::sql::SqlCatalog;
use picsift_core::auth::{self, Role};
use picsift_core::backend::Catalog;
use picsift_core::time::{now_ms, rfc3339};
use std::path::PathBuf;
use std::sync::Arc;

/// `picsift admin`.
#[derive(clap::Args)]
pub struct AdminArgs {
    /// The standalone server's data folder.
    #[arg(long, env = "PICSIFT_DATA", default_value = ".data", global = true)]
    data: PathBuf,
    /// A cluster configuration file: keys go to its PostgreSQL catalog
    /// instead of DATA/catalog.db.
    #[arg(long, env = "PICSIFT_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(clap::Subcommand)]
enum AdminCommand {
    /// API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// A cluster's bucket (needs --config): checks that picsift's key may
    /// write, read and delete in it, and sets the lifecycle rule that
    /// aborts multipart uploads left incomplete. Run it once, at set-up.
    Bucket {
        /// Days after which incomplete multipart uploads are aborted.
        #[arg(long, default_value_t = 1)]
        abort_incomplete_after_days: i32,
    },
}

#[derive(clap::Subcommand)]
enum KeysCommand {
    /// Creates a key and prints it (once: only its hash is kept).
    Create {
        /// The tenant the key acts for.
        #[arg(long)]
        tenant: String,
        /// An admin key: sees every tenant's batches and images.
        #[arg(long)]
        admin: bool,
        /// A note shown in listings.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Lists keys (never the keys themselves).
    List,
    /// Revokes a key by its id; it is refused from then on.
    Revoke {
        /// The key's id (the 16 hex digits after `psk_`).
        id: String,
    },
}

async fn catalog(
    data: &std::path::Path,
    config: Option<&std::path::Path>,
) -> anyhow::Result<Arc<dyn Catalog>> {
    Ok(match config {
        Some(path) => {
            let cfg = crate::config::Config::load(Some(path), |k| std::env::var(k).ok())?;
            Arc::new(
                picsift_backends::sql::SqlCatalog::connect_postgres(&cfg.postgres.url, 2)
                    .await
                    .context("cannot open the PostgreSQL catalog")?,
            )
        }
        None => {
            let db = data.join("catalog.db");
            if !db.exists() {
                bail!(
                    "no catalog at {}: start `picsift serve --data {}` once, or give --config for a cluster",
                    db.display(),
                    data.display()
                );
            }
            Arc::new(SqlCatalog::open_sqlite(&db).await?)
        }
    })
}

/// Runs `picsift admin …`.
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let command = match args.command {
        AdminCommand::Keys(command) => command,
        AdminCommand::Bucket {
            abort_incomplete_after_days,
        } => {
            let Some(path) = &args.config else {
                bail!(
                    "picsift admin bucket is for a cluster: give --config FILE (or PICSIFT_CONFIG)"
                );
            };
            let cfg = crate::config::Config::load(Some(path), |k| std::env::var(k).ok())?;
            return crate::bucket::setup(&cfg, abort_incomplete_after_days).await;
        }
    };
    let catalog = catalog(&args.data, args.config.as_deref()).await?;
    match command {
        KeysCommand::Create {
            tenant,
            admin,
            label,
        } => {
            let role = if admin { Role::Admin } else { Role::Tenant };
            let new = auth::generate(&tenant, role, &label, now_ms())?;
            catalog.create_api_key(&new.key, &new.hash).await?;
            eprintln!(
                "created {} key {} for tenant {tenant}; it is shown once:",
                role.as_str(),
                new.key.id
            );
            println!("{}", new.secret);
        }
        KeysCommand::List => {
            println!(
                "{:<16}  {:<20}  {:<6}  {:<24}  {:<24}  LABEL",
                "ID", "TENANT", "ROLE", "CREATED", "REVOKED"
            );
            for k in catalog.api_keys().await? {
                println!(
                    "{:<16}  {:<20}  {:<6}  {:<24}  {:<24}  {}",
                    k.id,
                    k.tenant,
                    k.role.as_str(),
                    rfc3339(k.created_at),
                    k.revoked_at.map(rfc3339).unwrap_or_else(|| "-".into()),
                    k.label
                );
            }
        }
        KeysCommand::Revoke { id } => {
            if !catalog.revoke_api_key(&id, now_ms()).await? {
                bail!("no unrevoked key with id {id} (see `picsift admin keys list`)");
            }
            eprintln!("revoked key {id}");
        }
    }
    Ok(())
}

/// On the standalone server's first start (no admin key in the catalog),
/// creates one, writes it to `DATA/admin.key` (mode 0600) and prints it.
#[cfg(feature = "ml")]
pub async fn first_admin_key(catalog: &dyn Catalog, data: &std::path::Path) -> anyhow::Result<()> {
    let keys = catalog.api_keys().await?;
    if keys
        .iter()
        .any(|k| k.role == Role::Admin && k.revoked_at.is_none())
    {
        return Ok(());
    }
    let new = auth::generate(
        auth::DEFAULT_TENANT,
        Role::Admin,
        "created on first start",
        now_ms(),
    )?;
    let path = data.join("admin.key");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    options
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{}\n", new.secret).as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    catalog.create_api_key(&new.key, &new.hash).await?;
    eprintln!(
        "created an admin API key (shown once; also in {}):\n  {}",
        path.display(),
        new.secret
    );
    Ok(())
}

/// A cluster gateway's bootstrap admin key (`PICSIFT_ADMIN_KEY`, from a
/// Secret): recorded in the catalog when it is not there yet.
pub async fn bootstrap_key(catalog: &dyn Catalog, secret: &str) -> anyhow::Result<()> {
    let secret = secret.trim();
    if !auth::looks_like_key(secret) {
        bail!("PICSIFT_ADMIN_KEY is not a picsift key (psk_<16 hex>_<43 base64url characters>)");
    }
    let hash = auth::hash(secret);
    if catalog.api_key_by_hash(&hash).await?.is_some() {
        return Ok(());
    }
    let id = secret[4..20].to_string();
    if catalog.api_keys().await?.iter().any(|k| k.id == id) {
        // Revoked, or another key has its id: leave it so.
        tracing::warn!(key = id, "PICSIFT_ADMIN_KEY was revoked; it stays revoked");
        return Ok(());
    }
    let key = auth::ApiKey {
        id,
        tenant: auth::DEFAULT_TENANT.into(),
        role: Role::Admin,
        label: "PICSIFT_ADMIN_KEY".into(),
        created_at: now_ms(),
        revoked_at: None,
    };
    catalog.create_api_key(&key, &hash).await?;
    tracing::info!(key = key.id, "recorded the bootstrap admin key");
    Ok(())
}
