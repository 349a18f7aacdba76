//! The exact-dedup claim protocol, as pure decisions. Adapters read the
//! current record, call [`decide_claim`] or [`decide_commit`], and write the
//! result atomically (a SQLite transaction; a Lua script in Redis).
//!
//! `claim(key, owner, lease)` answers new (you own it now), yours (you
//! claimed it before: carry on), committed (a duplicate of that image, or
//! your own commit seen again) or pending by another owner (retry later).
//! An expired lease frees the claim of a crashed worker, so a crash between
//! claim and store never leaves an image a duplicate of nothing.

use crate::time::Millis;

/// How long a claim blocks others unless configured: a crashed worker's
/// claims are free again after this.
pub const DEFAULT_LEASE_MS: Millis = 120_000;

/// A claim as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRecord {
    /// Who holds it: `batch:entry`.
    pub owner: String,
    /// Pending until the lease runs out, or committed.
    pub state: ClaimState,
}

/// Whether a claim is in flight or done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimState {
    /// Claimed, not stored yet; free for others after `lease_until`.
    Pending {
        /// End of the lease, in ms since the epoch.
        lease_until: Millis,
    },
    /// Stored; the image id.
    Committed {
        /// The stored image.
        image_id: String,
    },
}

/// What a claim attempt means for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key was free (or its lease had expired): store it, then commit.
    New,
    /// The caller already held the claim: carry on storing, then commit.
    Yours,
    /// Already stored. `by_you` when the caller committed it itself.
    Committed {
        /// The stored image.
        image_id: String,
        /// The caller is the owner that committed it.
        by_you: bool,
    },
    /// Another owner holds a live lease: retry at `retry_at`.
    PendingOther {
        /// When the other lease ends.
        retry_at: Millis,
    },
}

/// The claim key of image `id`: the id itself under global dedup, or
/// `tenant/{tenant}/{id}` when only `tenant`'s images count.
pub fn claim_key(tenant: Option<&str>, id: &str) -> String {
    match tenant {
        None => id.to_string(),
        Some(t) => format!("tenant/{t}/{id}"),
    }
}

/// Decides a claim. Returns the outcome and the record to write, if any.
pub fn decide_claim(
    existing: Option<&ClaimRecord>,
    owner: &str,
    now: Millis,
    lease_ms: Millis,
) -> (ClaimOutcome, Option<ClaimRecord>) {
    let fresh = || {
        Some(ClaimRecord {
            owner: owner.to_string(),
            state: ClaimState::Pending {
                lease_until: now + lease_ms,
            },
        })
    };
    match existing {
        None => (ClaimOutcome::New, fresh()),
        Some(ClaimRecord {
            owner: o,
            state: ClaimState::Committed { image_id },
        }) => (
            ClaimOutcome::Committed {
                image_id: image_id.clone(),
                by_you: o == owner,
            },
            None,
        ),
        Some(ClaimRecord {
            owner: o,
            state: ClaimState::Pending { .. },
        }) if o == owner => (ClaimOutcome::Yours, fresh()),
        Some(ClaimRecord {
            state: ClaimState::Pending { lease_until },
            ..
        }) if *lease_until <= now => (ClaimOutcome::New, fresh()),
        Some(ClaimRecord {
            state: ClaimState::Pending { lease_until },
            ..
        }) => (
            ClaimOutcome::PendingOther {
                retry_at: *lease_until,
            },
            None,
        ),
    }
}

/// What a commit attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The claim is now committed to the caller's image.
    Committed,
    /// Someone else holds or committed the key: claim again to learn the verdict.
    Lost,
}

/// Decides a commit of `image_id` by `owner`. Returns the outcome and the record to write.
pub fn decide_commit(
    existing: Option<&ClaimRecord>,
    owner: &str,
    image_id: &str,
) -> (CommitOutcome, Option<ClaimRecord>) {
    let committed = || {
        Some(ClaimRecord {
            owner: owner.to_string(),
            state: ClaimState::Committed {
                image_id: image_id.to_string(),
            },
        })
    };
    match existing {
        // A claim that vanished (an index rebuilt from scratch) is re-created committed.
        None => (CommitOutcome::Committed, committed()),
        Some(r) if r.owner == owner => match &r.state {
            ClaimState::Pending { .. } => (CommitOutcome::Committed, committed()),
            ClaimState::Committed { .. } => (CommitOutcome::Committed, None),
        },
        Some(_) => (CommitOutcome::Lost, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(owner: &str, until: Millis) -> ClaimRecord {
        ClaimRecord {
            owner: owner.into(),
            state: ClaimState::Pending { lease_until: until },
        }
    }
    fn committed(owner: &str) -> ClaimRecord {
        ClaimRecord {
            owner: owner.into(),
            state: ClaimState::Committed {
                image_id: "img".into(),
            },
        }
    }

    #[test]
    fn claim_decisions() {
        let now = 1_000;
        let cases: Vec<(Option<ClaimRecord>, ClaimOutcome, bool)> = vec![
            (None, ClaimOutcome::New, true),
            (Some(pending("me", 5_000)), ClaimOutcome::Yours, true),
            (
                Some(pending("other", 5_000)),
                ClaimOutcome::PendingOther { retry_at: 5_000 },
                false,
            ),
            (Some(pending("other", 1_000)), ClaimOutcome::New, true),
            (Some(pending("other", 10)), ClaimOutcome::New, true),
            (
                Some(committed("other")),
                ClaimOutcome::Committed {
                    image_id: "img".into(),
                    by_you: false,
                },
                false,
            ),
            (
                Some(committed("me")),
                ClaimOutcome::Committed {
                    image_id: "img".into(),
                    by_you: true,
                },
                false,
            ),
        ];
        for (existing, want, writes) in cases {
            let (got, write) = decide_claim(existing.as_ref(), "me", now, 60_000);
            assert_eq!(got, want, "{existing:?}");
            assert_eq!(write.is_some(), writes, "{existing:?}");
            if let Some(w) = write {
                assert_eq!(w, pending("me", now + 60_000));
            }
        }
    }

    #[test]
    fn commit_decisions() {
        let c = |e: Option<ClaimRecord>| decide_commit(e.as_ref(), "me", "img").0;
        assert_eq!(c(Some(pending("me", 5))), CommitOutcome::Committed);
        assert_eq!(c(Some(committed("me"))), CommitOutcome::Committed);
        assert_eq!(c(None), CommitOutcome::Committed);
        assert_eq!(c(Some(pending("other", 5))), CommitOutcome::Lost);
        assert_eq!(c(Some(committed("other"))), CommitOutcome::Lost);
    }

    #[test]
    fn crashed_owner_never_leaves_a_duplicate_of_nothing() {
        // Worker A claims and dies before storing. B sees pending, never "duplicate".
        let (_, a) = decide_claim(None, "a", 0, 100);
        let (b_early, _) = decide_claim(a.as_ref(), "b", 50, 100);
        assert!(matches!(
            b_early,
            ClaimOutcome::PendingOther { retry_at: 100 }
        ));
        // After the lease B takes over, stores and commits; A coming back has lost.
        let (b_late, b) = decide_claim(a.as_ref(), "b", 100, 100);
        assert_eq!(b_late, ClaimOutcome::New);
        let (_, b_done) = decide_commit(b.as_ref(), "b", "img");
        assert_eq!(
            decide_commit(b_done.as_ref(), "a", "img").0,
            CommitOutcome::Lost
        );
        assert!(matches!(
            decide_claim(b_done.as_ref(), "a", 200, 100).0,
            ClaimOutcome::Committed { by_you: false, .. }
        ));
    }
}
