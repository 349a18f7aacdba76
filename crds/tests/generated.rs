//! The committed CRD YAML is what the Rust types generate, and the
//! examples parse as the types they claim to be.

use picsift_crds::{OUTPUT_DIRS, UploadBatch, ValidationPolicy, WorkerPool, crds, to_yaml};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn committed_crd_yaml_is_up_to_date() {
    let mut stale = Vec::new();
    for dir in OUTPUT_DIRS {
        for (file, crd) in crds() {
            let path = root().join(dir).join(file);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            if committed != to_yaml(&crd) {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale CRD YAML: {stale:?}; regenerate with `cargo run -p picsift -- crd --write .`"
    );
}

#[test]
fn examples_parse_as_their_kinds() {
    let dir = root().join("crds/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let parsed = match kind.as_str() {
            "UploadBatch" => serde_yaml::from_value::<UploadBatch>(value).map(|_| ()),
            "ValidationPolicy" => serde_yaml::from_value::<ValidationPolicy>(value).map(|_| ()),
            "WorkerPool" => serde_yaml::from_value::<WorkerPool>(value).map(|_| ()),
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        };
        parsed.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
    }
    assert!(
        seen >= 4,
        "expected the example manifests in {}",
        dir.display()
    );
}

#[test]
fn crds_carry_the_cel_rules() {
    let yaml: String = crds().iter().map(|(_, c)| to_yaml(c)).collect();
    for rule in [
        "self == oldSelf",
        "self > 0 && self <= 604800",
        "self.minWorkers <= self.maxWorkers",
        "has(self.key) != has(self.prefix)",
    ] {
        assert!(yaml.contains(rule), "missing CEL rule {rule}");
    }
}
