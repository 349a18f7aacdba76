//! One conformance suite for the dedup index and one for the work queue,
//! each run against the embedded implementation (SQLite, in-process queue)
//! and the cluster one (Redis). The suites assert only what the traits
//! promise; what only Redis promises (a visibility timeout, surviving a
//! server restart) is tested on Redis alone, below them.

use picsift_backends::cluster::{RedisDedup, RedisQueue};
use picsift_backends::embedded::MemQueue;
use picsift_backends::sql::{SqlCatalog, SqliteDedup};
use picsift_core::backend::{DedupIndex, WorkQueue};
use picsift_core::chunk::ChunkTask;
use picsift_core::dedup::{ClaimOutcome, CommitOutcome};
use picsift_core::time::Millis;
use picsift_tests::services::redis::RedisServer;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A plausible "now": the suites pass time explicitly, never read the clock.
const T0: Millis = 1_700_000_000_000;
const LEASE: Millis = 60_000;
const PREFIX: &str = "picsift-test:";

type Res<T = ()> = picsift_core::Result<T>;

fn committed(image_id: &str, by_you: bool) -> ClaimOutcome {
    ClaimOutcome::Committed {
        image_id: image_id.into(),
        by_you,
    }
}

/// The claim protocol of `picsift_core::dedup`, step by step.
async fn dedup_conforms(d: Arc<dyn DedupIndex>) -> Res {
    use ClaimOutcome::*;
    assert_eq!(
        d.pending_claims().await?,
        0,
        "a fresh index holds no claims"
    );

    // A free key is new; claiming it again is "yours" and renews the lease.
    assert_eq!(d.claim("k1", "a", T0, LEASE).await?, New);
    assert_eq!(d.claim("k1", "a", T0 + 10, LEASE).await?, Yours);
    assert_eq!(
        d.claim("k1", "b", T0 + 20, LEASE).await?,
        PendingOther {
            retry_at: T0 + 10 + LEASE
        },
        "another owner waits for the renewed lease"
    );
    assert_eq!(d.pending_claims().await?, 1);

    // Only the holder commits; a commit by anyone else is lost and changes nothing.
    assert_eq!(d.commit("k1", "b", "img-b").await?, CommitOutcome::Lost);
    assert!(matches!(
        d.claim("k1", "b", T0 + 30, LEASE).await?,
        PendingOther { .. }
    ));
    assert_eq!(
        d.commit("k1", "a", "img-a").await?,
        CommitOutcome::Committed
    );
    assert_eq!(d.pending_claims().await?, 0);

    // Committed: a duplicate for others, "committed by you" for the owner,
    // forever (leases no longer matter).
    assert_eq!(
        d.claim("k1", "a", T0 + 40, LEASE).await?,
        committed("img-a", true)
    );
    assert_eq!(
        d.claim("k1", "b", T0 + 10 * LEASE, LEASE).await?,
        committed("img-a", false)
    );
    // The owner's commit seen again succeeds and rewrites nothing; others lose.
    assert_eq!(
        d.commit("k1", "a", "img-other").await?,
        CommitOutcome::Committed
    );
    assert_eq!(
        d.claim("k1", "c", T0, LEASE).await?,
        committed("img-a", false)
    );
    assert_eq!(d.commit("k1", "b", "img-b").await?, CommitOutcome::Lost);

    // A lease that runs out frees the claim: up to its last millisecond the
    // key is someone else's, from then on it is taken over.
    assert_eq!(d.claim("k2", "crashed", T0, LEASE).await?, New);
    assert_eq!(
        d.claim("k2", "b", T0 + LEASE - 1, LEASE).await?,
        PendingOther {
            retry_at: T0 + LEASE
        }
    );
    assert_eq!(d.claim("k2", "b", T0 + LEASE, LEASE).await?, New);
    assert_eq!(
        d.claim("k2", "crashed", T0 + LEASE + 1, LEASE).await?,
        PendingOther {
            retry_at: T0 + 2 * LEASE
        },
        "the crashed owner coming back finds the claim taken over"
    );
    assert_eq!(
        d.commit("k2", "crashed", "img-x").await?,
        CommitOutcome::Lost
    );
    assert_eq!(
        d.commit("k2", "b", "img-b").await?,
        CommitOutcome::Committed
    );
    assert_eq!(
        d.claim("k2", "crashed", T0 + 3 * LEASE, LEASE).await?,
        committed("img-b", false)
    );

    // pending_claims counts live and expired pending claims alike, and no committed ones.
    assert_eq!(d.claim("p1", "a", T0, LEASE).await?, New);
    assert_eq!(d.claim("p2", "a", T0, LEASE).await?, New);
    assert_eq!(d.claim("p3", "b", T0 - 2 * LEASE, LEASE).await?, New);
    assert_eq!(d.pending_claims().await?, 3);

    // A commit of a claim the index lost (rebuilt from scratch) re-creates it committed.
    assert_eq!(
        d.commit("k3", "a", "img-3").await?,
        CommitOutcome::Committed
    );
    assert_eq!(
        d.claim("k3", "a", T0, LEASE).await?,
        committed("img-3", true)
    );

    // restore_committed (reindex) writes a committed claim, over a pending one too.
    d.restore_committed("k4", "r", "img-4").await?;
    assert_eq!(
        d.claim("k4", "x", T0, LEASE).await?,
        committed("img-4", false)
    );
    assert_eq!(
        d.claim("k4", "r", T0, LEASE).await?,
        committed("img-4", true)
    );
    d.restore_committed("p1", "r", "img-p1").await?;
    assert_eq!(
        d.claim("p1", "a", T0, LEASE).await?,
        committed("img-p1", false)
    );
    assert_eq!(d.pending_claims().await?, 2);

    // Many at once (a page of a rebuild): each as restore_committed.
    let many: Vec<(String, String, String)> = (0..3)
        .map(|i| (format!("m{i}"), format!("r{i}"), format!("img-m{i}")))
        .collect();
    d.restore_committed_many(&many).await?;
    for i in 0..3 {
        assert_eq!(
            d.claim(&format!("m{i}"), "x", T0, LEASE).await?,
            committed(&format!("img-m{i}"), false)
        );
    }
    d.restore_committed_many(&[]).await?;

    // Restoring the same claim again is harmless.
    d.restore_committed("k4", "r", "img-4").await?;
    assert_eq!(
        d.claim("k4", "x", T0, LEASE).await?,
        committed("img-4", false)
    );

    // A released pending claim frees the key at once; releasing someone
    // else's claim, or a committed one, changes nothing.
    assert_eq!(d.claim("r1", "a", T0, LEASE).await?, New);
    d.release("r1", "b").await?;
    assert!(matches!(
        d.claim("r1", "b", T0 + 1, LEASE).await?,
        PendingOther { .. }
    ));
    d.release("r1", "a").await?;
    assert_eq!(d.claim("r1", "b", T0 + 2, LEASE).await?, New);
    d.release("k4", "r").await?;
    assert_eq!(
        d.claim("k4", "x", T0, LEASE).await?,
        committed("img-4", false)
    );
    Ok(())
}

