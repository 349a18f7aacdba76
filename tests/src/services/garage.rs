//! Garage, a real S3-compatible object store, for tests: one node with a
//! fresh layout, a known access key and one bucket.

use super::{free_port, require, wait_for_port};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The S3 region name Garage answers to.
pub const REGION: &str = "garage";
/// The test access key id (Garage key ids are `GK` + 24 hex digits).
pub const ACCESS_KEY: &str = "GK0123456789abcdef01234567";
/// The test secret key.
pub const SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A running single-node Garage.
pub struct Garage {
    child: Child,
    bin: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    /// `http://127.0.0.1:PORT`, the S3 endpoint.
    pub endpoint: String,
    /// The S3 endpoint's port.
    pub port: u16,
}

fn spawn(bin: &std::path::Path, config: &std::path::Path, dir: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("garage.log"))
        .expect("garage log");
    Command::new(bin)
        .arg("-c")
        .arg(config)
        .arg("server")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start garage")
}

impl Garage {
    /// Starts Garage and creates the key; buckets come from [`Self::bucket`].
    pub fn start() -> Garage {
        let bin = require("garage", "Garage (`cargo install garage --locked`)");
        let dir = std::env::temp_dir().join(format!(
            "picsift-garage-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("garage temp dir");
        let (rpc, s3) = (free_port(), free_port());
        let config = dir.join("garage.toml");
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
            .collect();
        // No compression: images and zips do not compress, S3 does not
        // compress either, and Garage's zstd showed in the cluster's
        // profile (the e2e bench).
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
                 compression_level = \"none\"\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n",
                d = dir.display()
            ),
        )
        .expect("garage config");
        let child = spawn(&bin, &config, &dir);
        wait_for_port(rpc, "garage rpc", Duration::from_secs(30));
        wait_for_port(s3, "garage s3", Duration::from_secs(30));
        let g = Garage {
            child,
            bin,
            dir,
            config,
            endpoint: format!("http://127.0.0.1:{s3}"),
            port: s3,
        };
        let id = g.cli(&["node", "id", "-q"]);
        let id = id.trim().split('@').next().unwrap_or_default().to_string();
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &id]);
        g.cli(&["layout", "apply", "--version", "1"]);
        g.cli(&[
            "key", "import", "--yes", "-n", "test", ACCESS_KEY, SECRET_KEY,
        ]);
        g
    }

    /// Stops the server (SIGKILL); its data stays for [`Self::resume`].
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same ports and data.
    pub fn resume(&mut self) {
        self.child = spawn(&self.bin, &self.config, &self.dir);
        wait_for_port(self.port, "garage s3", Duration::from_secs(30));
    }

    /// Runs a `garage` admin command against this node; panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let bin = require("garage", "Garage (`cargo install garage --locked`)");
        // The node needs a moment after start (and after a layout change) to answer.
        let mut attempt = 0;
        loop {
            let out = Command::new(&bin)
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .output()
                .expect("run garage");
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            attempt += 1;
            assert!(
                attempt < 50,
                "garage {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates a bucket the test key can read, write and own.
    pub fn bucket(&self, name: &str) -> String {
        self.cli(&["bucket", "create", name]);
        self.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", name, "--key", "test",
        ]);
        name.to_string()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
