//! `picsift serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Options of `picsift serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Folder for the catalog (SQLite) and blobs.
    #[arg(long, env = "PICSIFT_DATA", default_value = ".data")]
    pub data: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "PICSIFT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

/// Runs the standalone server until interrupted.
pub async fn run(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