/// Many owners claim one key at the same instant: exactly one gets it.
async fn concurrent_claims_admit_one(d: Arc<dyn DedupIndex>) -> Res {
    let claims: Vec<_> = (0..32)
        .map(|i| {
            let d = d.clone();
            tokio::spawn(async move { d.claim("hot", &format!("owner-{i}"), T0, LEASE).await })
        })
        .collect();
    let mut new = 0;
    for c in claims {
        match c.await.expect("claim task")? {
            ClaimOutcome::New => new += 1,
            ClaimOutcome::PendingOther { retry_at } => assert_eq!(retry_at, T0 + LEASE),
            other => panic!("unexpected claim outcome {other:?}"),
        }
    }
    assert_eq!(new, 1, "exactly one claimer owns the key");
    assert_eq!(d.pending_claims().await?, 1);
    Ok(())
}

fn task(i: u32) -> ChunkTask {
    ChunkTask {
        batch_id: format!("batch-{i}"),
        owner: format!("tenant-{i}"),
        replanned: i == 3,
        entries: vec![i, i + 1, i + 7],
        // The policy travels with the task: the queue must keep it.
        policy: i.is_multiple_of(2).then(|| picsift_core::policy::Policy {
            max_entries: u64::from(i) + 1,
            ..Default::default()
        }),
    }
}

