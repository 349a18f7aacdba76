//! The ML checks with real TorchScript models (`scripts/models.sh`): model
//! configuration errors, batch-size independence, two models of which one
//! rejects, the demo classifiers and NudeNet on images they were not trained
//! on, and the CPU path end to end through the HTTP API with the audit sample.

mod common;

use common::{Server, line, sha256_hex};
use image::RgbImage;
use picsift_core::orientation::Oriented;
use picsift_core::policy::{ModelSpec, Policy, QualityPolicy};
use picsift_core::verdict::Reason;
use picsift_ml::{DeviceChoice, Options, Runtime};
use picsift_tests::ml::{checkerboard, colour_bars, demo_model, labelme_photos, nudenet};
use picsift_tests::{ZipBuilder, encode_jpeg, photo};

/// `PICSIFT_ML_DEVICE` (the GPU check sets `cuda`), else auto.
fn runtime(batch: usize) -> Runtime {
    Runtime::new(Options {
        device: DeviceChoice::from_env().unwrap(),
        batch_size: batch,
        ..Options::default()
    })
    .unwrap()
}

fn load(rt: &Runtime, spec: &ModelSpec) -> Result<(), picsift_ml::ConfigError> {
    rt.load(spec, picsift_ml::read_model_file(spec)?)
}

fn policy(models: Vec<ModelSpec>) -> Policy {
    Policy {
        models,
        quality: QualityPolicy::off(),
        ..Policy::default()
    }
}

fn checker(rt: &Runtime, models: Vec<ModelSpec>) -> picsift_ml::Checker {
    let p = policy(models);
    for m in &p.models {
        load(rt, m).unwrap();
    }
    rt.checker(&p).unwrap()
}

fn decode(path: &std::path::Path) -> RgbImage {
    image::open(path).unwrap().to_rgb8()
}

/// Checks the photo at `path`, which must pass; gives what was measured.
fn passes(c: &picsift_ml::Checker, path: &std::path::Path) -> picsift_core::verdict::Checks {
    let out = c.check_blocking(&decode(path)).unwrap();
    assert_eq!(
        out.rejection,
        None,
        "{}: {:?}",
        path.display(),
        out.checks.scores
    );
    out.checks
}

#[test]
fn a_model_that_does_not_load_or_match_its_declaration_is_a_configuration_error() {
    let rt = runtime(4);
    let good = demo_model("pattern", "pattern", 0.5);
    let err = |spec: &ModelSpec| load(&rt, spec).unwrap_err().to_string();

    let missing = ModelSpec {
        source: "/nonexistent/model.pt".into(),
        ..good.clone()
    };
    assert!(
        err(&missing).contains("cannot read the model file"),
        "{}",
        err(&missing)
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"not a TorchScript archive").unwrap();
    let junk = ModelSpec {
        source: junk.to_string_lossy().into(),
        ..good.clone()
    };
    assert!(
        err(&junk).contains("not a TorchScript module"),
        "{}",
        err(&junk)
    );

    // Declared three labels; the model gives two scores.
    let mut three = good.clone();
    three.labels.push("drawing".into());
    let e = err(&three);
    assert!(e.contains("shape") && e.contains("[2, 3]"), "{e}");

    // The wrong input size fails the dummy forward pass.
    let wrong_size = ModelSpec {
        width: 7,
        height: 7,
        ..good.clone()
    };
    assert!(err(&wrong_size).contains("pattern"), "{}", err(&wrong_size));

    let mut unknown_label = good.clone();
    unknown_label.reject[0].label = "cat".into();
    assert!(err(&unknown_label).contains("not one of the model's labels"));

    let mut bad_threshold = good.clone();
    bad_threshold.reject[0].at_least = 1.5;
    assert!(err(&bad_threshold).contains("between 0 and 1"));

    // Two models of one policy with the same name.
    load(&rt, &good).unwrap();
    let twice = policy(vec![good.clone(), good.clone()]);
    assert!(rt.checker(&twice).is_err());
    // A policy whose model was never loaded.
    let other = demo_model("watermark", "watermark", 0.5);
    assert!(rt.checker(&policy(vec![other])).is_err());
}

/// Images none of the models trained on: generated photos and patterns.
fn mixed_images(n: u32) -> Vec<RgbImage> {
    (0..n)
        .map(|i| match i % 3 {
            0 => photo(u64::from(i) + 7000, 320 + i * 5, 240 + i * 3),
            1 => colour_bars(300 + i, 200),
            _ => checkerboard(256, 256, 8 + i % 20, [20, 20, 20], [230, 230, 230]),
        })
        .collect()
}

