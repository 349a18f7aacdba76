//! Dedup claims and the work queue in Redis.
//!
//! Claims are hashes `{prefix}claim:{key}` with the fields `owner`,
//! `image_id` (committed) or `lease_until` (pending). Each claim and each
//! commit is one Lua script (one round trip, atomic) that mirrors
//! [`picsift_core::dedup::decide_claim`] and [`picsift_core::dedup::decide_commit`] line
//! for line; the caller passes the time, so the decisions never depend on
//! Redis' clock.
//!
//! The queue is the stream `{prefix}queue` read by the consumer group
//! `workers`. A task a worker took and neither acked nor released within the
//! visibility timeout (the worker died) is reclaimed with XAUTOCLAIM by the
//! next `dequeue` of any worker; Redis counts its deliveries in the pending
//! entries list. Dead letters go to the stream `{prefix}dead`.
//!
//! Keys under one prefix are used together in transactions; on Redis
//! Cluster, put a hash tag in the prefix (`{picsift}:`) to keep them in one
//! slot.

use crate::DriverResult;
use async_trait::async_trait;
use picsift_core::backend::{DedupIndex, Lease, WorkQueue};
use picsift_core::chunk::ChunkTask;
use picsift_core::dedup::{ClaimOutcome, CommitOutcome};
use picsift_core::time::Millis;
use picsift_core::{Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::StreamReadReply;
use redis::{AsyncCommands, RedisError, Script};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long to wait for a TCP connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for the reply to a command that does not block. Longer
/// than the client's default (500 ms) so a busy machine is not mistaken for
/// a dead server.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Slack on top of a blocking read's own timeout before the reply is given
/// up for lost (a network that drops packets without closing the socket).
const BLOCKING_SLACK: Duration = Duration::from_secs(10);
/// Claim keys checked per SCAN step by [`RedisDedup::pending_claims`].
const SCAN_COUNT: usize = 1000;

/// A connection that reconnects on its own after Redis went away.
async fn connect_manager(
    url: &str,
    response_timeout: Option<Duration>,
) -> Result<ConnectionManager> {
    let client = redis::Client::open(url).or_backend()?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(response_timeout);
    ConnectionManager::new_with_config(client, config)
        .await
        .or_backend()
}

/// Escapes the glob characters of SCAN MATCH, so a prefix is matched literally.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// [`picsift_core::dedup::decide_claim`] in Lua. KEYS[1]: the claim,
/// KEYS[2]: the index's completeness marker. ARGV: owner, now, now + lease
/// (added by the caller: Lua numbers are doubles). Replies `{'new'}`,
/// `{'yours'}`, `{'committed', image_id, owner}`, `{'pending',
/// lease_until}`, or `{'incomplete'}` when the marker is gone (Redis lost
/// its data: see [`picsift_core::dedup_index`]).
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {'incomplete'}
end
local h = redis.call('HMGET', KEYS[1], 'owner', 'image_id', 'lease_until')
local owner, image_id, lease_until = h[1], h[2], h[3]
local function take()
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease_until', ARGV[3])
  redis.call('HDEL', KEYS[1], 'image_id')
end
if not owner then
  take()
  return {'new'}
end
if image_id then
  return {'committed', image_id, owner}
end
if owner == ARGV[1] then
  take()
  return {'yours'}
end
-- A pending claim without a lease (written by hand) counts as expired
-- rather than failing every claim of the key.
if (tonumber(lease_until) or 0) <= tonumber(ARGV[2]) then
  take()
  return {'new'}
end
return {'pending', lease_until}
",
    )
});

/// [`picsift_core::dedup::decide_commit`] in Lua. KEYS[1]: the claim. ARGV: owner,
/// image id. Replies `'committed'` or `'lost'`.
static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local h = redis.call('HMGET', KEYS[1], 'owner', 'image_id')
if h[1] and h[1] ~= ARGV[1] then
  return 'lost'
end
-- A vanished claim (an index rebuilt from scratch) is re-created
-- committed; the owner's own commit seen again writes nothing.
if not (h[1] and h[2]) then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'image_id', ARGV[2])
  redis.call('HDEL', KEYS[1], 'lease_until')
