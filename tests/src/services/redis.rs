//! A throwaway redis-server: a free loopback port, its own folder, killed
//! when dropped. No persistence (`--save "" --appendonly no`) unless started
//! with [`RedisServer::start_persistent`] (an append-only file written
//! through on every write), to restart it with its data.

use super::{free_port, require};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A running redis-server.
pub struct RedisServer {
    /// `redis://127.0.0.1:{port}/`.
    pub url: String,
    /// The port it listens on.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    persistent: bool,
}

impl RedisServer {
    /// Starts redis-server on a free loopback port and waits until it
    /// accepts connections.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// [`Self::start`] with an append-only file fsynced on every write, so
    /// that [`Self::restart_keeping_data`] finds every acknowledged write.
    pub fn start_persistent() -> Self {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> Self {
        // Unique per process and per call: tests run in parallel.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "picsift-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the redis-server folder");
        let port = free_port();
        let mut server = Self {
            url: format!("redis://127.0.0.1:{port}/"),
            port,
            dir,
            child: None,
            persistent,
        };
        server.spawn();
        server
    }

    /// Kills the server (its data is lost: nothing is persisted). Clients
    /// see the connection drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and starts an empty one on the same port: Redis
    /// coming back after a crash that lost its data.
    pub fn restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(self.dir.join("appendonlydir"));
        self.spawn();
    }

    /// Kills the server (SIGKILL) and starts it again on its data: a crash
    /// of a Redis that persists (only a persistent one keeps anything).
    pub fn restart_keeping_data(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let program = require("redis-server", "the Debian package redis-server");
        let log = self.dir.join("redis.log");
        let mut child = Command::new(program)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        // Like `wait_for_port`, but a server that exited (the port was
        // taken meanwhile) fails at once, with its log.
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!(
                    "redis-server did not listen on port {} ({exited:?}); its log:\n{log}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
