//! One conformance suite for the catalog role, run against the embedded
//! SQLite catalog and against PostgreSQL (a real server started by the
//! harness). Each behaviour is a generic function of an `Arc<dyn Catalog>`
//! holding nothing else; `catalog_conforms!` turns every behaviour into one
//! test per backend (`sqlite::…`, `postgres::…`).

use picsift_backends::sql::SqlCatalog;
use picsift_core::backend::{Catalog, Delivery, NewBatch, QuotaCheck, Reservation, Stored};
use picsift_core::format::Format;
use picsift_core::model::{
    BatchRecord, Counts, EntryPlan, ImageRecord, NotifyState, Phase, ReportEntry, StoredClaims,
};
use picsift_core::time::Millis;
use picsift_core::verdict::{Reason, Verdict};
use picsift_tests::services::postgres::Postgres;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Concurrent callers in the race tests: more than the cores here, so the
/// calls really overlap in the database.
const RACERS: u32 = 16;

const T0: Millis = 1_700_000_000_000;
const HOOK: &str = "https://example.test/hook";

// ---------------------------------------------------------------- fixtures

fn new_batch(id: &str, callback: Option<&str>, now: Millis) -> NewBatch {
    NewBatch {
        id: id.into(),
        owner: "default".into(),
        staged_key: format!("staging/{id}.zip"),
        // Above 4 GiB: sizes must survive as 64-bit numbers.
        upload_bytes: 5_000_000_000,
        total_entries: 3,
        callback_url: callback.map(Into::into),
        now,
    }
}

fn entry(index: u32, compressed_size: u64) -> EntryPlan {
    EntryPlan {
        index,
        name: format!("photos/img_{index:03}.jpg"),
        compressed_size,
    }
}

fn entries(n: u32) -> Vec<EntryPlan> {
    (0..n).map(|i| entry(i, 1000 + u64::from(i))).collect()
}

/// A 64-hex-digit image id starting with `prefix`.
fn image_id(prefix: &str) -> String {
    format!("{prefix:0<64}")
}

fn image(id: &str, batch: &str, index: u32) -> ImageRecord {
    ImageRecord {
        id: id.into(),
        format: Format::Jpeg,
        width: 4000,
        height: 3000,
        size: 2_345_678,
        orientation: Some(6),
        owner: "default".into(),
        batch_id: batch.into(),
        entry_index: index,
        entry_name: format!("photos/img_{index:03}.jpg"),
        pdq: Some("c3".repeat(32)),
        pdq_quality: Some(87),
        created_ms: T0 + 7,
    }
}

fn rejected(detail: &str) -> Verdict {
    Verdict::refused(Reason::Truncated, detail)
}

/// A batch with `n` planned entries, in phase processing.
async fn planned(c: &Arc<dyn Catalog>, id: &str, callback: Option<&str>, n: u32) {
    c.create_batch(&new_batch(id, callback, T0)).await.unwrap();
    c.record_entries(id, &entries(n), T0 + 10).await.unwrap();
}

/// Gives every pending entry of the batch a verdict.
async fn decide_all(c: &Arc<dyn Catalog>, id: &str) {
    for (i, _) in c.pending_entries(id).await.unwrap() {
        c.record_verdict(id, i, &rejected("cut off"), T0 + 20)
            .await
            .unwrap();
    }
}

async fn batch(c: &Arc<dyn Catalog>, id: &str) -> BatchRecord {
    c.batch(id).await.unwrap().expect("the batch exists")
}

async fn indices(c: &Arc<dyn Catalog>, id: &str, after: Option<u32>, limit: u32) -> Vec<u32> {
    c.report(id, after, limit)
        .await
        .unwrap()
        .iter()
        .map(|e| e.index)
        .collect()
}

fn ids(batches: &[BatchRecord]) -> Vec<&str> {
    batches.iter().map(|b| b.id.as_str()).collect()
}

// ---------------------------------------------------------------- batches

async fn a_created_batch_reads_back_in_phase_received(c: Arc<dyn Catalog>) {
    c.create_batch(&new_batch("plain", None, T0)).await.unwrap();
    c.create_batch(&new_batch("hooked", Some(HOOK), T0 + 1))
        .await
        .unwrap();
    let expected = BatchRecord {
        id: "plain".into(),
        owner: "default".into(),
        phase: Phase::Received,
        staged_key: "staging/plain.zip".into(),
        upload_bytes: 5_000_000_000,
        total_entries: 3,
        error: None,
        callback_url: None,
        notify_state: NotifyState::None,
        notify_attempts: 0,
        notify_last_error: None,
        notify_next_at: None,
        notify_delivered_at: None,
        created_at: T0,
        updated_at: T0,
        started_at: None,
        completed_at: None,
    };
    assert_eq!(batch(&c, "plain").await, expected);
    let hooked = batch(&c, "hooked").await;
    assert_eq!(hooked.callback_url.as_deref(), Some(HOOK));
    // Pending, but not due before the batch finishes.
    assert_eq!(hooked.notify_state, NotifyState::Pending);
    assert_eq!(hooked.notify_next_at, None);
    assert_eq!(c.batch("missing").await.unwrap(), None);
    assert_eq!(c.counts("plain").await.unwrap(), Counts::default());
}

async fn creating_an_existing_batch_id_fails_and_changes_nothing(c: Arc<dyn Catalog>) {
    c.create_batch(&new_batch("b", None, T0)).await.unwrap();
    let mut again = new_batch("b", Some(HOOK), T0 + 5);
    again.staged_key = "staging/other.zip".into();
    assert!(c.create_batch(&again).await.is_err());
    let b = batch(&c, "b").await;
    assert_eq!(
        (b.staged_key.as_str(), b.callback_url, b.created_at),
        ("staging/b.zip", None, T0)
    );
}

async fn planning_records_entries_and_moves_the_batch_to_processing(c: Arc<dyn Catalog>) {
    c.create_batch(&new_batch("b", None, T0)).await.unwrap();
    c.record_entries("b", &entries(4), T0 + 10).await.unwrap();
    let b = batch(&c, "b").await;
    assert_eq!(b.phase, Phase::Processing);
    assert_eq!(b.total_entries, 4);
    assert_eq!((b.started_at, b.updated_at), (Some(T0 + 10), T0 + 10));
    assert_eq!(
        c.counts("b").await.unwrap(),
        Counts {
            pending: 4,
            ..Counts::default()
        }
    );
    let report = c.report("b", None, 100).await.unwrap();
    let expected: Vec<ReportEntry> = entries(4)
        .into_iter()
        .map(|e| ReportEntry::new(e.index, e.name, None))
        .collect();
    assert_eq!(report, expected);
}

async fn planning_again_adds_nothing_and_keeps_verdicts_names_and_start_time(c: Arc<dyn Catalog>) {
    planned(&c, "b", None, 3).await;
    assert!(
        c.record_verdict("b", 1, &rejected("cut off"), T0 + 15)
            .await
            .unwrap()
    );
    // A re-plan after a restart: same entries, here under other names.
    let renamed: Vec<EntryPlan> = entries(3)
        .into_iter()
        .map(|e| EntryPlan {
            name: format!("renamed/{}", e.name),
            ..e
        })
        .collect();
    c.record_entries("b", &renamed, T0 + 20).await.unwrap();
    let b = batch(&c, "b").await;
    assert_eq!(b.phase, Phase::Processing);
    assert_eq!(
        (b.total_entries, b.started_at, b.updated_at),
        (3, Some(T0 + 10), T0 + 20)
    );
    let report = c.report("b", None, 100).await.unwrap();
    assert_eq!(report.len(), 3);
    assert!(
        report.iter().all(|l| l.entry.starts_with("photos/")),
        "the first plan's names stay: {report:?}"
    );
    assert_eq!(report[1].verdict, "rejected");
    assert_eq!(
        c.counts("b").await.unwrap(),
        Counts {
            rejected: 1,
            pending: 2,
            ..Counts::default()
        }
    );
}