#[test]
fn batch_size_1_and_64_give_the_same_scores() {
    let models = || {
        vec![
            demo_model("pattern", "pattern", 0.5),
            demo_model("watermark", "watermark", 0.5),
        ]
    };
    let one = checker(&runtime(1), models());
    let many = checker(&runtime(64), models());
    let images = mixed_images(64);
    // Everything queued at once, so the batching thread sees full batches.
    let pending: Vec<_> = images
        .iter()
        .map(|i| many.submit(many.inputs(&Oriented::upright(i.clone()))))
        .collect();
    for (img, p) in images.iter().zip(pending) {
        let batched = p.wait_blocking().unwrap();
        let single = one.check_blocking(img).unwrap();
        for (model, labels) in &single.checks.scores {
            for (label, s) in labels {
                let b = batched.checks.scores[model][label];
                assert!(
                    (b - s).abs() < 1e-4,
                    "{model}/{label}: batch 64 {b}, batch 1 {s}"
                );
            }
        }
        assert_eq!(batched.rejection, single.rejection);
    }
}

#[test]
fn two_models_one_of_which_rejects_keep_every_score_and_name_the_rule() {
    let c = checker(
        &runtime(8),
        vec![
            demo_model("pattern", "pattern", 0.5),
            demo_model("watermark", "watermark", 0.5),
        ],
    );
    let out = c.check_blocking(&colour_bars(640, 480)).unwrap();
    let r = out.rejection.expect("colour bars are a test pattern");
    assert_eq!(r.reason, Reason::ModelRejected);
    assert!(
        r.detail.contains("model pattern scored label pattern"),
        "{}",
        r.detail
    );
    assert!(r.detail.contains("threshold 0.5"), "{}", r.detail);
    // Both models' scores are kept, the passing one's too.
    assert_eq!(out.checks.scores.len(), 2);
    assert!(out.checks.scores["watermark"].contains_key("watermark"));
    let p = &out.checks.scores["pattern"];
    assert!(
        (p["photo"] + p["pattern"] - 1.0).abs() < 1e-4,
        "softmax scores sum to 1: {p:?}"
    );
}

#[test]
fn the_demo_pattern_classifier_decides_images_it_was_not_trained_on() {
    // The demo policy's threshold.
    let c = checker(&runtime(16), vec![demo_model("pattern", "pattern", 0.8)]);
    // Real photos (the training script never sees the labelme subset) pass.
    for path in &labelme_photos() {
        passes(&c, path);
    }
    // Test patterns drawn here, not by the training script, are rejected.
    for img in [
        colour_bars(800, 600),
        colour_bars(320, 240),
        checkerboard(512, 512, 32, [0, 0, 0], [255, 255, 255]),
        checkerboard(400, 300, 10, [200, 30, 30], [30, 30, 200]),
    ] {
        let out = c.check_blocking(&img).unwrap();
        assert_eq!(
            out.rejection.as_ref().map(|r| r.reason),
            Some(Reason::ModelRejected),
            "{:?}",
            out.checks.scores
        );
    }
}

/// The exposed-nudity labels the default policy rejects.
const EXPOSED: [&str; 5] = [
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
];

