//! docs/cluster.md's set-up by hand, run as written: the `sh` blocks of
//! its "By hand" section, in order, in one bash with `-euo pipefail`, on
//! free ports (set after the doc's own settings block), against a
//! throwaway PostgreSQL server's superuser. The doc's commands start Redis,
//! Garage, the gateway and a worker themselves and upload a folder; the
//! test then checks every verdict, and runs the doc's "Stopping it" block
//! whatever happened. So the doc cannot drift from what works.

mod common;

use common::{client_with, picsift_bin};
use picsift_tests::services::postgres::Postgres;
use picsift_tests::services::{free_port, require};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const DOC: &str = include_str!("../../docs/cluster.md");

/// The `sh` blocks of the "By hand" section: (the steps, the stop block).
fn doc_blocks() -> (Vec<String>, String) {
    let section = DOC
        .split("\n## By hand")
        .nth(1)
        .expect("docs/cluster.md has a \"By hand\" section");
    let section = section.split("\n## ").next().unwrap();
    let (steps, stop) = section
        .split_once("### Stopping it")
        .expect("the section ends with \"Stopping it\"");
    let blocks = |text: &str| -> Vec<String> {
        text.split("```sh\n")
            .skip(1)
            .map(|b| b.split("\n```").next().unwrap().to_string())
            .collect()
    };
    let stop = blocks(stop);
    assert_eq!(stop.len(), 1, "one block stops it");
    (blocks(steps), stop[0].clone())
}