async fn planning_does_not_revive_a_failed_batch(c: Arc<dyn Catalog>) {
    c.create_batch(&new_batch("b", None, T0)).await.unwrap();
    c.fail_batch("b", "archive unreadable", T0 + 5)
        .await
        .unwrap();
    c.record_entries("b", &entries(2), T0 + 10).await.unwrap();
    let b = batch(&c, "b").await;
    assert_eq!(
        (b.phase, b.started_at, b.updated_at),
        (Phase::Failed, None, T0 + 5)
    );
}

// ---------------------------------------------------------------- entries

async fn counts_tally_each_verdict_kind_and_the_pending_entries(c: Arc<dyn Catalog>) {
    planned(&c, "b", None, 7).await;
    let verdicts = [
        Verdict::accepted(image_id("a1")),
        Verdict::exact_duplicate(image_id("a1")),
        rejected("cut off"),
        Verdict::refused(Reason::StorageError, "S3 answered 503"),
        Verdict::accepted(image_id("a2")),
        Verdict::refused(Reason::NotAnImage, "text"),
    ];
    for (i, v) in verdicts.iter().enumerate() {
        assert!(c.record_verdict("b", i as u32, v, T0 + 20).await.unwrap());
    }
    let expected = Counts {
        accepted: 2,
        duplicate: 1,
        rejected: 2,
        failed: 1,
        pending: 1,
    };
    assert_eq!(c.counts("b").await.unwrap(), expected);
    assert_eq!(c.counts("unknown").await.unwrap(), Counts::default());
}

async fn pending_entries_are_the_undecided_ones_with_sizes_in_index_order(c: Arc<dyn Catalog>) {
    c.create_batch(&new_batch("b", None, T0)).await.unwrap();
    // Planned out of order; one entry larger than 4 GiB.
    let plan = vec![
        entry(3, 30),
        entry(0, 5_000_000_000),
        entry(2, 20),
        entry(1, 10),
    ];
    c.record_entries("b", &plan, T0 + 10).await.unwrap();
    c.record_verdict("b", 2, &rejected("cut off"), T0 + 20)
        .await
        .unwrap();
    assert_eq!(
        c.pending_entries("b").await.unwrap(),
        vec![(0, 5_000_000_000), (1, 10), (3, 30)]
    );
    decide_all(&c, "b").await;
    assert_eq!(c.pending_entries("b").await.unwrap(), vec![]);
    assert_eq!(c.pending_entries("unknown").await.unwrap(), vec![]);
}

async fn undecided_between_is_inclusive_and_skips_decided_entries(c: Arc<dyn Catalog>) {
    planned(&c, "b", None, 10).await;
    for i in [3, 5] {
        c.record_verdict("b", i, &rejected("cut off"), T0 + 20)
            .await
            .unwrap();
    }
    assert_eq!(c.undecided_between("b", 2, 6).await.unwrap(), vec![2, 4, 6]);
    assert_eq!(
        c.undecided_between("b", 0, 9).await.unwrap(),
        vec![0, 1, 2, 4, 6, 7, 8, 9]
    );
    assert_eq!(c.undecided_between("b", 7, 7).await.unwrap(), vec![7]);
    assert_eq!(
        c.undecided_between("b", 3, 3).await.unwrap(),
        Vec::<u32>::new()
    );
    assert_eq!(
        c.undecided_between("b", 20, 30).await.unwrap(),
        Vec::<u32>::new()
    );
    assert_eq!(
        c.undecided_between("unknown", 0, 9).await.unwrap(),
        Vec::<u32>::new()
    );
}

async fn report_pages_by_index_after_the_cursor(c: Arc<dyn Catalog>) {
    planned(&c, "b", None, 5).await;
    assert_eq!(indices(&c, "b", None, 2).await, vec![0, 1]);
    assert_eq!(indices(&c, "b", Some(1), 2).await, vec![2, 3]);
    assert_eq!(indices(&c, "b", Some(3), 2).await, vec![4]);
    assert_eq!(indices(&c, "b", Some(4), 2).await, Vec::<u32>::new());
    assert_eq!(indices(&c, "b", None, 0).await, Vec::<u32>::new());
    assert_eq!(indices(&c, "unknown", None, 10).await, Vec::<u32>::new());
}

async fn report_lines_carry_each_verdict_as_recorded(c: Arc<dyn Catalog>) {
    planned(&c, "b", None, 6).await;
    let verdicts = [
        Verdict::exact_duplicate(image_id("a1")),
        Verdict::accepted(image_id("a1")),
        Verdict::near_duplicate(image_id("a1"), 17),
        Verdict::refused(Reason::TrailingData, "41 bytes follow the end of the image"),
        Verdict::refused(
            Reason::RetriesExhausted,
            "chunk dead-lettered after 5 deliveries",
        ),
    ];
    for (i, v) in verdicts.iter().enumerate() {
        c.record_verdict("b", i as u32, v, T0 + 20).await.unwrap();
    }
    let report = c.report("b", None, 10).await.unwrap();
    let mut expected: Vec<ReportEntry> = verdicts
        .iter()
        .enumerate()
        .map(|(i, v)| ReportEntry::new(i as u32, format!("photos/img_{i:03}.jpg"), Some(v.clone())))
        .collect();
    expected.push(ReportEntry::new(5, "photos/img_005.jpg".into(), None));
    assert_eq!(report, expected);
    assert_eq!(
        report
            .iter()
            .map(ReportEntry::is_decided)
            .collect::<Vec<_>>(),
        [true, true, true, true, true, false]
    );
    assert_eq!(report[5].verdict, "pending");
    assert_eq!(report[2].distance, Some(17));
}

/// A hash `bits` flips away from `base` (flipping bits 0, 8, 16, ...: one
/// per byte, so up to 32 flips land in distinct bytes).
fn pdq_flipped(base: &picsift_core::pdq::Hash, bits: usize) -> picsift_core::pdq::Hash {
    let mut b = base.to_bytes();
    for k in 0..bits {
        b[k % 32] ^= 1 << (k / 32);
    }
    picsift_core::pdq::Hash::from_bytes(b)
}

async fn similar_finds_every_indexed_neighbour_within_the_distance_nearest_first(
    c: Arc<dyn Catalog>,
) {
    let base: picsift_core::pdq::Hash = "9d".repeat(32).parse().unwrap();
    // Neighbours at 0, 5, 16, 31 and 32 bits, one of low quality, and
    // one image without a hash.
    let cases: [(usize, u8, &str); 6] = [
        (0, 90, "n00"),
        (5, 90, "n05"),
        (16, 60, "n16"),
        (31, 50, "n31"),
        (32, 90, "n32"),
        (1, 49, "low"),
    ];
    for (i, (bits, quality, name)) in cases.iter().enumerate() {
        let mut img = image(&image_id(name), "b", i as u32);
        img.pdq = Some(pdq_flipped(&base, *bits).to_string());
        img.pdq_quality = Some(*quality);
        c.insert_image(&img).await.unwrap();
    }
    let mut none = image(&image_id("nohash"), "b", 9);
    none.pdq = None;
    none.pdq_quality = None;
    c.insert_image(&none).await.unwrap();

    let found = c.similar(&base, 31, 10, None).await.unwrap();
    let got: Vec<(String, u32)> = found
        .into_iter()
        .map(|s| (s.image_id, s.distance))
        .collect();
    assert_eq!(
        got,
        vec![
            (image_id("n00"), 0),
            (image_id("n05"), 5),
            (image_id("n16"), 16),
            (image_id("n31"), 31),
        ],
        "within 31 bits, nearest first; quality 49 is never matched"
    );
    let near: Vec<u32> = c
        .similar(&base, 10, 10, None)
        .await
        .unwrap()
        .iter()
        .map(|s| s.distance)
        .collect();
    assert_eq!(near, vec![0, 5]);
    assert_eq!(
        c.similar(&base, 31, 2, None).await.unwrap().len(),
        2,
        "limit"
    );
    let far: picsift_core::pdq::Hash = "62".repeat(32).parse().unwrap();
    assert!(c.similar(&far, 31, 10, None).await.unwrap().is_empty());
}