#[test]
fn nudenet_passes_ordinary_photos_and_rejects_by_a_harmless_rule() {
    let rt = runtime(4);
    let pass = checker(&rt, vec![nudenet(&EXPOSED, 0.6)]);
    for path in labelme_photos().iter().take(8) {
        assert_eq!(passes(&pass, path).scores["nudenet"].len(), 18);
    }
    // The reject path, without any nudity: a face label at threshold 0.
    let strict = checker(&rt, vec![nudenet(&["FACE_FEMALE"], 0.0)]);
    let out = strict
        .check_blocking(&decode(&labelme_photos()[0]))
        .unwrap();
    let r = out.rejection.expect("a threshold of 0 rejects everything");
    assert!(
        r.detail.contains("model nudenet scored label FACE_FEMALE"),
        "{}",
        r.detail
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cpu_path_end_to_end_through_the_http_api_with_the_audit_sample() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = demo_model("pattern", "pattern", 0.5);
    let watermark = demo_model("watermark", "watermark", 0.5);
    let net = nudenet(&EXPOSED, 0.6);
    let toml = toml::to_string(&serde_json::json!({
        "audit_sample_rate": 1.0,
        "quality": { "min_contrast": 2.0, "min_sharpness": 0.0, "max_overexposed": 0.9, "max_underexposed": 0.9 },
        "models": [pattern, watermark, net],
    }))
    .unwrap();
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(&policy_file, toml).unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[
            "--policy",
            policy_file.to_str().unwrap(),
            "--ml-device",
            "cpu",
        ],
    );

    let real = std::fs::read(&labelme_photos()[1]).unwrap();
    let bars = encode_jpeg(&colour_bars(640, 480), 90);
    let blank = encode_jpeg(
        &RgbImage::from_pixel(320, 240, image::Rgb([90, 90, 90])),
        90,
    );
    let zip = ZipBuilder::new()
        .stored("photo.jpg", &real)
        .stored("bars.jpg", &bars)
        .stored("blank.jpg", &blank)
        .stored("notes.jpg", b"plain text")
        .finish();
    let id = server.upload_ok(zip).await;
    server.wait_done(&id).await;
    let report = server.report(&id).await;

    let ok = line(&report, "photo.jpg");
    assert_eq!(ok["verdict"], "accepted", "{ok}");
    let scores = &ok["checks"]["scores"];
    for model in ["pattern", "watermark", "nudenet"] {
        assert!(scores[model].is_object(), "{ok}");
    }
    assert!(
        ok["checks"]["quality"]["sharpness"].as_f64().unwrap() > 0.0,
        "{ok}"
    );

    let rejected = line(&report, "bars.jpg");
    assert_eq!(rejected["reason"], "model_rejected", "{rejected}");
    assert!(
        rejected["checks"]["scores"]["pattern"]["pattern"]
            .as_f64()
            .unwrap()
            >= 0.5
    );
    assert_eq!(line(&report, "blank.jpg")["reason"], "blank");
    assert_eq!(line(&report, "notes.jpg")["reason"], "not_an_image");

    // Only the accepted photo is a stored image.
    let images = server.get_json(&format!("/v1/images?batch={id}")).await;
    assert_eq!(images["images"].as_array().unwrap().len(), 1, "{images}");

    // Search by score: the stored photo scored "photo" above 0.5, nothing
    // stored scored "pattern" above 0.5.
    let photo_id = ok["image_id"].as_str().unwrap();
    let found = server.get_json("/v1/images?score=pattern:photo:0.5").await;
    let ids: Vec<&str> = found["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [photo_id], "{found}");
    let none = server
        .get_json("/v1/images?score=pattern:pattern:0.5")
        .await;
    assert!(none["images"].as_array().unwrap().is_empty(), "{none}");
    let r = server
        .client()
        .get(server.url("/v1/images?score=pattern:0.5"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A sample rate of 1: every entry is in the audit area, with its
    // verdict and scores, and its bytes as uploaded.
    let audit = server.get_json(&format!("/v1/audit?batch={id}")).await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{audit}");
    let bars_audit = entries.iter().find(|e| e["entry"] == "bars.jpg").unwrap();
    assert_eq!(bars_audit["reason"], "model_rejected");
    assert!(bars_audit["checks"]["scores"]["nudenet"].is_object());
    let link = bars_audit["content"].as_str().unwrap();
    let got = server
        .client()
        .get(server.url(link))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256_hex(&got), sha256_hex(&bars));
    let r = server
        .client()
        .get(server.url("/v1/audit?batch=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = server
        .client()
        .get(server.url("/v1/audit"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[test]
fn a_server_with_a_bad_model_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = demo_model("pattern", "pattern", 0.5);
    bad.labels.push("third".into());
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(
        &policy_file,
        toml::to_string(&serde_json::json!({ "models": [bad] })).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(common::picsift_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .arg("--policy")
        .arg(&policy_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("model \"pattern\"") && stderr.contains("shape"),
        "{stderr}"
    );
}

/// The demo (scripts/demo.sh) uploads `picsift_tests::demo_zip()` to a
/// server with policies/demo.toml: every entry gets the verdict its
/// description promises, with real photos and a model a person can read.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_batch_tells_its_story() {
    picsift_tests::ml::models_dir();
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/demo.toml");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--policy", policy.to_str().unwrap()]);
    let id = server.upload_ok(picsift_tests::demo_zip()).await;
    server.wait_done(&id).await;
    let report = server.report(&id).await;
    // (entry, verdict, reason, what a duplicate names)
    let story: &[(&str, &str, &str, &str)] = &[
        ("photos/bridge.jpg", "accepted", "", ""),
        (
            "photos/bridge-copy.jpg",
            "duplicate",
            "",
            "photos/bridge.jpg",
        ),
        (
            "photos/bridge-saturated.jpg",
            "duplicate",
            "",
            "photos/bridge.jpg",
        ),
        (
            "photos/bridge-from-iphone.heic",
            "duplicate",
            "",
            "photos/bridge.jpg",
        ),
        ("photos/portrait.jpg", "accepted", "", ""),
        ("photos/canal-houses.jpg", "accepted", "", ""),
        ("photos/people.jpg", "accepted", "", ""),
        ("photos/stairs.jpg", "accepted", "", ""),
        ("photos/blank.png", "rejected", "blank", ""),
        ("notes.jpg", "rejected", "not_an_image", ""),
        ("cut_off.jpg", "rejected", "truncated", ""),
    ];
    assert_eq!(report.len(), story.len(), "{report:#?}");
    let bridge = line(&report, "photos/bridge.jpg")["image_id"].clone();
    for (entry, verdict, reason, original) in story {
        let l = line(&report, entry);
        assert_eq!(l["verdict"], *verdict, "{entry}: {l}");
        if !reason.is_empty() {
            assert_eq!(l["reason"], *reason, "{entry}: {l}");
        }
        if !original.is_empty() {
            assert_eq!(l["duplicate_of"], bridge, "{entry}: {l}");
        }
        if *verdict == "accepted" {
            assert!(l["checks"]["scores"]["nudenet"].is_object(), "{entry}: {l}");
        }
    }
}