end
return 'committed'
",
    )
});

/// Drops a pending claim of its owner. KEYS[1]: the claim. ARGV[1]: owner.
static RELEASE_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local h = redis.call('HMGET', KEYS[1], 'owner', 'image_id')
if h[1] == ARGV[1] and not h[2] then
  redis.call('DEL', KEYS[1])
end
return 1
",
    )
});

/// Extends the rebuild lease of its holder. KEYS[1]: the rebuild key.
/// ARGV: holder, lease (ms). Replies 1 when extended, 0 when another
/// process holds it now (or nobody does).
static RENEW_REBUILD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Marks the index complete and frees the rebuild lease, if the caller
/// still holds it (a flush mid-rebuild took the lease with the restored
/// claims). KEYS: the complete marker, the rebuild key. ARGV[1]: the
/// holder. Replies 1 when done, 0 when the caller no longer held it.
static END_REBUILD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], 1)
redis.call('DEL', KEYS[2])
return 1
",
    )
});

/// Dedup claims in Redis: the cluster [`DedupIndex`].
#[derive(Clone, Debug)]
pub struct RedisDedup {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisDedup {
    /// Connects to the Redis at `url` (`redis://host:port/db`); claim keys
    /// start with `prefix` (e.g. `picsift:`).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        Ok(Self {
            conn: connect_manager(url, Some(RESPONSE_TIMEOUT)).await?,
            prefix: prefix.to_string(),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}claim:{key}", self.prefix)
    }

    /// Exists while the index holds every committed claim.
    fn complete_key(&self) -> String {
        format!("{}dedup:complete", self.prefix)
    }

    /// Held by the process rebuilding the index.
    fn rebuild_key(&self) -> String {
        format!("{}dedup:rebuild", self.prefix)
    }
}

/// The claim script's reply as a [`ClaimOutcome`].
fn claim_outcome(reply: &[String], owner: &str) -> Result<ClaimOutcome> {
    let corrupt = || Error::Corrupt(format!("dedup claim script replied {reply:?}"));
    match reply {
        [kind] if kind == "new" => Ok(ClaimOutcome::New),
        [kind] if kind == "yours" => Ok(ClaimOutcome::Yours),
        [kind] if kind == "incomplete" => Err(Error::DedupIndexIncomplete),
        [kind, image_id, by] if kind == "committed" => Ok(ClaimOutcome::Committed {
            image_id: image_id.clone(),
            by_you: by == owner,
        }),
        [kind, until] if kind == "pending" => Ok(ClaimOutcome::PendingOther {
            retry_at: until.parse().map_err(|_| corrupt())?,
        }),
        _ => Err(corrupt()),
    }
}

#[async_trait]
impl DedupIndex for RedisDedup {
    async fn claim(
        &self,
        key: &str,
        owner: &str,
        now: Millis,
        lease_ms: Millis,
    ) -> Result<ClaimOutcome> {
        let reply: Vec<String> = CLAIM
            .key(self.key(key))
            .key(self.complete_key())
            .arg(owner)
            .arg(now)
            .arg(now.saturating_add(lease_ms))
            .invoke_async(&mut self.conn.clone())
            .await
            .or_backend()?;
        claim_outcome(&reply, owner)
    }

    async fn commit(&self, key: &str, owner: &str, image_id: &str) -> Result<CommitOutcome> {
        let reply: String = COMMIT
            .key(self.key(key))
            .arg(owner)
            .arg(image_id)
            .invoke_async(&mut self.conn.clone())
            .await
            .or_backend()?;
        match reply.as_str() {
            "committed" => Ok(CommitOutcome::Committed),
            "lost" => Ok(CommitOutcome::Lost),
            _ => Err(Error::Corrupt(format!(
                "dedup commit script replied {reply:?}"
            ))),
        }
    }

    async fn release(&self, key: &str, owner: &str) -> Result<()> {
        let _: i64 = RELEASE_CLAIM
            .key(self.key(key))
            .arg(owner)
            .invoke_async(&mut self.conn.clone())
            .await
            .or_backend()?;
        Ok(())
    }