async fn image_search_filters_sorts_and_pages_like_the_model(c: Arc<dyn Catalog>) {
    use picsift_core::model::{ImageCursor, ImageFilter, ImageSort};
    let mut all = Vec::new();
    for i in 0..40u32 {
        let mut img = image(
            &image_id(&format!("s{i:02}")),
            ["b1", "b2", "b3"][i as usize % 3],
            i,
        );
        img.format = if i % 4 == 0 {
            Format::Png
        } else {
            Format::Jpeg
        };
        img.width = 100 + (i * 37) % 900;
        img.height = 80 + (i * 53) % 700;
        img.size = u64::from(1000 + (i * 7919) % 5000);
        img.created_ms = T0 + i64::from(i / 2) * 1000; // ties in pairs
        c.insert_image(&img).await.unwrap();
        // Model scores: "m" scores label "x" at i/40 (and "y" the rest).
        let x = f64::from(i) / 40.0;
        let scores = [(
            "m".to_string(),
            [("x".to_string(), x), ("y".to_string(), 1.0 - x)].into(),
        )]
        .into();
        c.record_scores(&img.id, &scores).await.unwrap();
        c.record_scores(&img.id, &scores).await.unwrap(); // again: no change
        all.push(img);
    }
    let x_of = |i: &ImageRecord| {
        let n = all.iter().position(|a| a.id == i.id).unwrap();
        n as f64 / 40.0
    };
    let score = |label: &str, above: f64| picsift_core::model::ScoreFilter {
        model: "m".into(),
        label: label.into(),
        above,
    };
    let filters = [
        ImageFilter::default(),
        ImageFilter {
            batch: Some("b2".into()),
            ..ImageFilter::default()
        },
        ImageFilter {
            format: Some(Format::Png),
            ..ImageFilter::default()
        },
        ImageFilter {
            created_from: Some(T0 + 5000),
            created_to: Some(T0 + 15000),
            min_width: Some(300),
            max_height: Some(600),
            ..ImageFilter::default()
        },
        ImageFilter {
            min_width: Some(2000),
            ..ImageFilter::default()
        },
        ImageFilter {
            min_score: Some(score("x", 0.5)),
            ..ImageFilter::default()
        },
        ImageFilter {
            min_score: Some(score("y", 0.7)),
            format: Some(Format::Jpeg),
            ..ImageFilter::default()
        },
        ImageFilter {
            min_score: Some(picsift_core::model::ScoreFilter {
                model: "other".into(),
                ..score("x", 0.0)
            }),
            ..ImageFilter::default()
        },
    ];
    let sorts = [
        ImageSort::NewestFirst,
        ImageSort::OldestFirst,
        ImageSort::LargestFirst,
        ImageSort::SmallestFirst,
    ];
    for f in &filters {
        for sort in sorts {
            // The model: `matches`, and the scores recorded above.
            let scored = |i: &ImageRecord| {
                f.min_score.as_ref().is_none_or(|s| {
                    let x = x_of(i);
                    let v = if s.label == "x" { x } else { 1.0 - x };
                    s.model == "m" && v > s.above
                })
            };
            let mut want: Vec<&ImageRecord> =
                all.iter().filter(|i| f.matches(i) && scored(i)).collect();
            want.sort_by(|a, b| {
                let o = sort.key(a).cmp(&sort.key(b)).then_with(|| a.id.cmp(&b.id));
                if sort.descending() { o.reverse() } else { o }
            });
            let mut got: Vec<String> = Vec::new();
            let mut after: Option<ImageCursor> = None;
            loop {
                let page = c.search_images(f, sort, after.as_ref(), 7).await.unwrap();
                got.extend(page.iter().map(|i| i.id.clone()));
                match page.last() {
                    Some(last) if page.len() == 7 => after = Some(ImageCursor::after(sort, last)),
                    _ => break,
                }
            }
            let want: Vec<String> = want.iter().map(|i| i.id.clone()).collect();
            assert_eq!(got, want, "{f:?} {sort:?}");
        }
    }
}

async fn known_originals_answer_from_the_first_record_of_each_file(c: Arc<dyn Catalog>) {
    let (f1, f2, f3) = (image_id("f1"), image_id("f2"), image_id("f3"));
    c.record_original(&f1, &image_id("img1")).await.unwrap();
    c.record_original(&f2, &image_id("img1")).await.unwrap();
    c.record_original(&f1, &image_id("other")).await.unwrap();
    let known = c
        .known_originals(&[f3.clone(), f2.clone(), f1.clone()], None)
        .await
        .unwrap();
    let mut want = vec![(f1, image_id("img1")), (f2, image_id("img1"))];
    want.sort();
    assert_eq!(known, want);
    assert!(c.known_originals(&[], None).await.unwrap().is_empty());
}

async fn of_near_duplicates_inserted_at_once_exactly_one_is_recorded(c: Arc<dyn Catalog>) {
    // Several rounds, each of 16 near duplicates released at once.
    let mut last_recorded = String::new();
    for round in 0..4u8 {
        let base = picsift_core::pdq::Hash::from_bytes([round.wrapping_mul(37) ^ 0x5a; 32]);
        let start = Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16usize)
            .map(|i| {
                let (c, start) = (c.clone(), start.clone());
                let mut img = image(&image_id(&format!("near{round}-{i:02}-")), "b", i as u32);
                img.pdq = Some(pdq_flipped(&base, i).to_string());
                img.pdq_quality = Some(80);
                tokio::spawn(async move {
                    start.wait().await;
                    let told = c.insert_image_unless_near(&img, 31, None).await.unwrap();
                    (img.id.clone(), told)
                })
            })
            .collect();
        let mut recorded = Vec::new();
        let mut told = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (id, None) => recorded.push(id),
                (id, Some(m)) => told.push((id, m)),
            }
        }
        assert_eq!(recorded.len(), 1, "round {round}: recorded {recorded:?}");
        for (id, m) in &told {
            assert_eq!(
                &m.image_id, &recorded[0],
                "{id} was told about another image"
            );
            assert!(
                c.image(id).await.unwrap().is_none(),
                "{id} was not recorded"
            );
        }
        last_recorded = recorded[0].clone();
    }
    let recorded = [last_recorded];
    // Inserting the recorded image again is not a near duplicate of itself.
    let again = c.image(&recorded[0]).await.unwrap().unwrap();
    assert_eq!(
        c.insert_image_unless_near(&again, 31, None).await.unwrap(),
        None
    );
    // A far image goes in.
    let mut far = image(&image_id("far"), "b", 99);
    far.pdq = Some("a5".repeat(32));
    far.pdq_quality = Some(80);
    assert_eq!(
        c.insert_image_unless_near(&far, 31, None).await.unwrap(),
        None
    );
    assert!(c.image(&far.id).await.unwrap().is_some());
}

async fn api_keys_are_found_by_hash_listed_and_revoked(c: Arc<dyn Catalog>) {
    use picsift_core::auth::{Role, generate};
    let a = generate("acme", Role::Tenant, "ci", T0).unwrap();
    let root = generate("default", Role::Admin, "", T0 + 1).unwrap();
    c.create_api_key(&a.key, &a.hash).await.unwrap();
    c.create_api_key(&root.key, &root.hash).await.unwrap();
    assert_eq!(
        c.api_key_by_hash(&a.hash).await.unwrap(),
        Some(a.key.clone())
    );
    assert_eq!(
        c.api_key_by_hash(&root.hash).await.unwrap().unwrap().role,
        Role::Admin
    );
    assert_eq!(c.api_key_by_hash(&"0".repeat(64)).await.unwrap(), None);
    assert_eq!(
        c.api_keys().await.unwrap(),
        vec![a.key.clone(), root.key.clone()]
    );
    assert!(c.revoke_api_key(&a.key.id, T0 + 5).await.unwrap());
    assert!(!c.revoke_api_key(&a.key.id, T0 + 6).await.unwrap(), "once");
    assert!(!c.revoke_api_key("nope", T0 + 6).await.unwrap());
    assert_eq!(c.api_key_by_hash(&a.hash).await.unwrap(), None, "revoked");
    assert_eq!(c.api_keys().await.unwrap()[0].revoked_at, Some(T0 + 5));
}

