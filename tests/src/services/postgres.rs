//! A throw-away PostgreSQL cluster from the Debian packages
//! (`/usr/lib/postgresql/<version>/bin`): `initdb` in a fresh temporary
//! folder, trust authentication, fsync off, listening on a free loopback
//! port, its unix socket inside that folder. It is stopped and its folder
//! removed when dropped — or, for a server kept in a `static` that is never
//! dropped, by a small watchdog once the test process has exited.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root every
//! server command runs as the `postgres` user (`runuser`), in a folder
//! that user owns.

use super::{free_port, require};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The superuser `initdb` creates; clients connect as it with trust auth.
const SUPERUSER: &str = "postgres";
/// The system account servers run as when the tests run as root.
const SYSTEM_USER: &str = "postgres";

/// A running PostgreSQL server with one database created for the caller.
pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:PORT/picsift`.
    pub url: String,
    /// The port it listens on (loopback only).
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_system_user: bool,
    watchdog: Option<Child>,
}

impl Postgres {
    /// Starts a server and creates the database `picsift`; panics, saying
    /// why, when it cannot.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = unique_temp_dir();
        // A folder we just created is owned by our effective user.
        let as_system_user = fs::metadata(&dir).map(|m| m.uid() == 0).unwrap_or(false);
        let mut pg = Postgres {
            url: String::new(),
            port: 0,
            dir,
            bin,
            as_system_user,
            watchdog: None,
        };
        // From here on, a panic drops `pg`, which removes the folder.
        if as_system_user {
            pg.give_dir_to_system_user();
        }
        pg.initdb();
        pg.watchdog = Some(pg.spawn_watchdog());
        // The port is free when picked but another harness may take it
        // before the server binds it: retry with another.
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            match pg.start_on(port) {
                Ok(()) => {
                    pg.port = port;
                    pg.url = pg.create_database("picsift");
                    return pg;
                }
                Err(log) => last = log,
            }
        }
        panic!("PostgreSQL did not start:\n{last}");
    }

    /// Creates another database on this server and returns its URL, so
    /// tests sharing one server do not see each other's rows.
    pub fn create_database(&self, name: &str) -> String {
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                name,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {name} failed: {}",
            output_text(&out)
        );
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// A command for a server program, as the system user when we are root.
    fn server_command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut cmd = if self.as_system_user {
            let mut c = Command::new(require("runuser", "util-linux"));
            c.args(["-u", SYSTEM_USER, "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        // The caller's working directory may be closed to the system user.
        cmd.current_dir(&self.dir).stdin(Stdio::null());
        cmd
    }

    fn give_dir_to_system_user(&self) {
        let status = Command::new("chown")
            .arg(format!("{SYSTEM_USER}:"))
            .arg(&self.dir)
            .status()
            .expect("run chown");
        assert!(
            status.success(),
            "chown {SYSTEM_USER}: {} failed: does the `{SYSTEM_USER}` user exist? (the postgresql package creates it)",
            self.dir.display()
        );
    }

    fn initdb(&self) {
        let out = self
            .server_command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"])
            // No fsync of the fresh files: the cluster is thrown away anyway.
            .arg("--no-sync")
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", output_text(&out));
    }

    /// Starts the server on `port` and waits until it accepts connections;
    /// the error is the server's log.
    fn start_on(&self, port: u16) -> Result<(), String> {
        // -F: no fsync, -k: the unix socket stays in our folder (the
        // default one may not exist or be writable), loopback only, and
        // room for the pools of many tests running at once.
        let options = format!(
            "-F -p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
            self.dir.display()
        );
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-o", &options, "-w", "-t", "30", "start"])
            // pg_ctl's server keeps the pipes open: read its log instead.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run pg_ctl start");
        if out.success() {
            Ok(())
        } else {
            self.stop();
            Err(fs::read_to_string(self.log_file()).unwrap_or_default())
        }
    }

    /// Stops the server at once (an outage); its data stays for [`Self::resume`].
    pub fn stop(&self) {
        // Immediate: nothing to keep, so no shutdown checkpoint.
        let _ = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Starts the server again on its port and data.
    pub fn resume(&self) {
        self.start_on(self.port)
            .unwrap_or_else(|log| panic!("PostgreSQL did not start again:\n{log}"));
    }

    /// A shell that waits for this test process to exit, then stops the
    /// server and removes its folder: the cleanup for servers that are
    /// never dropped (statics, aborted tests).
    fn spawn_watchdog(&self) -> Child {
        let stop = self.server_command("pg_ctl");
        let mut words = vec![stop.get_program().to_os_string()];
        words.extend(stop.get_args().map(|a| a.to_os_string()));
        let stop_line = words
            .iter()
            .map(|w| shell_quote(&w.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        let script = format!(
            "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; cd /; {stop_line} -D {} -m immediate stop >/dev/null 2>&1; rm -rf {}",
            shell_quote(&self.data_dir().to_string_lossy()),
            shell_quote(&self.dir.to_string_lossy()),
        );
        Command::new("sh")
            .args(["-c", &script, "picsift-pg-watchdog"])
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the PostgreSQL watchdog")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin`, else the folder of
/// `initdb` on the PATH.
fn bin_dir() -> PathBuf {
    let newest = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    match newest {
        Some((_, bin)) => bin,
        None => require("initdb", "postgresql")
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    }
}

/// A new empty folder under the system temp dir, unique to this process
/// and call. World-traversable parents (`/tmp`) let the system user in.
fn unique_temp_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "picsift-pg-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