    async fn pending_claims(&self) -> Result<u64> {
        // SCAN, not KEYS: it does not stall Redis on a large index. SCAN
        // may return a key twice (while Redis resizes its table), so the
        // pending ones are collected by name; they are few, unlike the
        // committed ones, which are only looked at.
        let mut conn = self.conn.clone();
        let pattern = format!("{}claim:*", glob_escape(&self.prefix));
        let mut pending = std::collections::HashSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await
                .or_backend()?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.hmget(k, &["owner", "image_id"]);
                }
                let fields: Vec<(Option<String>, Option<String>)> =
                    pipe.query_async(&mut conn).await.or_backend()?;
                for (k, (owner, image_id)) in keys.into_iter().zip(fields) {
                    // No owner: the key vanished between SCAN and HMGET.
                    if owner.is_some() && image_id.is_none() {
                        pending.insert(k);
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(pending.len() as u64)
    }

    async fn restore_committed(&self, key: &str, owner: &str, image_id: &str) -> Result<()> {
        self.restore_committed_many(&[(key.into(), owner.into(), image_id.into())])
            .await
    }

    async fn restore_committed_many(&self, claims: &[(String, String, String)]) -> Result<()> {
        // One round trip for the lot; each claim written as one step
        // (MULTI/EXEC). (Redis refuses an empty pipeline.)
        if claims.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, owner, image_id) in claims {
            let key = self.key(key);
            pipe.cmd("MULTI")
                .ignore()
                .hset_multiple(&key, &[("owner", owner), ("image_id", image_id)])
                .ignore()
                .hdel(&key, "lease_until")
                .ignore()
                .cmd("EXEC")
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .or_backend()
    }

    async fn complete(&self) -> Result<bool> {
        let n: i64 = redis::cmd("EXISTS")
            .arg(self.complete_key())
            .query_async(&mut self.conn.clone())
            .await
            .or_backend()?;
        Ok(n == 1)
    }

    async fn begin_rebuild(&self, who: &str, ttl_ms: u64) -> Result<bool> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.rebuild_key())
            .arg(who)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async(&mut self.conn.clone())
            .await
            .or_backend()?;
        Ok(taken.is_some())
    }

    async fn renew_rebuild(&self, who: &str, ttl_ms: u64) -> Result<bool> {
        let renewed: i64 = RENEW_REBUILD
            .key(self.rebuild_key())
            .arg(who)
            .arg(ttl_ms.max(1))
            .invoke_async(&mut self.conn.clone())
            .await
            .or_backend()?;
        Ok(renewed == 1)
    }

    async fn end_rebuild(&self, who: &str) -> Result<bool> {
        let ended: i64 = END_REBUILD
            .key(self.complete_key())
            .key(self.rebuild_key())
            .arg(who)
            .invoke_async(&mut self.conn.clone())
            .await
            .or_backend()?;
        Ok(ended == 1)
    }
}

/// The consumer group every worker reads the queue through.
const GROUP: &str = "workers";

/// Reclaims the oldest task whose delivery is older than the visibility
/// timeout, for this consumer. KEYS[1]: the stream. ARGV: group, consumer,
/// visibility timeout (ms). Replies `{id, task, deliveries, previous
/// consumer}` or nil.
///
/// XAUTOCLAIM counts the delivery; XPENDING reads the count back in the
/// same script, so no other worker can move the entry in between. The
/// XPENDING IDLE before it names the consumer that held the entry (the
/// same first idle entry from the cursor on; empty when they differ). With
/// COUNT 1 XAUTOCLAIM looks at a few entries per call: the loop walks the
/// whole pending list (one entry per live or dead task, so short).
static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cursor = '0-0'
repeat
  local before = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], cursor, '+', 1)
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor, 'COUNT', 1)
  cursor = r[1]
  -- An entry deleted from the stream comes back as nil (Redis 6.2) or not at all.
  local e = r[2][1]
  if e then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
    local task = ''
    for i = 1, #e[2], 2 do
      if e[2][i] == 'task' then task = e[2][i + 1] end
    end
    local prev = ''
    if before[1] and before[1][1] == e[1] then prev = before[1][2] end
    return {e[1], task, tostring(p[1][4]), prev}
  end