async fn owners_scope_images_searches_and_quotas(c: Arc<dyn Catalog>) {
    use picsift_core::model::{ImageFilter, ImageSort};
    // Batches: open ones and bytes uploaded since a time, per owner.
    let mut b1 = new_batch("a1", None, T0);
    b1.owner = "acme".into();
    let mut b2 = new_batch("a2", None, T0 + 100);
    b2.owner = "acme".into();
    let b3 = new_batch("d1", None, T0 + 100);
    for b in [&b1, &b2, &b3] {
        c.create_batch(b).await.unwrap();
    }
    assert_eq!(c.batch("a1").await.unwrap().unwrap().owner, "acme");
    assert_eq!(c.open_batches("acme").await.unwrap(), 2);
    assert_eq!(
        c.uploaded_bytes_since("acme", T0).await.unwrap(),
        10_000_000_000
    );
    assert_eq!(
        c.uploaded_bytes_since("acme", T0 + 1).await.unwrap(),
        5_000_000_000
    );
    assert_eq!(c.uploaded_bytes_since("nobody", 0).await.unwrap(), 0);
    c.fail_batch("a1", "x", T0 + 200).await.unwrap();
    assert_eq!(c.open_batches("acme").await.unwrap(), 1);

    // An image stored by acme, then by bravo (per-tenant dedup).
    let id = image_id("own");
    let mut img = image(&id, "a2", 0);
    img.owner = "acme".into();
    c.insert_image(&img).await.unwrap();
    let mut again = img.clone();
    again.owner = "bravo".into();
    again.batch_id = "b9".into();
    c.insert_image(&again).await.unwrap();
    let stored = c.image(&id).await.unwrap().unwrap();
    assert_eq!(
        (stored.owner.as_str(), stored.batch_id.as_str()),
        ("acme", "a2"),
        "the first record stays"
    );
    let ids = vec![id.clone(), image_id("other")];
    assert_eq!(
        c.owned_images("acme", &ids).await.unwrap(),
        vec![id.clone()]
    );
    assert_eq!(
        c.owned_images("bravo", &ids).await.unwrap(),
        vec![id.clone()]
    );
    assert!(c.owned_images("carol", &ids).await.unwrap().is_empty());
    assert_eq!(c.image_owners(&id).await.unwrap(), ["acme", "bravo"]);
    assert!(c.image_owners(&image_id("none")).await.unwrap().is_empty());

    // Searches, similar and lookup are scoped by owner.
    let search = |owner: &str| ImageFilter {
        owner: Some(owner.into()),
        ..ImageFilter::default()
    };
    for (owner, n) in [("acme", 1), ("bravo", 1), ("carol", 0)] {
        let found = c
            .search_images(&search(owner), ImageSort::default(), None, 10)
            .await
            .unwrap();
        assert_eq!(found.len(), n, "{owner}");
    }
    let hash: picsift_core::pdq::Hash = img.pdq.clone().unwrap().parse().unwrap();
    assert_eq!(
        c.similar(&hash, 0, 5, Some("bravo")).await.unwrap().len(),
        1
    );
    assert!(
        c.similar(&hash, 0, 5, Some("carol"))
            .await
            .unwrap()
            .is_empty()
    );
    c.record_original(&image_id("file"), &id).await.unwrap();
    let f = vec![image_id("file")];
    assert_eq!(c.known_originals(&f, Some("acme")).await.unwrap().len(), 1);
    assert!(
        c.known_originals(&f, Some("carol"))
            .await
            .unwrap()
            .is_empty()
    );
    // Near duplicates: another tenant's image does not count in its scope.
    let mut near = image(&image_id("near"), "c1", 0);
    near.owner = "carol".into();
    assert!(
        c.insert_image_unless_near(&near, 31, Some("carol"))
            .await
            .unwrap()
            .is_none()
    );
    let mut near2 = image(&image_id("near2"), "a3", 0);
    near2.owner = "acme".into();
    let told = c
        .insert_image_unless_near(&near2, 31, Some("acme"))
        .await
        .unwrap();
    assert_eq!(
        told.map(|m| m.image_id),
        Some(id.clone()),
        "acme's own image counts"
    );
}

