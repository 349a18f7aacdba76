//! `picsift`: the standalone server, the cluster processes and the
//! command-line client.
//!
//! With the `ml` feature (the default) it has everything; without it
//! (`--no-default-features`) it links no libtorch and leaves out the two
//! commands that run the pipeline, `serve` and `worker`: that build is the
//! gateway's and the operator's.

mod admin;
mod bucket;
mod client;
mod cluster;
mod config;
mod crd;
mod names;
mod process;
#[cfg(feature = "ml")]
mod serve;
mod startup;
#[cfg(feature = "ml")]
mod worker;

use clap::{Parser, Subcommand};

/// picsift: image intake — upload zips of images, get a verdict for every entry.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the standalone server: gateway, worker, files on disk, SQLite.
    #[cfg(feature = "ml")]
    Serve(serve::ServeArgs),
    /// Run the HTTP gateway of a cluster deployment (S3, PostgreSQL, Redis).
    Gateway(cluster::ClusterArgs),
    /// Run a worker of a cluster deployment.
    #[cfg(feature = "ml")]
    Worker(cluster::ClusterArgs),
    /// Run the Kubernetes operator (UploadBatch and WorkerPool controllers).
    Operator(cluster::ClusterArgs),
    /// Rebuild the Redis dedup claims from the catalog.
    Reindex(cluster::ClusterArgs),
    /// Upload a zip, or a folder zipped on the fly, and print the batch id.
    Upload(client::UploadArgs),
    /// Show a batch's status; with --wait, follow it to the end.
    Status(client::StatusArgs),
    /// Print a batch's verdicts as a table.
    Report(client::ReportArgs),
    /// Download stored images by id, by batch or by search, each checked against its id.
    Download(client::DownloadArgs),
    /// Print the CustomResourceDefinitions, or write them into a checkout.
    Crd(crd::CrdArgs),
    /// Administration: API keys, a cluster's bucket.
    Admin(admin::AdminArgs),
}

/// Runs the command; an error ends the process with status 1 and one line
/// on stderr: the error and its causes, `: `-joined, naming what to fix
/// (a backtrace only with RUST_BACKTRACE).
fn main() -> std::process::ExitCode {
    // Started by `picsift serve` to decode in isolation: only that.
    #[cfg(feature = "ml")]
    if std::env::var_os(picsift_worker::isolated::CHILD_ENV).is_some() {
        picsift_worker::isolated::child_main();
    }
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
                eprintln!("{}", e.backtrace());
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    names::apply();
    // One TLS provider is linked, aws-lc-rs (the S3 client's; kube is built
    // on it too, and scripts/check-deps.sh keeps ring out). Installed
    // explicitly so that a dependency enabling a second one can never make
    // rustls panic at the first TLS client.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            #[cfg(feature = "ml")]
            Command::Serve(args) => serve::run(args).await,
            Command::Gateway(args) => cluster::gateway(args).await,
            #[cfg(feature = "ml")]
            Command::Worker(args) => worker::worker(args).await,
            Command::Operator(args) => cluster::operator(args).await,
            Command::Reindex(args) => cluster::reindex(args).await,
            Command::Upload(args) => client::upload(args).await,
            Command::Status(args) => client::status(args).await,
            Command::Report(args) => client::report(args).await,
            Command::Download(args) => client::download(args).await,
            Command::Crd(args) => crd::run(args),
            Command::Admin(args) => admin::run(args).await,
        }
    })
}
