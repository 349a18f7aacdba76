//! The client commands' arguments (clap), apart from what is done with them
//! so that `--help` can be read, and changed, in one place.

use std::path::PathBuf;

use reqwest::Url;

/// Where the server is; every client command takes it.
#[derive(clap::Args)]
pub(super) struct ServerArgs {
    /// Base URL of the picsift server.
    #[arg(
        long,
        env = "PICSIFT_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub(super) server: Url,
    /// API key, from this flag or PICSIFT_API_KEY. Keys come from
    /// `picsift admin keys create` (standalone: `--data DIR`; cluster:
    /// `--config FILE`), and a cluster's first admin key is the gateway's
    /// PICSIFT_ADMIN_KEY. Default: the standalone server's admin key in
    /// DATA/admin.key (DATA is PICSIFT_DATA or `.data`), written by
    /// `picsift serve` on first start.
    #[arg(
        long,
        env = "PICSIFT_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub(super) api_key: Option<String>,
}

impl ServerArgs {
    /// The API key: given, or the standalone server's admin key.
    pub(super) fn key(&self) -> Option<String> {
        self.api_key.clone().or_else(|| {
            let data = std::env::var_os("PICSIFT_DATA").unwrap_or_else(|| ".data".into());
            let text =
                std::fs::read_to_string(std::path::Path::new(&data).join("admin.key")).ok()?;
            Some(text.trim().to_string())
        })
    }
}

/// Options of `picsift upload`.
#[derive(clap::Args)]
pub struct UploadArgs {
    /// A .zip file (sent as is), or a folder (zipped on the fly, sub-folders included).
    pub(super) path: PathBuf,
    /// URL the server POSTs the final batch status to when the batch is finished.
    #[arg(long, value_name = "URL")]
    pub(super) callback: Option<Url>,
    /// Send a folder's files even when the server already has them (by
    /// default they are left out after asking `POST /v1/images/lookup`).
    #[arg(long)]
    pub(super) send_known: bool,
    /// Go on with an interrupted upload of the same zip file (the default):
    /// its upload URL is remembered in a state file until it is done.
    #[arg(long, overrides_with = "no_resume")]
    pub(super) resume: bool,
    /// Start a new upload even if one of this file was interrupted, and
    /// remember nothing.
    #[arg(long, overrides_with = "resume")]
    pub(super) no_resume: bool,
    #[command(flatten)]
    pub(super) server: ServerArgs,
}

/// Options of `picsift status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// The batch id that `picsift upload` printed.
    pub(super) id: String,
    /// Poll until the batch is completed or failed, showing progress on stderr.
    #[arg(long)]
    pub(super) wait: bool,
    /// Time between polls with --wait, in milliseconds.
    #[arg(long, default_value_t = 500, value_name = "MS", value_parser = clap::value_parser!(u64).range(50..))]
    pub(super) interval_ms: u64,
    /// Print the server's JSON status document instead of a summary.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    pub(super) server: ServerArgs,
}

/// Options of `picsift report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// The batch id that `picsift upload` printed.
    pub(super) id: String,
    /// Print one JSON object per entry (NDJSON) instead of a table.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    pub(super) server: ServerArgs,
}

/// Options of `picsift download`.
#[derive(clap::Args)]
pub struct DownloadArgs {
    /// Image ids to download.
    pub(super) ids: Vec<String>,
    /// Every image a batch stored.
    #[arg(long, value_name = "ID")]
    pub(super) batch: Option<String>,
    /// Every image a search finds: the query of `GET /v1/images`, such as
    /// `format=jpeg&min_width=1000&from=2026-11-01T00:00:00Z`.
    #[arg(long, value_name = "QUERY")]
    pub(super) search: Option<String>,
    /// Where the files go (`<id>.<ext>`); created if missing.
    #[arg(long, short, default_value = ".", value_name = "DIR")]
    pub(super) out: PathBuf,
    #[command(flatten)]
    pub(super) server: ServerArgs,
}