until cursor == '0-0'
return false
",
    )
});

/// Sets the idle time of a task the caller holds, keeping its delivery
/// count. Release: an idle time of a whole visibility timeout, so the next
/// XAUTOCLAIM takes it (and counts one more delivery). Extend (the
/// worker's heartbeat): an idle time of 0, so nobody reclaims it for
/// another visibility timeout.
/// KEYS[1]: the stream. ARGV: group, consumer, id, idle time to set
/// (ms), deliveries. Nothing happens (reply 0) when the lease is stale:
/// another worker reclaimed the task meanwhile and holds it now.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local e = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)[1]
if not e or e[2] ~= ARGV[2] or tostring(e[4]) ~= ARGV[5] then
  return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'RETRYCOUNT', ARGV[5], 'JUSTID')
return 1
",
    )
});

/// A consumer that held nothing and did nothing for this long is a worker
/// that is gone: [`RedisQueue::remove_idle_consumers`] takes it out of the
/// group (a live worker reads at least every few seconds).
pub const CONSUMER_GONE_AFTER_MS: u64 = 3_600_000;

/// The work queue on Redis Streams: the cluster [`WorkQueue`].
///
/// Every worker process connects with its own consumer name; clones share
/// it. A live worker extends its lease ([`WorkQueue::extend`], the
/// worker's heartbeat) so its task is not handed out a second time; one
/// that stops extending (it died or stalled) loses the task after the
/// visibility timeout (a second delivery is harmless for correctness:
/// verdicts and dedup are idempotent, but it is wasted work).
#[derive(Clone, Debug)]
pub struct RedisQueue {
    conn: ConnectionManager,
    /// A second connection for XREADGROUP BLOCK: a blocked command holds up
    /// every command queued behind it on the same connection, so acks and
    /// enqueues must not share it. One blocked read at a time.
    blocking: Arc<Mutex<ConnectionManager>>,
    stream: String,
    dead: String,
    /// Counters of the queue's life (`reclaimed`), for metrics.
    stats: String,
    consumer: String,
    visibility_timeout_ms: u64,
}

/// What one read of the stream found.
enum Read {
    /// A task to hand out.
    Lease(Box<Lease>),
    /// An entry that is not a task; it was dead-lettered. Look again.
    Skipped,
    /// Nothing.
    Empty,
}

impl RedisQueue {
    /// Connects to the Redis at `url`: the queue is the stream
    /// `{prefix}queue`, dead letters go to `{prefix}dead`. `consumer`
    /// names this worker within the group (unique per process, e.g. the
    /// pod name). A task taken and neither acked nor released for
    /// `visibility_timeout_ms` is handed out again.
    pub async fn connect(
        url: &str,
        prefix: &str,
        consumer: &str,
        visibility_timeout_ms: u64,
    ) -> Result<Self> {
        let queue = Self {
            conn: connect_manager(url, Some(RESPONSE_TIMEOUT)).await?,
            // No client-side timeout: a blocked read legitimately takes as
            // long as it was asked to wait; `read_new` bounds it instead.
            blocking: Arc::new(Mutex::new(connect_manager(url, None).await?)),
            stream: format!("{prefix}queue"),
            dead: format!("{prefix}dead"),
            stats: format!("{prefix}stats"),
            consumer: consumer.to_string(),
            // XAUTOCLAIM with a minimum idle time of 0 would take tasks
            // other workers are processing right now.
            visibility_timeout_ms: visibility_timeout_ms.max(1),
        };
        queue.ensure_group().await?;
        Ok(queue)
    }

