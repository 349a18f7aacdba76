//! One conformance suite for the resumable-upload state role
//! (`UploadStore`), run against SQLite (the standalone server) and
//! PostgreSQL (the cluster, where any gateway replica takes the next
//! request): locks, saves under a lock, finishing, expiry.

use picsift_backends::sql::SqlCatalog;
use picsift_core::backend::UploadStore;
use picsift_core::resumable::{Finished, Progress, UploadKind, UploadOptions, UploadRecord};
use picsift_tests::services::postgres::Postgres;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

const T0: i64 = 1_800_000_000_000;

fn upload(id: &str, length: Option<u64>) -> UploadRecord {
    UploadRecord {
        id: id.into(),
        owner: "acme".into(),
        kind: UploadKind::Tus,
        length,
        offset: 0,
        options: UploadOptions {
            policy: Some("strict".into()),
            callback: Some("https://example.test/hook".into()),
            strict: true,
            reserved: true,
        },
        multipart_id: "mp-1".into(),
        parts: vec![],
        tail: None,
        created_at: T0,
        expires_at: T0 + 1_000,
        lock: None,
        finished: None,
    }
}

fn progress(offset: u64, parts: &[&str], tail: Option<(&str, u64)>) -> Progress {
    Progress {
        offset,
        parts: parts.iter().map(|p| p.to_string()).collect(),
        tail: tail.map(|(k, n)| (k.to_string(), n)),
        length: Some(100),
    }
}

async fn an_upload_reads_back_as_created(u: Arc<dyn UploadStore>) {
    let rec = upload("a", Some(100));
    u.create_upload(&rec).await.unwrap();
    assert_eq!(u.upload("a").await.unwrap(), Some(rec.clone()));
    assert_eq!(u.upload("missing").await.unwrap(), None);
    assert!(
        u.create_upload(&rec).await.is_err(),
        "an id is created once"
    );
    let deferred = upload("d", None);
    u.create_upload(&deferred).await.unwrap();
    assert_eq!(u.upload("d").await.unwrap().unwrap().length, None);
}

async fn one_request_holds_the_lock_at_the_upload_offset(u: Arc<dyn UploadStore>) {
    u.create_upload(&upload("a", Some(100))).await.unwrap();
    assert!(
        !u.lock_upload("a", "t1", 5, T0, T0 + 60).await.unwrap(),
        "wrong offset"
    );
    assert!(u.lock_upload("a", "t1", 0, T0, T0 + 60).await.unwrap());
    assert!(
        !u.lock_upload("a", "t2", 0, T0 + 10, T0 + 70).await.unwrap(),
        "held"
    );
    // A lapsed lock is free; the request that held it can save nothing more.
    assert!(
        u.lock_upload("a", "t2", 0, T0 + 60, T0 + 120)
            .await
            .unwrap()
    );
    assert!(
        !u.save_upload("a", "t1", &progress(40, &["e1"], None), T0 + 200)
            .await
            .unwrap()
    );
    assert!(
        u.save_upload(
            "a",
            "t2",
            &progress(40, &["e1"], Some(("tail-t2", 7))),
            T0 + 200
        )
        .await
        .unwrap()
    );
    let r = u.upload("a").await.unwrap().unwrap();
    assert_eq!(
        (r.offset, r.parts.clone(), r.tail.clone()),
        (40, vec!["e1".to_string()], Some(("tail-t2".to_string(), 7)))
    );
    assert_eq!(r.lock, Some(("t2".to_string(), T0 + 200)));
    // Unlocked, it is free at its new offset only.
    u.unlock_upload("a", "t1").await.unwrap(); // not the holder: nothing
    assert!(u.upload("a").await.unwrap().unwrap().lock.is_some());
    u.unlock_upload("a", "t2").await.unwrap();
    assert_eq!(u.upload("a").await.unwrap().unwrap().lock, None);
    assert!(!u.lock_upload("a", "t3", 0, T0 + 1, T0 + 60).await.unwrap());
    assert!(u.lock_upload("a", "t3", 40, T0 + 1, T0 + 60).await.unwrap());
    // Expired: no lock.
    u.unlock_upload("a", "t3").await.unwrap();
    assert!(
        !u.lock_upload("a", "t4", 40, T0 + 1_000, T0 + 2_000)
            .await
            .unwrap()
    );
}