/// What every work queue promises.
async fn queue_conforms(q: Arc<dyn WorkQueue>) -> Res {
    assert!(q.dequeue(0).await?.is_none(), "a fresh queue is empty");
    assert!(
        q.dequeue(100).await?.is_none(),
        "waiting on an empty queue times out"
    );
    assert_eq!(q.backlog().await?, 0);
    assert_eq!(q.reclaimed().await?, 0, "nothing reclaimed yet");

    for i in 0..3 {
        q.enqueue(task(i)).await?;
    }
    assert_eq!(q.backlog().await?, 3);

    // Fresh tasks come out in the order they went in, each delivered once so far.
    let mut leases = Vec::new();
    for i in 0..3 {
        let lease = q.dequeue(1_000).await?.expect("a queued task");
        assert_eq!(lease.task, task(i));
        assert_eq!(lease.deliveries, 1);
        leases.push(lease);
    }
    assert!(
        q.dequeue(0).await?.is_none(),
        "a handed-out task is not handed out again"
    );
    let [first, second, third] = <[_; 3]>::try_from(leases).expect("three leases");

    q.ack(&first).await?;

    // A released task comes back, its deliveries counted on.
    q.release(&second).await?;
    let again = q.dequeue(1_000).await?.expect("the released task");
    assert_eq!(again.task, task(1));
    assert_eq!(again.deliveries, 2);
    q.release(&again).await?;
    let third_time = q.dequeue(1_000).await?.expect("the released task");
    assert_eq!(third_time.task, task(1));
    assert_eq!(third_time.deliveries, 3);

    // A dead letter is gone from the queue, like an acked task.
    q.dead_letter(&third, "keeps failing").await?;
    q.ack(&third_time).await?;
    assert!(q.dequeue(0).await?.is_none());
    assert_eq!(q.backlog().await?, 0);

    // A waiting worker wakes up for a task enqueued while it waits.
    let producer = {
        let q = q.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            q.enqueue(task(9)).await
        })
    };
    let woken = q
        .dequeue(30_000)
        .await?
        .expect("the task enqueued meanwhile");
    producer.await.expect("producer task")?;
    assert_eq!(woken.task, task(9));
    assert_eq!(woken.deliveries, 1);
    q.ack(&woken).await?;
    assert_eq!(q.backlog().await?, 0);
    Ok(())
}

async fn sqlite_dedup() -> (Arc<dyn DedupIndex>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let catalog = SqlCatalog::open_sqlite(&dir.path().join("catalog.db"))
        .await
        .expect("open the SQLite catalog");
    let dedup = SqliteDedup::of(&catalog).expect("a SQLite catalog");
    (Arc::new(dedup), dir)
}

/// A Redis dedup index, marked complete as a rebuild from an empty catalog
/// leaves it.
async fn redis_dedup(server: &RedisServer) -> Arc<dyn DedupIndex> {
    let d = RedisDedup::connect(&server.url, PREFIX)
        .await
        .expect("connect to redis");
    assert!(
        d.begin_rebuild("test", 60_000)
            .await
            .expect("rebuild right")
    );
    assert!(d.end_rebuild("test").await.expect("end of the rebuild"));
    Arc::new(d)
}

async fn redis_queue(server: &RedisServer, consumer: &str, visibility_ms: u64) -> RedisQueue {
    RedisQueue::connect(&server.url, PREFIX, consumer, visibility_ms)
        .await
        .expect("connect to redis")
}