    /// Creates the stream and the group unless they exist. The group starts
    /// at the beginning of the stream, so tasks added before it (by a
    /// gateway after Redis lost its data) are not skipped.
    async fn ensure_group(&self) -> Result<()> {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn.clone())
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(Error::Redis(Box::new(e))),
            _ => Ok(()),
        }
    }

    /// Runs `op`; if Redis lost the group (it restarted without its data),
    /// creates it again and runs `op` once more.
    async fn with_group<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::result::Result<T, RedisError>>,
    {
        match op().await {
            Err(e) if is_nogroup(&e) => {
                self.ensure_group().await?;
                op().await.or_backend()
            }
            other => other.or_backend(),
        }
    }

    /// Tasks dead-lettered so far, oldest first: each as queued (JSON,
    /// kept raw so that an entry that was never a valid task still shows)
    /// and why.
    pub async fn dead_letters(&self) -> Result<Vec<(String, String)>> {
        let reply: redis::streams::StreamRangeReply = self
            .conn
            .clone()
            .xrange_all(&self.dead)
            .await
            .or_backend()?;
        Ok(reply
            .ids
            .iter()
            .map(|e| {
                (
                    e.get("task").unwrap_or_default(),
                    e.get("reason").unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Takes the oldest task whose worker has held it past the timeout.
    async fn reclaim(&self) -> Result<Read> {
        let reply: Option<(String, String, u32, String)> = self
            .with_group(|| async {
                RECLAIM
                    .key(&self.stream)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(self.visibility_timeout_ms)
                    .invoke_async(&mut self.conn.clone())
                    .await
            })
            .await?;
        match reply {
            Some((id, task, deliveries, previous)) => {
                let read = self.lease(id.clone(), &task, deliveries).await?;
                if let Read::Lease(lease) = &read {
                    // Counted for metrics; a lost count is no loss of work.
                    let counted: redis::RedisResult<i64> =
                        self.conn.clone().hincr(&self.stats, "reclaimed", 1).await;
                    if let Err(e) = counted {
                        tracing::debug!(error = %e, "reclaim not counted");
                    }
                    tracing::warn!(
                        entry = id,
                        batch = lease.task.batch_id,
                        previous_owner = previous,
                        deliveries,
                        "reclaimed a task its worker held past the visibility timeout (the worker died or stalled)"
                    );
                }
                Ok(read)
            }
            None => Ok(Read::Empty),
        }
    }

    /// Removes consumers of the group that have held nothing and done
    /// nothing for `idle_ms` (workers that are gone), other than this one;
    /// returns their names. A live worker's next read brings it back.
    pub async fn remove_idle_consumers(&self, idle_ms: u64) -> Result<Vec<String>> {
        let infos: Vec<redis::Value> = self
            .with_group(|| async {
                redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(&self.stream)
                    .arg(GROUP)
                    .query_async(&mut self.conn.clone())
                    .await
            })
            .await?;
        let mut removed = Vec::new();
        for info in infos {
            let fields: HashMap<String, redis::Value> = redis::from_redis_value(info)
                .map_err(|e| Error::Corrupt(format!("XINFO CONSUMERS: {e}")))?;
            let text = |k: &str| {
                fields
                    .get(k)
                    .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
            };
            let num = |k: &str| {
                fields
                    .get(k)
                    .and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok())
            };
            let (Some(name), Some(pending), Some(idle)) =
                (text("name"), num("pending"), num("idle"))
            else {
                continue;
            };
            if name == self.consumer || pending > 0 || idle < idle_ms {
                continue;
            }
            let _: i64 = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(&name)
                .query_async(&mut self.conn.clone())
                .await
                .or_backend()?;
            tracing::info!(
                consumer = name,
                idle_s = idle / 1000,
                "removed a gone worker from the queue's consumer group"
            );
            removed.push(name);
        }
        Ok(removed)
    }

    /// Reads one task never handed out before, waiting until `deadline`.
    async fn read_new(&self, deadline: Instant) -> Result<Read> {
        let reply = match self.read_blocking(deadline).await? {
            Some(reply) => reply,
            // No time left to wait (and BLOCK 0 would wait forever), or
            // other callers kept the blocking connection busy all along:
            // one look without waiting, on the shared connection.
            None => {
                self.with_group(|| self.xreadgroup(&self.conn, None))
                    .await?
            }
        };
        let entry = reply
            .and_then(|r| r.keys.into_iter().next())
            .and_then(|k| k.ids.into_iter().next());
        match entry {
            // A first delivery through `>` always has a delivery count of 1.
            Some(e) => {
                let task: String = e.get("task").unwrap_or_default();
                self.lease(e.id, &task, 1).await
            }
            None => Ok(Read::Empty),
        }
    }

    /// XREADGROUP BLOCK on the blocking connection until `deadline`;
    /// `None` when there is no time left to block.
    ///
    /// If the caller gives up (drops the future) while Redis is blocked,
    /// an entry Redis hands out meanwhile is pending for this consumer but
    /// nobody got it: it comes back after the visibility timeout.
    async fn read_blocking(&self, deadline: Instant) -> Result<Option<Option<StreamReadReply>>> {
        let Ok(conn) = tokio::time::timeout_at(deadline, self.blocking.lock()).await else {
            return Ok(None);
        };
        // Measured after the lock: waiting for it used up part of the time.
        let wait_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64;
        if wait_ms == 0 {
            return Ok(None);
        }
        let read = self.with_group(|| self.xreadgroup(&conn, Some(wait_ms)));
        let reply = tokio::time::timeout(Duration::from_millis(wait_ms) + BLOCKING_SLACK, read)
            .await
            .map_err(|_| {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "Redis did not answer a blocking stream read in time",
                ))
            })??;
        Ok(Some(reply))
    }

    async fn xreadgroup(
        &self,
        conn: &ConnectionManager,
        block_ms: Option<u64>,
    ) -> std::result::Result<Option<StreamReadReply>, RedisError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(1);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(">");
        cmd.query_async(&mut conn.clone()).await
    }

    /// A lease for entry `id`; an entry that is not a task is dead-lettered
    /// instead, so it cannot come back after every visibility timeout.
    async fn lease(&self, id: String, task: &str, deliveries: u32) -> Result<Read> {
        match parse_task(task) {
            Ok(task) => Ok(Read::Lease(Box::new(Lease {
                task,
                receipt: id,
                deliveries,
            }))),
            Err(e) => {
                tracing::warn!(entry = %id, error = %e, "dead-lettering an unreadable queue entry");
                self.bury(&id, task, &format!("unreadable task: {e}"), deliveries)
                    .await?;
                Ok(Read::Skipped)
            }
        }
    }

    /// Sets a held task's idle time ([`RELEASE`]); `false` when the lease
    /// is stale.
    async fn set_idle(&self, lease: &Lease, idle_ms: u64) -> Result<bool> {
        let changed: i64 = self
            .with_group(|| async {
                RELEASE
                    .key(&self.stream)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(&lease.receipt)
                    .arg(idle_ms)
                    .arg(lease.deliveries)
                    .invoke_async(&mut self.conn.clone())
                    .await
            })
            .await?;
        Ok(changed == 1)
    }

    /// Moves entry `id` to the dead-letter stream and removes it from the
    /// queue, in one transaction.
    async fn bury(&self, id: &str, task: &str, why: &str, deliveries: u32) -> Result<()> {
        redis::pipe()
            .atomic()
            .xadd(
                &self.dead,
                "*",
                &[
                    ("task", task),
                    ("reason", why),
                    ("deliveries", &deliveries.to_string()),
                    ("entry", id),
                ],
            )
            .ignore()
            .xack(&self.stream, GROUP, &[id])
            .ignore()
            .xdel(&self.stream, &[id])
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
            .or_backend()?;
        Ok(())
    }
}

