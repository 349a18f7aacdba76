//! Real services for integration tests, each started on a free loopback
//! port in its own temporary folder and stopped when dropped: redis-server,
//! PostgreSQL and Garage (S3). Missing binaries are an error that says what
//! to install (`scripts/setup.sh --tests` installs them).

pub mod garage;
pub mod postgres;
pub mod redis;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A loopback port free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, what: &str, timeout: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < timeout,
            "{what} did not listen on port {port} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The path of a program, or a panic naming the package that provides it.
pub fn require(program: &str, package: &str) -> std::path::PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo/bin"),
        ])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{program} not found: install {package} (scripts/setup.sh --tests does)")
        })
}