/// Retries `op` while the server comes back (the first calls after a
/// restart fail while the connection is re-established).
async fn eventually<T>(what: &str, mut op: impl AsyncFnMut() -> Res<T>) -> T {
    let start = Instant::now();
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if start.elapsed() < Duration::from_secs(15) => {
                eprintln!("{what}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what} still fails after 15 s: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_dedup_index_follows_the_claim_protocol() -> Res {
    let (d, _dir) = sqlite_dedup().await;
    dedup_conforms(d).await
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_dedup_index_follows_the_claim_protocol() -> Res {
    let server = RedisServer::start();
    dedup_conforms(redis_dedup(&server).await).await
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_concurrent_claimers_of_one_key_get_exactly_one_new() -> Res {
    let (d, _dir) = sqlite_dedup().await;
    concurrent_claims_admit_one(d).await
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_concurrent_claimers_of_one_key_get_exactly_one_new() -> Res {
    let server = RedisServer::start();
    concurrent_claims_admit_one(redis_dedup(&server).await).await
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_queue_delivers_in_order_and_counts_deliveries() -> Res {
    queue_conforms(Arc::new(MemQueue::new())).await
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_queue_delivers_in_order_and_counts_deliveries() -> Res {
    let server = RedisServer::start();
    // A visibility timeout far longer than the suite: release must bring a
    // task back at once, not when the timeout runs out.
    queue_conforms(Arc::new(redis_queue(&server, "w1", 600_000).await)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_task_of_a_dead_worker_is_redelivered_after_the_visibility_timeout() -> Res {
    let server = RedisServer::start();
    let visibility = 1_500;
    let dead = redis_queue(&server, "dies", visibility).await;
    let alive = redis_queue(&server, "lives", visibility).await;
    dead.enqueue(task(1)).await?;
    let taken = dead.dequeue(1_000).await?.expect("the task");
    assert_eq!(taken.deliveries, 1);

    // The worker that took it never acks. Until the timeout it stays its own.
    assert!(alive.dequeue(0).await?.is_none());
    assert_eq!(alive.backlog().await?, 1, "a held task is still backlog");
    tokio::time::sleep(Duration::from_millis(visibility + 500)).await;

    let redelivered = alive
        .dequeue(0)
        .await?
        .expect("the task of the dead worker");
    assert_eq!(redelivered.task, task(1));
    assert_eq!(redelivered.receipt, taken.receipt, "the same stream entry");
    assert_eq!(redelivered.deliveries, 2);
    assert_eq!(alive.reclaimed().await?, 1, "counted for metrics");
    assert_eq!(dead.reclaimed().await?, 1, "one count for every worker");
    alive.ack(&redelivered).await?;
    assert_eq!(alive.backlog().await?, 0);

    // The dead worker's late ack or release of its stale lease changes nothing.
    dead.release(&taken).await?;
    dead.ack(&taken).await?;
    assert!(alive.dequeue(0).await?.is_none());

    // Housekeeping takes the gone worker out of the consumer group (it
    // holds nothing now), never the live one asking.
    assert!(
        alive.remove_idle_consumers(3_600_000).await?.is_empty(),
        "not idle long enough"
    );
    assert_eq!(alive.remove_idle_consumers(0).await?, ["dies"]);
    assert!(alive.remove_idle_consumers(0).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_a_live_workers_heartbeat_keeps_its_task_past_the_visibility_timeout() -> Res {
    let server = RedisServer::start();
    let visibility = 1_000;
    let slow = redis_queue(&server, "slow", visibility).await;
    let other = redis_queue(&server, "other", visibility).await;
    assert_eq!(slow.lease_ttl(), Some(Duration::from_millis(visibility)));
    slow.enqueue(task(1)).await?;
    let held = slow.dequeue(1_000).await?.expect("the task");

    // Three visibility timeouts of work, with the worker's heartbeat: the
    // task is never handed to the other worker.
    let work = async {
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(visibility / 2)).await;
            assert!(
                other.dequeue(0).await.unwrap().is_none(),
                "handed out while held"
            );
        }
    };
    picsift_worker::heartbeat::while_working(&slow, &held, work).await;
    assert!(slow.extend(&held).await?);
    slow.ack(&held).await?;
    assert_eq!(other.backlog().await?, 0);

    // Without a heartbeat the next task goes to the other worker after the
    // timeout, and the stale lease can no longer be extended.
    slow.enqueue(task(2)).await?;
    let lapsed = slow.dequeue(1_000).await?.expect("the task");
    tokio::time::sleep(Duration::from_millis(visibility + 500)).await;
    let taken = other.dequeue(0).await?.expect("handed out again");
    assert_eq!((&taken.task, taken.deliveries), (&task(2), 2));
    assert!(!slow.extend(&lapsed).await?, "a lost lease extended");
    other.ack(&taken).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_deliveries_keep_counting_across_releases_and_crashes() -> Res {
    let server = RedisServer::start();
    let visibility = 1_000;
    let a = redis_queue(&server, "a", visibility).await;
    let b = redis_queue(&server, "b", visibility).await;
    a.enqueue(task(5)).await?;

    let first = a.dequeue(1_000).await?.expect("the task");
    assert_eq!(first.deliveries, 1);
    a.release(&first).await?;
    let second = b
        .dequeue(0)
        .await?
        .expect("released: any worker takes it at once");
    assert_eq!(second.deliveries, 2);

    // b dies holding it; a takes it over after the timeout.
    tokio::time::sleep(Duration::from_millis(visibility + 500)).await;
    let third = a.dequeue(0).await?.expect("the task of the dead worker");
    assert_eq!(third.deliveries, 3);

    // b's stale lease must not take the task back from a.
    b.release(&second).await?;
    assert!(b.dequeue(0).await?.is_none(), "the task stays with a");

    a.release(&third).await?;
    let fourth = b.dequeue(0).await?.expect("released again");
    assert_eq!(fourth.deliveries, 4);

    // The worker's dead-letter rule ends it; it stays visible with why.
    b.dead_letter(&fourth, "failed 4 times").await?;
    assert_eq!(b.backlog().await?, 0);
    assert!(a.dequeue(0).await?.is_none());
    let dead = a.dead_letters().await?;
    assert_eq!(dead.len(), 1);
    let buried: ChunkTask = serde_json::from_str(&dead[0].0).expect("the task as JSON");
    assert_eq!(buried, task(5));
    assert_eq!(dead[0].1, "failed 4 times");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_unreadable_queue_entry_is_dead_lettered_not_handed_out() -> Res {
    let server = RedisServer::start();
    let q = redis_queue(&server, "w", 600_000).await;
    let client = redis::Client::open(server.url.as_str()).expect("a Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    redis::cmd("XADD")
        .arg(format!("{PREFIX}queue"))
        .arg("*")
        .arg("task")
        .arg("{not json")
        .exec_async(&mut conn)
        .await
        .expect("XADD");
    q.enqueue(task(2)).await?;

    let lease = q
        .dequeue(1_000)
        .await?
        .expect("the good task after the bad entry");
    assert_eq!(lease.task, task(2));
    q.ack(&lease).await?;
    assert_eq!(q.backlog().await?, 0);
    let dead = q.dead_letters().await?;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "{not json");
    assert!(dead[0].1.starts_with("unreadable task"), "{}", dead[0].1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_clients_carry_on_after_redis_restarts_without_its_data() -> Res {
    let mut server = RedisServer::start();
    let d = redis_dedup(&server).await;
    let q = redis_queue(&server, "w", 600_000).await;
    assert_eq!(d.claim("k", "a", T0, LEASE).await?, ClaimOutcome::New);
    assert_eq!(d.commit("k", "a", "img").await?, CommitOutcome::Committed);
    q.enqueue(task(1)).await?;

    server.restart();

    // The same clients reconnect by themselves. Redis lost the claim, and
    // the index knows it is incomplete: no claim is answered (an answer
    // would be `new` for a stored image) until it is rebuilt.
    let complete = eventually("complete", async || d.complete().await).await;
    assert!(!complete);
    assert!(matches!(
        d.claim("k", "b", T0, LEASE).await,
        Err(picsift_core::Error::DedupIndexIncomplete)
    ));
    // One rebuilder at a time; what it restores (from the catalog, in
    // `dedup_index::rebuild`) is answered once it ends.
    assert!(d.begin_rebuild("r1", 60_000).await?);
    assert!(!d.begin_rebuild("r2", 60_000).await?);
    d.restore_committed("k", "a", "img").await?;
    assert!(d.end_rebuild("r1").await?);
    assert!(d.complete().await?);
    assert_eq!(d.claim("k", "b", T0, LEASE).await?, committed("img", false));

    // The queue lost its stream and group; both come back on use.
    eventually("enqueue", async || q.enqueue(task(2)).await).await;
    let lease = eventually("dequeue", async || q.dequeue(1_000).await)
        .await
        .expect("the task enqueued after the restart");
    assert_eq!(lease.task, task(2));
    assert_eq!(lease.deliveries, 1);
    q.ack(&lease).await?;
    assert_eq!(q.backlog().await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_a_dead_rebuilders_right_lapses_and_a_live_ones_is_renewed() -> Res {
    let server = RedisServer::start();
    let d = RedisDedup::connect(&server.url, PREFIX).await?;
    // A rebuilder that dies holds the right only for its short lease ...
    assert!(d.begin_rebuild("dead", 300).await?);
    assert!(!d.begin_rebuild("live", 300).await?);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(d.begin_rebuild("live", 300).await?);
    // ... and, woken after it lost it, neither renews it nor ends the
    // rebuild for the new holder.
    assert!(!d.renew_rebuild("dead", 300).await?);
    assert!(!d.end_rebuild("dead").await?);
    assert!(!d.complete().await?);
    // A live rebuilder keeps it past its lease by renewing.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(d.renew_rebuild("live", 300).await?);
    }
    assert!(!d.begin_rebuild("other", 300).await?);
    assert!(d.end_rebuild("live").await?);
    assert!(d.complete().await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_a_rebuild_that_saw_the_data_lost_again_does_not_mark_the_index_complete() -> Res {
    let server = RedisServer::start();
    let d = RedisDedup::connect(&server.url, PREFIX).await?;
    assert!(d.begin_rebuild("r", 60_000).await?);
    d.restore_committed("k", "a", "img").await?;
    // Redis loses everything mid-rebuild: the restored claim and the right.
    let mut conn = redis::Client::open(server.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    assert!(!d.end_rebuild("r").await?);
    assert!(!d.complete().await?);
    assert!(matches!(
        d.claim("k", "b", T0, LEASE).await,
        Err(picsift_core::Error::DedupIndexIncomplete)
    ));
    Ok(())
}

async fn rate_limiter_conforms(l: Arc<dyn picsift_core::rate::RateLimiter>) -> Res {
    use picsift_core::rate::Rate;
    let rate = Rate {
        per_second: 2.0,
        burst: 3.0,
    };
    let t0 = 1_700_000_000_000;
    for _ in 0..3 {
        assert_eq!(l.take("acme", rate, t0).await?, None);
    }
    assert_eq!(l.take("acme", rate, t0).await?, Some(500));
    assert_eq!(
        l.take("bravo", rate, t0).await?,
        None,
        "buckets are per tenant"
    );
    assert_eq!(l.take("acme", rate, t0 + 500).await?, None, "refilled");
    assert_eq!(l.take("acme", rate, t0 + 500).await?, Some(500));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_rate_limiter_is_a_token_bucket() -> Res {
    rate_limiter_conforms(Arc::new(picsift_core::rate::MemoryRateLimiter::default())).await
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_rate_limiter_is_the_same_token_bucket() -> Res {
    let server = RedisServer::start();
    let l = picsift_backends::cluster::RedisRateLimiter::connect(&server.url, "t:").await?;
    rate_limiter_conforms(Arc::new(l)).await
}