async fn batches_list_newest_first_by_owner_with_cursors(c: Arc<dyn Catalog>) {
    // Five batches, two of them at the same time (ties go by id).
    for (id, owner, at) in [
        ("b1", "acme", T0),
        ("b2", "bravo", T0 + 1),
        ("b3", "acme", T0 + 2),
        ("b4", "acme", T0 + 2),
        ("b5", "bravo", T0 + 3),
    ] {
        let mut b = new_batch(id, None, at);
        b.owner = owner.into();
        c.create_batch(&b).await.unwrap();
    }
    let ids = |v: Vec<BatchRecord>| v.into_iter().map(|b| b.id).collect::<Vec<_>>();
    assert_eq!(
        ids(c.list_batches(None, None, 10).await.unwrap()),
        ["b5", "b4", "b3", "b2", "b1"]
    );
    assert_eq!(
        ids(c.list_batches(Some("acme"), None, 10).await.unwrap()),
        ["b4", "b3", "b1"]
    );
    // Pages of two, each after the last of the one before.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = c.list_batches(None, after.clone(), 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|b| (b.created_at, b.id.clone()));
        seen.extend(ids(page));
    }
    assert_eq!(seen, ["b5", "b4", "b3", "b2", "b1"]);
    assert!(
        c.list_batches(Some("nobody"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn attempts_count_for_undecided_entries_only(c: Arc<dyn Catalog>) {
    planned(&c, "b", None, 2).await;
    assert_eq!(c.begin_attempt("b", 0).await.unwrap(), 1);
    assert_eq!(c.begin_attempt("b", 0).await.unwrap(), 2);
    c.end_attempt("b", 0).await.unwrap();
    assert_eq!(c.begin_attempt("b", 0).await.unwrap(), 2, "one start ended");
    c.end_attempt("b", 1).await.unwrap();
    assert_eq!(c.begin_attempt("b", 1).await.unwrap(), 1, "never below 0");
    c.record_verdict("b", 1, &Verdict::accepted(image_id("x")), T0)
        .await
        .unwrap();
    assert_eq!(c.begin_attempt("b", 1).await.unwrap(), 0, "decided");
    assert_eq!(c.begin_attempt("b", 7).await.unwrap(), 0, "unknown");
}

async fn noted_orphan_bytes_are_marked_for_deletion_only_without_a_record(c: Arc<dyn Catalog>) {
    planned(&c, "b", None, 1).await;
    let (kept, lone, fresh) = (image_id("kept"), image_id("lone"), image_id("fresh"));
    // "kept" is recorded (another tenant's record, say); "lone" is not.
    c.insert_image(&image(&kept, "b", 0)).await.unwrap();
    for id in [&kept, &lone] {
        c.note_orphan_blob(id, T0).await.unwrap();
    }
    c.note_orphan_blob(&fresh, T0 + 10).await.unwrap();
    // Before the cut-off, nothing.
    assert!(
        c.orphan_blobs_to_delete(T0 - 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // After it, only the unrecorded one; the recorded one's note is forgotten.
    assert_eq!(
        c.orphan_blobs_to_delete(T0, 10).await.unwrap(),
        std::slice::from_ref(&lone)
    );
    // While it is being deleted, a worker about to put the same bytes waits.
    assert!(!c.claim_blob_for_put(&lone).await.unwrap());
    // A sweep that stopped midway finds it again.
    assert_eq!(
        c.orphan_blobs_to_delete(T0, 10).await.unwrap(),
        std::slice::from_ref(&lone)
    );
    c.forget_orphan_blob(&lone).await.unwrap();
    assert!(c.claim_blob_for_put(&lone).await.unwrap());
    // A put of noted bytes takes them back from the sweep.
    assert!(c.claim_blob_for_put(&fresh).await.unwrap());
    assert!(
        c.orphan_blobs_to_delete(T0 + 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Noting again what is being deleted changes nothing; the limit holds.
    for i in 0..3 {
        c.note_orphan_blob(&image_id(&format!("n{i}")), T0)
            .await
            .unwrap();
    }
    assert_eq!(c.orphan_blobs_to_delete(T0, 2).await.unwrap().len(), 2);
}

fn reservation(id: &str, owner: &str, bytes: u64) -> Reservation {
    Reservation {
        id: id.into(),
        owner: owner.into(),
        bytes,
        expires_at: T0 + 60_000,
    }
}

fn quota(max_open: Option<u64>, max_bytes: Option<u64>) -> QuotaCheck {
    QuotaCheck {
        now: T0,
        month_start: T0 - 1_000,
        max_open_batches: max_open,
        max_bytes_per_month: max_bytes,
    }
}

async fn quota_reservations_count_with_batches_and_release(c: Arc<dyn Catalog>) {
    // One batch in progress (5 GB, see `new_batch`), another tenant's aside.
    c.create_batch(&new_batch("b", None, T0)).await.unwrap();
    let open = quota(Some(3), None);
    assert!(
        c.reserve_upload(&reservation("r1", "default", 1), &open)
            .await
            .unwrap()
    );
    assert!(
        c.reserve_upload(&reservation("r2", "default", 1), &open)
            .await
            .unwrap()
    );
    // The batch and two uploads under way fill the three places.
    assert!(
        !c.reserve_upload(&reservation("r3", "default", 1), &open)
            .await
            .unwrap()
    );
    assert!(
        c.reserve_upload(&reservation("o1", "other", 1), &open)
            .await
            .unwrap()
    );
    c.release_upload("r1").await.unwrap();
    assert!(
        c.reserve_upload(&reservation("r3", "default", 1), &open)
            .await
            .unwrap()
    );
    // A lapsed reservation (its gateway died) no longer counts.
    let later = QuotaCheck {
        now: T0 + 60_000,
        ..open
    };
    assert!(
        c.reserve_upload(&reservation("r4", "default", 1), &later)
            .await
            .unwrap()
    );

    // Bytes: the batch's 5 GB this month, plus what is reserved.
    let bytes = quota(None, Some(5_000_000_100));
    assert!(
        c.reserve_upload(&reservation("x1", "t2", 0), &bytes)
            .await
            .unwrap()
    );
    c.create_batch(&NewBatch {
        owner: "t2".into(),
        ..new_batch("b2", None, T0)
    })
    .await
    .unwrap();
    assert!(
        c.reserve_upload(&reservation("x2", "t2", 60), &bytes)
            .await
            .unwrap()
    );
    assert!(
        !c.reserve_upload(&reservation("x3", "t2", 50), &bytes)
            .await
            .unwrap()
    );
    // A body of unknown length settles its real size: it must fit too.
    assert!(
        !c.settle_upload(&reservation("x1", "t2", 50), &bytes)
            .await
            .unwrap()
    );
    assert!(
        c.settle_upload(&reservation("x1", "t2", 40), &bytes)
            .await
            .unwrap()
    );
    assert!(
        !c.reserve_upload(&reservation("x3", "t2", 1), &bytes)
            .await
            .unwrap()
    );
    // Batches from before this month do not count.
    let next_month = QuotaCheck {
        month_start: T0 + 1,
        ..bytes
    };
    assert!(
        c.reserve_upload(&reservation("x3", "t2", 1), &next_month)
            .await
            .unwrap()
    );
}

async fn concurrent_reservations_never_exceed_the_quota(c: Arc<dyn Catalog>) {
    let open = quota(Some(3), None);
    let calls: Vec<_> = (0..RACERS)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.reserve_upload(&reservation(&format!("r{i}"), "default", 1), &open)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut granted = 0;
    for call in calls {
        granted += u32::from(call.await.unwrap());
    }
    assert_eq!(granted, 3);
}

async fn the_first_verdict_of_an_entry_wins(c: Arc<dyn Catalog>) {
    planned(&c, "b", None, 2).await;
    let first = Verdict::accepted(image_id("a1"));
    assert!(c.record_verdict("b", 0, &first, T0 + 20).await.unwrap());
    assert!(
        !c.record_verdict("b", 0, &rejected("late"), T0 + 30)
            .await
            .unwrap()
    );
    assert!(!c.record_verdict("b", 0, &first, T0 + 30).await.unwrap());
    let line = &c.report("b", None, 1).await.unwrap()[0];
    assert_eq!(
        line,
        &ReportEntry::new(0, "photos/img_000.jpg".into(), Some(first))
    );
    // No entry, no write.
    assert!(
        !c.record_verdict("b", 9, &rejected("no such entry"), T0 + 30)
            .await
            .unwrap()
    );
    assert!(
        !c.record_verdict("unknown", 0, &rejected("no such batch"), T0 + 30)
            .await
            .unwrap()
    );
}

async fn an_image_is_recorded_with_its_verdict_only_while_its_entry_is_undecided(
    c: Arc<dyn Catalog>,
) {
    planned(&c, "b", None, 3).await;
    let line =
        |i: u32, v: Option<Verdict>| ReportEntry::new(i, format!("photos/img_{i:03}.jpg"), v);
    // Undecided: the image and the verdict, together.
    let first = image(&image_id("st0"), "b", 0);
    let accepted = Verdict::accepted(first.id.clone());
    assert_eq!(
        c.record_stored(&first, &accepted, None, T0 + 20)
            .await
            .unwrap(),
        Stored::Recorded
    );
    assert!(c.image(&first.id).await.unwrap().is_some());
    let report = c.report("b", None, 3).await.unwrap();
    assert_eq!(report[0], line(0, Some(accepted)));
    // Decided first (the batch expired): nothing recorded, the verdict stays.
    let expired = Verdict::refused(Reason::DeadlineExceeded, "too late");
    assert!(c.record_verdict("b", 1, &expired, T0 + 30).await.unwrap());
    let late = image(&image_id("st1"), "b", 1);
    let verdict = Verdict::accepted(late.id.clone());
    assert_eq!(
        c.record_stored(&late, &verdict, None, T0 + 40)
            .await
            .unwrap(),
        Stored::EntryDecided
    );
    assert!(c.image(&late.id).await.unwrap().is_none());
    let report = c.report("b", None, 3).await.unwrap();
    assert_eq!(report[1], line(1, Some(expired)));
    // A near duplicate of a stored image: nothing recorded, still undecided.
    let mut near = image(&image_id("st2"), "b", 2);
    near.pdq = Some(pdq_flipped(&first.pdq.clone().unwrap().parse().unwrap(), 3).to_string());
    let verdict = Verdict::accepted(near.id.clone());
    match c
        .record_stored(&near, &verdict, Some((31, None)), T0 + 50)
        .await
        .unwrap()
    {
        Stored::Near(m) => assert_eq!((m.image_id, m.distance), (first.id.clone(), 3)),
        other => panic!("not told about the near duplicate: {other:?}"),
    }
    assert!(c.image(&near.id).await.unwrap().is_none());
    assert_eq!(c.pending_entries("b").await.unwrap(), vec![(2, 1002)]);
}

async fn an_expiry_racing_a_store_ends_with_verdict_and_record_agreeing(c: Arc<dyn Catalog>) {
    // Each entry is stored by one task while another expires it.
    planned(&c, "b", None, RACERS).await;
    let start = Arc::new(tokio::sync::Barrier::new(2 * RACERS as usize));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let (c1, c2) = (c.clone(), c.clone());
        let (s1, s2) = (start.clone(), start.clone());
        let img = image(&image_id(&format!("race{i:02}-")), "b", i);
        tasks.push(tokio::spawn(async move {
            s1.wait().await;
            let verdict = Verdict::accepted(img.id.clone());
            c1.record_stored(&img, &verdict, None, T0 + 10)
                .await
                .map(drop)
                .unwrap();
        }));
        tasks.push(tokio::spawn(async move {
            s2.wait().await;
            let expired = Verdict::refused(Reason::DeadlineExceeded, "too late");
            c2.record_verdict("b", i, &expired, T0 + 10)
                .await
                .map(drop)
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for line in c.report("b", None, RACERS).await.unwrap() {
        let id = image_id(&format!("race{:02}-", line.index));
        let stored = c.image(&id).await.unwrap().is_some();
        let accepted = line.verdict == "accepted" && line.image_id == Some(id);
        assert_eq!(stored, accepted, "{line:?}");
        assert!(
            accepted || line.reason == Some(Reason::DeadlineExceeded),
            "{line:?}"
        );
    }
}

async fn a_corrected_verdict_replaces_only_an_accepted_one_for_that_image(c: Arc<dyn Catalog>) {
    planned(&c, "b", None, 2).await;
    let img = image(&image_id("cv0"), "b", 0);
    let accepted = Verdict::accepted(img.id.clone());
    c.record_stored(&img, &accepted, None, T0).await.unwrap();
    let duplicate = Verdict::exact_duplicate(img.id.clone());
    assert!(
        !c.correct_verdict("b", 0, &image_id("other"), &duplicate, T0 + 1)
            .await
            .unwrap()
    );
    assert!(
        c.correct_verdict("b", 0, &img.id, &duplicate, T0 + 2)
            .await
            .unwrap()
    );
    assert!(
        !c.correct_verdict("b", 0, &img.id, &accepted, T0 + 3)
            .await
            .unwrap()
    );
    // Undecided or refused entries are not corrected.
    assert!(
        !c.correct_verdict("b", 1, &img.id, &duplicate, T0 + 4)
            .await
            .unwrap()
    );
    let report = c.report("b", None, 2).await.unwrap();
    let line =
        |i: u32, v: Option<Verdict>| ReportEntry::new(i, format!("photos/img_{i:03}.jpg"), v);
    assert_eq!(report, vec![line(0, Some(duplicate)), line(1, None)]);
}

async fn concurrent_verdicts_for_one_entry_have_exactly_one_winner(c: Arc<dyn Catalog>) {
    planned(&c, "b", None, 1).await;
    let calls: Vec<_> = (0..RACERS)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                (
                    i,
                    c.record_verdict("b", 0, &rejected(&format!("racer {i}")), T0 + 20)
                        .await
                        .unwrap(),
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    for call in calls {
        let (i, wrote) = call.await.unwrap();
        if wrote {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let line = &c.report("b", None, 1).await.unwrap()[0];
    assert_eq!(line.detail, Some(format!("racer {}", winners[0])));
}

// ---------------------------------------------------------------- images

async fn an_image_reads_back_with_every_field(c: Arc<dyn Catalog>) {
    let jpeg = ImageRecord {
        size: 5_000_000_000,
        ..image(&image_id("a1"), "b", 4)
    };
    let png = ImageRecord {
        format: Format::Png,
        orientation: None,
        ..image(&image_id("b2"), "b", 5)
    };
    for i in [&jpeg, &png] {
        c.insert_image(i).await.unwrap();
    }
    assert_eq!(c.image(&jpeg.id).await.unwrap(), Some(jpeg));
    assert_eq!(c.image(&png.id).await.unwrap(), Some(png));
    assert_eq!(c.image(&image_id("c3")).await.unwrap(), None);
}

async fn inserting_an_image_twice_keeps_the_first_record(c: Arc<dyn Catalog>) {
    let id = image_id("a1");
    let first = image(&id, "b1", 0);
    c.insert_image(&first).await.unwrap();
    // A second worker that raced past the dedup index stores the same bytes.
    let second = ImageRecord {
        entry_name: "elsewhere.jpg".into(),
        created_ms: T0 + 99,
        ..image(&id, "b2", 3)
    };
    c.insert_image(&second).await.unwrap();
    assert_eq!(c.image(&id).await.unwrap(), Some(first));
    assert_eq!(c.image_ids().await.unwrap(), vec![id]);
}

async fn image_ids_list_every_image_in_id_order(c: Arc<dyn Catalog>) {
    for prefix in ["ff", "00", "a0", "9f", "0a"] {
        c.insert_image(&image(&image_id(prefix), "b", 0))
            .await
            .unwrap();
    }
    let expected: Vec<String> = ["00", "0a", "9f", "a0", "ff"]
        .into_iter()
        .map(image_id)
        .collect();
    assert_eq!(c.image_ids().await.unwrap(), expected);
}

async fn stored_claims_page_through_images_with_every_owner(c: Arc<dyn Catalog>) {
    for (prefix, owner, batch, index) in [
        ("ff", "acme", "b1", 0),
        ("00", "acme", "b1", 1),
        ("a0", "bravo", "b2", 0),
        // Stored again by another tenant (per-tenant dedup): a second owner.
        ("00", "bravo", "b3", 4),
    ] {
        let img = ImageRecord {
            owner: owner.into(),
            ..image(&image_id(prefix), batch, index)
        };
        c.insert_image(&img).await.unwrap();
    }
    let claims = |prefix: &str, owner: &str, tenants: &[&str]| StoredClaims {
        image_id: image_id(prefix),
        owner: owner.into(),
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
    };
    assert_eq!(
        c.stored_claims(None, 2).await.unwrap(),
        [
            claims("00", "b1:1", &["acme", "bravo"]),
            claims("a0", "b2:0", &["bravo"])
        ]
    );
    let after = image_id("a0");
    assert_eq!(
        c.stored_claims(Some(&after), 2).await.unwrap(),
        [claims("ff", "b1:0", &["acme"])]
    );
    let after = image_id("ff");
    assert!(c.stored_claims(Some(&after), 2).await.unwrap().is_empty());
}

async fn batch_images_are_the_accepted_entries_under_this_batchs_names(c: Arc<dyn Catalog>) {
    planned(&c, "b", None, 4).await;
    let (first, second) = (image_id("a1"), image_id("b2"));
    c.insert_image(&image(&first, "b", 0)).await.unwrap();
    // Stored first by another batch: listed here under this batch's entry.
    c.insert_image(&ImageRecord {
        entry_name: "old/upload.jpg".into(),
        ..image(&second, "older", 9)
    })
    .await
    .unwrap();
    c.record_verdict("b", 0, &Verdict::accepted(first.clone()), T0 + 20)
        .await
        .unwrap();
    c.record_verdict("b", 1, &Verdict::exact_duplicate(first.clone()), T0 + 20)
        .await
        .unwrap();
    c.record_verdict("b", 2, &Verdict::accepted(second.clone()), T0 + 20)
        .await
        .unwrap();
    // Entry 3 stays pending.
    let all = c.batch_images("b", None, 10).await.unwrap();
    let expected = vec![image(&first, "b", 0), image(&second, "b", 2)];
    assert_eq!(all, expected);
    assert_eq!(c.batch_images("b", None, 1).await.unwrap(), expected[..1]);
    assert_eq!(
        c.batch_images("b", Some(0), 10).await.unwrap(),
        expected[1..]
    );
    assert_eq!(c.batch_images("b", Some(2), 10).await.unwrap(), vec![]);
    assert_eq!(c.batch_images("unknown", None, 10).await.unwrap(), vec![]);
}

// ---------------------------------------------------------------- completion

async fn a_batch_completes_only_once_no_entry_is_pending(c: Arc<dyn Catalog>) {
    planned(&c, "b", Some(HOOK), 2).await;
    assert!(!c.try_complete("b", T0 + 20).await.unwrap());
    c.record_verdict("b", 0, &rejected("cut off"), T0 + 21)
        .await
        .unwrap();
    assert!(!c.try_complete("b", T0 + 22).await.unwrap());
    assert_eq!(batch(&c, "b").await.phase, Phase::Processing);
    c.record_verdict("b", 1, &rejected("cut off"), T0 + 23)
        .await
        .unwrap();
    assert!(c.try_complete("b", T0 + 30).await.unwrap());
    let b = batch(&c, "b").await;
    assert_eq!(b.phase, Phase::Completed);
    assert_eq!((b.completed_at, b.updated_at), (Some(T0 + 30), T0 + 30));
    // Completion makes the webhook due right away.
    assert_eq!(
        (b.notify_state, b.notify_next_at),
        (NotifyState::Pending, Some(T0 + 30))
    );
    assert!(!c.try_complete("b", T0 + 40).await.unwrap());
    assert_eq!(batch(&c, "b").await.completed_at, Some(T0 + 30));
}

async fn completing_a_batch_without_callback_schedules_no_notification(c: Arc<dyn Catalog>) {
    planned(&c, "b", None, 1).await;
    decide_all(&c, "b").await;
    assert!(c.try_complete("b", T0 + 30).await.unwrap());
    let b = batch(&c, "b").await;
    assert_eq!(
        (b.notify_state, b.notify_next_at),
        (NotifyState::None, None)
    );
    assert_eq!(c.due_notifications(T0 + 1_000_000).await.unwrap(), vec![]);
}

async fn an_empty_batch_completes_as_soon_as_it_is_planned(c: Arc<dyn Catalog>) {
    c.create_batch(&new_batch("b", None, T0)).await.unwrap();
    c.record_entries("b", &[], T0 + 10).await.unwrap();
    assert_eq!(batch(&c, "b").await.total_entries, 0);
    assert!(c.try_complete("b", T0 + 11).await.unwrap());
}

async fn only_a_processing_batch_can_complete(c: Arc<dyn Catalog>) {
    // Received: not planned yet, so no entries, yet not complete.
    c.create_batch(&new_batch("received", None, T0))
        .await
        .unwrap();
    assert!(!c.try_complete("received", T0 + 10).await.unwrap());
    assert_eq!(batch(&c, "received").await.phase, Phase::Received);
    planned(&c, "failed", None, 1).await;
    decide_all(&c, "failed").await;
    c.fail_batch("failed", "archive unreadable", T0 + 30)
        .await
        .unwrap();
    assert!(!c.try_complete("failed", T0 + 40).await.unwrap());
    assert_eq!(batch(&c, "failed").await.phase, Phase::Failed);
    assert!(!c.try_complete("unknown", T0 + 40).await.unwrap());
}

async fn concurrent_completions_have_exactly_one_winner(c: Arc<dyn Catalog>) {
    for round in 0..5 {
        let id = format!("b{round}");
        planned(&c, &id, Some(HOOK), 3).await;
        decide_all(&c, &id).await;
        let calls: Vec<_> = (0..RACERS)
            .map(|i| {
                let (c, id) = (c.clone(), id.clone());
                tokio::spawn(async move {
                    c.try_complete(&id, T0 + 100 + Millis::from(i))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut wins = 0;
        for call in calls {
            wins += u32::from(call.await.unwrap());
        }
        assert_eq!(wins, 1, "round {round}");
        assert_eq!(batch(&c, &id).await.phase, Phase::Completed);
    }
}

async fn the_last_of_concurrent_verdicts_always_completes_the_batch(c: Arc<dyn Catalog>) {
    // Each worker records its entry's verdict, then tries to complete: the
    // batch must complete exactly once, never zero times (a completion lost
    // between two workers' views) nor twice.
    for round in 0..5 {
        let id = format!("b{round}");
        planned(&c, &id, None, RACERS).await;
        let calls: Vec<_> = (0..RACERS)
            .map(|i| {
                let (c, id) = (c.clone(), id.clone());
                tokio::spawn(async move {
                    assert!(
                        c.record_verdict(&id, i, &rejected("cut off"), T0 + 20)
                            .await
                            .unwrap()
                    );
                    c.try_complete(&id, T0 + 30).await.unwrap()
                })
            })
            .collect();
        let mut wins = 0;
        for call in calls {
            wins += u32::from(call.await.unwrap());
        }
        assert_eq!(wins, 1, "round {round}");
        assert_eq!(batch(&c, &id).await.phase, Phase::Completed);
    }
}

// ---------------------------------------------------------------- failure, resumption

async fn failing_a_batch_records_why_and_makes_its_notification_due(c: Arc<dyn Catalog>) {
    planned(&c, "processing", Some(HOOK), 2).await;
    c.create_batch(&new_batch("received", None, T0))
        .await
        .unwrap();
    c.fail_batch(
        "processing",
        "archive unreadable: bad central directory",
        T0 + 50,
    )
    .await
    .unwrap();
    c.fail_batch("received", "archive unreadable", T0 + 60)
        .await
        .unwrap();
    let b = batch(&c, "processing").await;
    assert_eq!(b.phase, Phase::Failed);
    assert_eq!(
        b.error.as_deref(),
        Some("archive unreadable: bad central directory")
    );
    assert_eq!(
        (b.completed_at, b.updated_at, b.notify_next_at),
        (Some(T0 + 50), T0 + 50, Some(T0 + 50))
    );
    let r = batch(&c, "received").await;
    assert_eq!((r.phase, r.notify_next_at), (Phase::Failed, None));
    assert_eq!(c.unfinished_batches().await.unwrap(), vec![]);
    assert_eq!(
        ids(&c.due_notifications(T0 + 50).await.unwrap()),
        ["processing"]
    );
}

async fn a_finished_batch_keeps_its_outcome_when_failed_afterwards(c: Arc<dyn Catalog>) {
    planned(&c, "completed", None, 1).await;
    decide_all(&c, "completed").await;
    assert!(c.try_complete("completed", T0 + 30).await.unwrap());
    c.fail_batch("completed", "too late", T0 + 40)
        .await
        .unwrap();
    let b = batch(&c, "completed").await;
    assert_eq!(
        (b.phase, b.error, b.updated_at),
        (Phase::Completed, None, T0 + 30)
    );
    c.create_batch(&new_batch("failed", None, T0))
        .await
        .unwrap();
    c.fail_batch("failed", "first reason", T0 + 10)
        .await
        .unwrap();
    c.fail_batch("failed", "second reason", T0 + 20)
        .await
        .unwrap();
    let f = batch(&c, "failed").await;
    assert_eq!(
        (f.error.as_deref(), f.completed_at),
        (Some("first reason"), Some(T0 + 10))
    );
}

async fn unfinished_batches_are_the_received_and_processing_ones_oldest_first(c: Arc<dyn Catalog>) {
    c.create_batch(&new_batch("received-late", None, T0 + 3))
        .await
        .unwrap();
    c.create_batch(&new_batch("processing", None, T0 + 1))
        .await
        .unwrap();
    c.record_entries("processing", &entries(2), T0 + 10)
        .await
        .unwrap();
    c.create_batch(&new_batch("completed", None, T0 + 2))
        .await
        .unwrap();
    c.record_entries("completed", &[], T0 + 10).await.unwrap();
    assert!(c.try_complete("completed", T0 + 11).await.unwrap());
    c.create_batch(&new_batch("failed", None, T0 + 4))
        .await
        .unwrap();
    c.fail_batch("failed", "archive unreadable", T0 + 12)
        .await
        .unwrap();
    c.create_batch(&new_batch("received-early", None, T0))
        .await
        .unwrap();
    let unfinished = c.unfinished_batches().await.unwrap();
    assert_eq!(
        ids(&unfinished),
        ["received-early", "processing", "received-late"]
    );
    assert_eq!(unfinished[1].phase, Phase::Processing);
}

// ---------------------------------------------------------------- notifications

async fn notifications_fall_due_when_a_batch_with_callback_finishes(c: Arc<dyn Catalog>) {
    planned(&c, "later", Some(HOOK), 1).await;
    planned(&c, "sooner", Some(HOOK), 1).await;
    planned(&c, "silent", None, 1).await;
    // Pending while processing, but not due: there is nothing to tell yet.
    assert_eq!(c.due_notifications(T0 + 1_000_000).await.unwrap(), vec![]);
    for (id, at) in [
        ("later", T0 + 200),
        ("sooner", T0 + 150),
        ("silent", T0 + 100),
    ] {
        decide_all(&c, id).await;
        assert!(c.try_complete(id, at).await.unwrap());
    }
    assert_eq!(c.due_notifications(T0 + 149).await.unwrap(), vec![]);
    assert_eq!(
        ids(&c.due_notifications(T0 + 150).await.unwrap()),
        ["sooner"]
    );
    assert_eq!(
        ids(&c.due_notifications(T0 + 1_000_000).await.unwrap()),
        ["sooner", "later"]
    );
}

async fn a_delivered_notification_is_never_due_again(c: Arc<dyn Catalog>) {
    planned(&c, "b", Some(HOOK), 1).await;
    decide_all(&c, "b").await;
    assert!(c.try_complete("b", T0 + 100).await.unwrap());
    let failed = Delivery::Failed {
        error: "connection refused".into(),
        next_at: Some(T0 + 105),
    };
    c.record_delivery("b", &failed, T0 + 101).await.unwrap();
    c.record_delivery("b", &Delivery::Delivered { at: T0 + 110 }, T0 + 111)
        .await
        .unwrap();
    let b = batch(&c, "b").await;
    assert_eq!(b.notify_state, NotifyState::Delivered);
    assert_eq!(
        (b.notify_attempts, b.notify_delivered_at, b.updated_at),
        (2, Some(T0 + 110), T0 + 111)
    );
    // The error of the failed attempt is gone with the success.
    assert_eq!((b.notify_last_error, b.notify_next_at), (None, None));
    assert_eq!(c.due_notifications(T0 + 1_000_000).await.unwrap(), vec![]);
}

async fn a_failed_delivery_with_a_retry_time_falls_due_again_then(c: Arc<dyn Catalog>) {
    planned(&c, "b", Some(HOOK), 1).await;
    decide_all(&c, "b").await;
    assert!(c.try_complete("b", T0 + 100).await.unwrap());
    let failed = Delivery::Failed {
        error: "HTTP 503".into(),
        next_at: Some(T0 + 500),
    };
    c.record_delivery("b", &failed, T0 + 110).await.unwrap();
    let b = batch(&c, "b").await;
    assert_eq!(
        (b.notify_state, b.notify_attempts),
        (NotifyState::Pending, 1)
    );
    assert_eq!(b.notify_last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(
        (b.notify_next_at, b.notify_delivered_at, b.updated_at),
        (Some(T0 + 500), None, T0 + 110)
    );
    assert_eq!(c.due_notifications(T0 + 499).await.unwrap(), vec![]);
    assert_eq!(ids(&c.due_notifications(T0 + 500).await.unwrap()), ["b"]);
}

async fn a_failed_delivery_without_a_retry_time_gives_up(c: Arc<dyn Catalog>) {
    planned(&c, "b", Some(HOOK), 1).await;
    decide_all(&c, "b").await;
    assert!(c.try_complete("b", T0 + 100).await.unwrap());
    let retry = Delivery::Failed {
        error: "HTTP 503".into(),
        next_at: Some(T0 + 200),
    };
    c.record_delivery("b", &retry, T0 + 110).await.unwrap();
    let give_up = Delivery::Failed {
        error: "HTTP 410 Gone".into(),
        next_at: None,
    };
    c.record_delivery("b", &give_up, T0 + 210).await.unwrap();
    let b = batch(&c, "b").await;
    assert_eq!(
        (b.notify_state, b.notify_attempts),
        (NotifyState::Failed, 2)
    );
    assert_eq!(b.notify_last_error.as_deref(), Some("HTTP 410 Gone"));
    assert_eq!(
        (b.notify_next_at, b.notify_delivered_at, b.updated_at),
        (None, None, T0 + 210)
    );
    assert_eq!(c.due_notifications(T0 + 1_000_000).await.unwrap(), vec![]);
}

// ---------------------------------------------------------------- backends

/// A fresh SQLite catalog in a temporary folder, kept as long as the guard.
async fn sqlite_catalog() -> (Arc<dyn Catalog>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let catalog = SqlCatalog::open_sqlite(&dir.path().join("catalog.db"))
        .await
        .unwrap();
    (Arc::new(catalog), dir)
}

/// A PostgreSQL catalog on a fresh database of the one server this test binary
/// starts (initdb takes seconds; a database takes milliseconds). The
/// server outlives the tests; its harness removes it after the process.
async fn postgres_catalog() -> Arc<dyn Catalog> {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    static NEXT_DB: AtomicU32 = AtomicU32::new(0);
    let url = tokio::task::spawn_blocking(|| {
        let server = SERVER.get_or_init(Postgres::start);
        server.create_database(&format!(
            "conformance_{}",
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        ))
    })
    .await
    .unwrap();
    // More connections than racers, so the race tests race in the database.
    Arc::new(
        SqlCatalog::connect_postgres(&url, RACERS + 4)
            .await
            .unwrap(),
    )
}

/// One test per behaviour and backend: `sqlite::<behaviour>` and
/// `postgres::<behaviour>`.
macro_rules! catalog_conforms {
    ($($behaviour:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $behaviour() {
                    let (catalog, _dir) = super::sqlite_catalog().await;
                    super::$behaviour(catalog).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $behaviour() {
                    super::$behaviour(super::postgres_catalog().await).await;
                }
            )*
        }
    };
}

catalog_conforms! {
    a_created_batch_reads_back_in_phase_received,
    creating_an_existing_batch_id_fails_and_changes_nothing,
    planning_records_entries_and_moves_the_batch_to_processing,
    planning_again_adds_nothing_and_keeps_verdicts_names_and_start_time,
    planning_does_not_revive_a_failed_batch,
    counts_tally_each_verdict_kind_and_the_pending_entries,
    pending_entries_are_the_undecided_ones_with_sizes_in_index_order,
    undecided_between_is_inclusive_and_skips_decided_entries,
    report_pages_by_index_after_the_cursor,
    report_lines_carry_each_verdict_as_recorded,
    the_first_verdict_of_an_entry_wins,
    concurrent_verdicts_for_one_entry_have_exactly_one_winner,
    an_image_is_recorded_with_its_verdict_only_while_its_entry_is_undecided,
    an_expiry_racing_a_store_ends_with_verdict_and_record_agreeing,
    a_corrected_verdict_replaces_only_an_accepted_one_for_that_image,
    an_image_reads_back_with_every_field,
    inserting_an_image_twice_keeps_the_first_record,
    image_ids_list_every_image_in_id_order,
    stored_claims_page_through_images_with_every_owner,
    batch_images_are_the_accepted_entries_under_this_batchs_names,
    a_batch_completes_only_once_no_entry_is_pending,
    completing_a_batch_without_callback_schedules_no_notification,
    an_empty_batch_completes_as_soon_as_it_is_planned,
    only_a_processing_batch_can_complete,
    concurrent_completions_have_exactly_one_winner,
    the_last_of_concurrent_verdicts_always_completes_the_batch,
    failing_a_batch_records_why_and_makes_its_notification_due,
    a_finished_batch_keeps_its_outcome_when_failed_afterwards,
    unfinished_batches_are_the_received_and_processing_ones_oldest_first,
    notifications_fall_due_when_a_batch_with_callback_finishes,
    a_delivered_notification_is_never_due_again,
    a_failed_delivery_with_a_retry_time_falls_due_again_then,
    a_failed_delivery_without_a_retry_time_gives_up,
    similar_finds_every_indexed_neighbour_within_the_distance_nearest_first,
    image_search_filters_sorts_and_pages_like_the_model,
    known_originals_answer_from_the_first_record_of_each_file,
    of_near_duplicates_inserted_at_once_exactly_one_is_recorded,
    api_keys_are_found_by_hash_listed_and_revoked,
    owners_scope_images_searches_and_quotas,
    attempts_count_for_undecided_entries_only,
    batches_list_newest_first_by_owner_with_cursors,
    noted_orphan_bytes_are_marked_for_deletion_only_without_a_record,
    quota_reservations_count_with_batches_and_release,
    concurrent_reservations_never_exceed_the_quota,
}