/// Runs `script` with bash in `dir`, with picsift and garage on the PATH.
fn bash(dir: &Path, script: &str) -> std::process::Output {
    let garage_dir = require("garage", "Garage (`cargo install garage --locked`)")
        .parent()
        .unwrap()
        .to_path_buf();
    let bin_dir = picsift_bin().parent().unwrap().to_path_buf();
    let path = std::env::join_paths(
        [bin_dir, garage_dir]
            .into_iter()
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    Command::new("timeout")
        .args(["300", "bash", "-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("PICSIFT_LOG", "warn")
        .env_remove("PICSIFT_API_KEY")
        .env_remove("PICSIFT_SERVER")
        .output()
        .unwrap()
}

/// Runs the stop block when dropped, so nothing the doc started outlives the test.
struct Stop<'a>(&'a Path, String);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let out = bash(self.0, &self.1);
        eprintln!(
            "stopping ({:?}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_set_up_by_hand_runs_and_checks_an_upload() {
    let (steps, stop) = doc_blocks();
    assert!(
        steps.len() >= 8,
        "every step has its block: {}",
        steps.len()
    );
    let postgres = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    for seed in 0..3u64 {
        std::fs::write(
            photos.join(format!("photo-{seed}.jpg")),
            picsift_tests::jpeg(900 + seed, 640, 480),
        )
        .unwrap();
    }
    std::fs::write(
        photos.join("photo-0-again.jpg"),
        picsift_tests::jpeg(900, 640, 480),
    )
    .unwrap();
    let grey = image::RgbImage::from_pixel(640, 480, image::Rgb([128, 128, 128]));
    std::fs::write(
        photos.join("blank.jpg"),
        picsift_tests::encode_jpeg(&grey, 90),
    )
    .unwrap();

    // The doc's settings, then this machine's free ports.
    let api_port = free_port();
    let ports = format!(
        "export PGHOST=127.0.0.1 PGPORT={} PGUSER=postgres\n\
         REDIS_PORT={} S3_PORT={} RPC_PORT={} GARAGE_ADMIN_PORT={} API_PORT={api_port}\n\
         DB_NAME=picsift_doc\n",
        postgres.port,
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let settings = format!("{}\n{ports}", steps[0]);
    let script = std::iter::once(settings.as_str())
        .chain(steps[1..].iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("\n");
    // Stopping needs the settings too (the Redis port).
    let _stop = Stop(dir.path(), format!("{settings}\n{stop}"));
    let out = bash(dir.path(), &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: String = ["gateway.log", "worker.log", "garage.log"]
        .iter()
        .map(|f| {
            format!(
                "--- {f}\n{}\n",
                std::fs::read_to_string(dir.path().join(f)).unwrap_or_default()
            )
        })
        .collect();
    assert!(
        out.status.success(),
        "the doc's steps failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}\n{logs}",
        out.status
    );
    assert!(
        stdout.contains("multipart uploads left incomplete are aborted after 1 day(s)"),
        "{stdout}"
    );

    // The verdicts, read through the API with the key the doc created.
    let key = std::fs::read_to_string(dir.path().join("admin.key")).unwrap();
    let http = client_with(key.trim());
    let base = format!("http://127.0.0.1:{api_port}");
    let get = |path: String| {
        let request = http.get(format!("{base}{path}"));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let batches = get("/v1/batches".into()).await;
    let id = batches["batches"][0]["id"].as_str().unwrap().to_string();
    let report = get(format!("/v1/batches/{id}/report")).await;
    let lines = report["entries"].as_array().unwrap();
    let verdict = |name: &str| {
        lines
            .iter()
            .find(|l| l["entry"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} in {report}"))
            .clone()
    };
    assert_eq!(lines.len(), 5, "{report}");
    for name in ["photo-1.jpg", "photo-2.jpg"] {
        assert_eq!(verdict(name)["verdict"], "accepted", "{report}");
    }
    // The same bytes twice: one is stored, the other is its duplicate.
    let mut twins = [verdict("photo-0.jpg"), verdict("photo-0-again.jpg")]
        .map(|v| v["verdict"].as_str().unwrap().to_string());
    twins.sort();
    assert_eq!(twins, ["accepted", "duplicate"], "{report}");
    let blank = verdict("blank.jpg");
    assert_eq!(blank["reason"], "blank", "{blank}");
    assert!(
        blank["detail"]
            .as_str()
            .unwrap()
            .ends_with("(policy.quality.min_contrast)"),
        "the setting as the config file spells it: {blank}"
    );
    assert!(
        stdout.contains("blank"),
        "picsift report shows it: {stdout}"
    );
}

/// compose.yaml's one-time Garage set-up (`deploy/compose/garage-init.sh`,
/// through Garage's admin API) run against a real Garage started from
/// `deploy/compose/garage.toml` (on free ports, in a temporary folder),
/// twice (it must be safe to run again), then `picsift admin bucket` with
/// `deploy/compose/picsift.toml`'s key: what the compose file's init
/// containers do, without the container images this machine cannot pull.
#[test]
fn the_compose_garage_set_up_works_on_a_real_garage() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let compose_dir = root.join("deploy/compose");
    let dir = tempfile::tempdir().unwrap();
    let (s3, rpc, admin) = (free_port(), free_port(), free_port());
    let garage_toml = std::fs::read_to_string(compose_dir.join("garage.toml"))
        .unwrap()
        .replace("/var/lib/garage", &dir.path().display().to_string())
        // Whole quoted values: a new port must not be rewritten again.
        .replace("\"[::]:3900\"", &format!("\"127.0.0.1:{s3}\""))
        .replace("\"[::]:3901\"", &format!("\"127.0.0.1:{rpc}\""))
        .replace("\"127.0.0.1:3901\"", &format!("\"127.0.0.1:{rpc}\""))
        .replace("\"[::]:3903\"", &format!("\"127.0.0.1:{admin}\""));
    let config = dir.path().join("garage.toml");
    std::fs::write(&config, &garage_toml).unwrap();
    let garage_bin = require("garage", "Garage (`cargo install garage --locked`)");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _garage = Kill(
        Command::new(&garage_bin)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("garage.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    // The values compose.yaml gives garage-init, from the files it mounts.
    let garage: toml::Table = toml::from_str(&garage_toml).unwrap();
    let picsift_toml = std::fs::read_to_string(compose_dir.join("picsift.toml")).unwrap();
    let picsift: toml::Table = toml::from_str(&picsift_toml).unwrap();
    let s3_section = picsift["s3"].as_table().unwrap();
    let compose = std::fs::read_to_string(root.join("compose.yaml")).unwrap();
    let env = [
        ("GARAGE_ADMIN", format!("http://127.0.0.1:{admin}")),
        (
            "GARAGE_ADMIN_TOKEN",
            garage["admin"]["admin_token"].as_str().unwrap().to_string(),
        ),
        ("BUCKET", s3_section["bucket"].as_str().unwrap().to_string()),
        (
            "S3_KEY_ID",
            s3_section["access_key_id"].as_str().unwrap().to_string(),
        ),
        (
            "S3_SECRET",
            s3_section["secret_access_key"]
                .as_str()
                .unwrap()
                .to_string(),
        ),
    ];
    for (name, value) in &env[1..] {
        assert!(
            compose.contains(&format!("{name}: {value}")),
            "compose.yaml gives garage-init the {name} of deploy/compose/*.toml"
        );
    }
    for run in ["first", "second"] {
        let out = Command::new("timeout")
            .args(["120", "sh"])
            .arg(compose_dir.join("garage-init.sh"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "garage-init.sh, {run} run: {text}\ngarage's log:\n{}",
            std::fs::read_to_string(dir.path().join("garage.log")).unwrap_or_default()
        );
        assert!(
            text.contains("may read, write and own bucket picsift"),
            "{text}"
        );
    }

    // bucket-init: `picsift admin bucket` with the compose configuration,
    // pointed at this Garage.
    let local = picsift_toml.replace("http://garage:3900", &format!("http://127.0.0.1:{s3}"));
    let local_config = dir.path().join("picsift.toml");
    std::fs::write(&local_config, local).unwrap();
    let out = Command::new(picsift_bin())
        .args(["admin", "bucket", "--config"])
        .arg(&local_config)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("aborted after 1 day(s)"), "{stdout}");
}
