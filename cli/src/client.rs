//! The HTTP client commands: upload, status, report.

/// Options of `picsift upload`.
#[derive(clap::Args)]
pub struct UploadArgs {}
/// Options of `picsift status`.
#[derive(clap::Args)]
pub struct StatusArgs {}
/// Options of `picsift report`.
#[derive(clap::Args)]
pub struct ReportArgs {}

/// `picsift upload`.
pub async fn upload(_args: UploadArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
/// `picsift status`.
pub async fn status(_args: StatusArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
/// `picsift report`.
pub async fn report(_args: ReportArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