fn is_nogroup(e: &RedisError) -> bool {
    // Redis before 7 wraps an error raised inside a script in ERR, with
    // the original code only in the text.
    e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP")
}

fn parse_task(task: &str) -> Result<ChunkTask> {
    serde_json::from_str(task).map_err(|e| Error::Corrupt(format!("queued task: {e}")))
}

#[async_trait]
impl WorkQueue for RedisQueue {
    async fn enqueue(&self, task: ChunkTask) -> Result<()> {
        let json = serde_json::to_string(&task)
            .map_err(|e| Error::Corrupt(format!("task does not serialise: {e}")))?;
        let _: String = self
            .conn
            .clone()
            .xadd(&self.stream, "*", &[("task", json)])
            .await
            .or_backend()?;
        Ok(())
    }

    async fn dequeue(&self, wait_ms: u64) -> Result<Option<Lease>> {
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        loop {
            // Redelivery first: a task whose worker died has waited longest.
            match self.reclaim().await? {
                Read::Lease(lease) => return Ok(Some(*lease)),
                Read::Skipped => continue,
                Read::Empty => {}
            }
            match self.read_new(deadline).await? {
                Read::Lease(lease) => return Ok(Some(*lease)),
                Read::Skipped => continue,
                Read::Empty => return Ok(None),
            }
        }
    }