async fn two_requests_racing_for_the_lock_have_one_winner(u: Arc<dyn UploadStore>) {
    u.create_upload(&upload("race", Some(100))).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let u = u.clone();
        tasks.push(tokio::spawn(async move {
            u.lock_upload("race", &format!("t{i}"), 0, T0, T0 + 60)
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += t.await.unwrap() as u32;
    }
    assert_eq!(won, 1);
}

async fn a_finished_upload_takes_no_more_and_says_how_it_ended(u: Arc<dyn UploadStore>) {
    u.create_upload(&upload("f", Some(100))).await.unwrap();
    assert!(u.lock_upload("f", "t1", 0, T0, T0 + 60).await.unwrap());
    assert!(
        !u.finish_upload("f", "other", &Finished::Batch)
            .await
            .unwrap()
    );
    let refused = Finished::Refused {
        status: 400,
        problem: "{\"detail\":\"no\"}".into(),
    };
    assert!(u.finish_upload("f", "t1", &refused).await.unwrap());
    let r = u.upload("f").await.unwrap().unwrap();
    assert_eq!((r.finished, r.lock), (Some(refused), None));
    assert!(!u.lock_upload("f", "t2", 0, T0, T0 + 60).await.unwrap());
    assert!(
        !u.save_upload("f", "t1", &progress(1, &[], None), T0)
            .await
            .unwrap()
    );
}

async fn expired_uploads_come_oldest_first_and_deleted_ones_go(u: Arc<dyn UploadStore>) {
    for (id, expires) in [
        ("late", T0 + 300),
        ("early", T0 + 100),
        ("live", T0 + 10_000),
    ] {
        u.create_upload(&UploadRecord {
            expires_at: expires,
            ..upload(id, Some(1))
        })
        .await
        .unwrap();
    }
    let ids = |v: Vec<UploadRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(u.expired_uploads(T0 + 50, 10).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(u.expired_uploads(T0 + 300, 10).await.unwrap()),
        ["early", "late"]
    );
    assert_eq!(
        ids(u.expired_uploads(T0 + 300, 1).await.unwrap()),
        ["early"]
    );
    u.delete_upload("early").await.unwrap();
    u.delete_upload("early").await.unwrap();
    assert_eq!(
        ids(u.expired_uploads(T0 + 300, 10).await.unwrap()),
        ["late"]
    );
}

async fn sqlite_store() -> (Arc<dyn UploadStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let c = SqlCatalog::open_sqlite(&dir.path().join("catalog.db"))
        .await
        .unwrap();
    (Arc::new(c), dir)
}

async fn postgres_store() -> Arc<dyn UploadStore> {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    static NEXT_DB: AtomicU32 = AtomicU32::new(0);
    let url = tokio::task::spawn_blocking(|| {
        let server = SERVER.get_or_init(Postgres::start);
        server.create_database(&format!(
            "uploads_{}",
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        ))
    })
    .await
    .unwrap();
    Arc::new(SqlCatalog::connect_postgres(&url, 10).await.unwrap())
}

/// One test per behaviour and backend.
macro_rules! uploads_conform {
    ($($behaviour:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $behaviour() {
                    let (store, _dir) = super::sqlite_store().await;
                    super::$behaviour(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $behaviour() {
                    super::$behaviour(super::postgres_store().await).await;
                }
            )*
        }
    };
}

uploads_conform! {
    an_upload_reads_back_as_created,
    one_request_holds_the_lock_at_the_upload_offset,
    two_requests_racing_for_the_lock_have_one_winner,
    a_finished_upload_takes_no_more_and_says_how_it_ended,
    expired_uploads_come_oldest_first_and_deleted_ones_go,
}