    async fn ack(&self, lease: &Lease) -> Result<()> {
        // Deleting the entry too keeps the stream as long as the backlog.
        redis::pipe()
            .atomic()
            .xack(&self.stream, GROUP, &[&lease.receipt])
            .ignore()
            .xdel(&self.stream, &[&lease.receipt])
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
            .or_backend()?;
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.set_idle(lease, self.visibility_timeout_ms).await?;
        Ok(())
    }

    fn lease_ttl(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.visibility_timeout_ms))
    }

    async fn tidy(&self) -> Result<()> {
        self.remove_idle_consumers(CONSUMER_GONE_AFTER_MS).await?;
        Ok(())
    }

    async fn extend(&self, lease: &Lease) -> Result<bool> {
        self.set_idle(lease, 0).await
    }

    async fn dead_letter(&self, lease: &Lease, why: &str) -> Result<()> {
        let json = serde_json::to_string(&lease.task)
            .map_err(|e| Error::Corrupt(format!("task does not serialise: {e}")))?;
        self.bury(&lease.receipt, &json, why, lease.deliveries)
            .await
    }

    /// Tasks enqueued and neither acked nor dead-lettered: XLEN, since
    /// acked entries are deleted. Unlike the embedded queue this includes
    /// the tasks workers hold right now (and those of dead workers waiting
    /// for redelivery): all of them still need a worker.
    async fn backlog(&self) -> Result<u64> {
        let n: u64 = self.conn.clone().xlen(&self.stream).await.or_backend()?;
        Ok(n)
    }

    async fn reclaimed(&self) -> Result<u64> {
        let n: Option<u64> = self
            .conn
            .clone()
            .hget(&self.stats, "reclaimed")
            .await
            .or_backend()?;
        Ok(n.unwrap_or(0))
    }
}

/// [`picsift_core::rate::take`] in Lua. KEYS[1]: the bucket (a hash of `tokens`
/// and `at`). ARGV: rate per second, burst, now (ms). Replies the
/// milliseconds to wait, 0 when the request may go. The bucket expires
/// once it would be full again anyway.
static TAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(h[1]), tonumber(h[2])
if not tokens then tokens, at = burst, now end
local elapsed = math.max(now - at, 0) / 1000
tokens = math.min(tokens + elapsed * rate, burst)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.max(math.ceil((1 - tokens) / rate * 1000), 1)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
",
    )
});

/// Per-tenant token buckets in Redis, shared by every gateway replica.
#[derive(Clone)]
pub struct RedisRateLimiter {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisRateLimiter {
    /// Connects to the Redis at `url`; bucket keys start with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        Ok(Self {
            conn: connect_manager(url, Some(RESPONSE_TIMEOUT)).await?,
            prefix: prefix.to_string(),
        })
    }
}

#[async_trait]
impl picsift_core::rate::RateLimiter for RedisRateLimiter {
    async fn take(
        &self,
        tenant: &str,
        rate: picsift_core::rate::Rate,
        now: Millis,
    ) -> Result<Option<Millis>> {
        let wait: i64 = TAKE_SCRIPT
            .key(format!("{}rate:{tenant}", self.prefix))
            .arg(rate.per_second)
            .arg(rate.burst)
            .arg(now)
            .invoke_async(&mut self.conn.clone())
            .await
            .or_backend()?;
        Ok((wait > 0).then_some(wait))
    }
}
