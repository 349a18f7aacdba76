//! The WorkerPool autoscaler: how many workers the backlog calls for, and
//! which Jobs to create or delete. Pure; table-tested.
//!
//! Workers scale down by themselves: an idle worker exits after the
//! pool's idle timeout. The autoscaler never deletes a running worker (it
//! may hold a chunk); it only deletes finished Jobs, and pending ones the
//! backlog no longer needs, so a slow GPU node provisioning is not left
//! to start workers for nothing.
//!
//! Every pool's workers take tasks from the one queue, so each pool scales
//! on its [`share`] of the backlog, not on all of it (two pools would
//! otherwise both scale for the whole backlog). While a pool's workers keep
//! failing ([`crate::health`]), it holds: no new Jobs, failed ones kept.

use picsift_crds::WorkerPoolSpec;

/// Where a worker Job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Its pod runs.
    Running,
    /// Created but not running: unscheduled, pulling its image, or
    /// suspended by Kueue. Counts as a worker on its way.
    Pending,
    /// Ended well: the worker went idle and exited.
    Succeeded,
    /// Ended badly: the worker crashed, was killed, or never started.
    Failed,
}

/// One worker Job of the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerJob {
    /// The Job's slot (its name is `<pool>-worker-<slot>`).
    pub slot: u32,
    /// Its state.
    pub state: JobState,
    /// Made from the pool's current template (image, resources, ...).
    pub current: bool,
    /// When it succeeded or failed.
    pub ended_at: Option<picsift_core::time::Millis>,
}

/// The autoscaler's decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scale {
    /// Workers the backlog calls for, within the bounds.
    pub desired: i32,
    /// Running workers.
    pub running: i32,
    /// Pending workers.
    pub pending: i32,
    /// Slots to create a Job in.
    pub create: Vec<u32>,
    /// Slots whose Job to delete (finished, or pending and not needed).
    pub delete: Vec<u32>,
}

/// This pool's part of `backlog` when `pools` (name and `maxWorkers` of
/// every WorkerPool, this one included) all take from the one queue: split
/// in proportion to `maxWorkers`, the remainder going one task at a time
/// to the largest fractions (ties by name), so the shares add up to the
/// backlog. A pool missing from `pools` (a list older than the pool) counts
/// with `max_workers`.
pub fn share(backlog: u64, pools: &[(String, i32)], me: &str, max_workers: i32) -> u64 {
    let mut pools: Vec<(&str, u128)> = pools
        .iter()
        .filter(|(name, _)| name != me)
        .map(|(name, max)| (name.as_str(), u128::try_from(*max).unwrap_or(0)))
        .collect();
    pools.push((me, u128::try_from(max_workers).unwrap_or(0)));
    let total: u128 = pools.iter().map(|p| p.1).sum();
    if total == 0 {
        return 0;
    }
    let backlog = u128::from(backlog);
    let floor = |w: u128| backlog * w / total;
    let left = backlog - pools.iter().map(|p| floor(p.1)).sum::<u128>();
    // Largest remainder first; equal remainders by name.
    pools.sort_by(|a, b| {
        ((backlog * b.1) % total)
            .cmp(&((backlog * a.1) % total))
            .then(a.0.cmp(b.0))
    });
    let rank = pools.iter().position(|p| p.0 == me).unwrap_or(0) as u128;
    let mine = pools.iter().find(|p| p.0 == me).map_or(0, |p| p.1);
    u64::try_from(floor(mine) + u128::from(rank < left && mine > 0)).unwrap_or(u64::MAX)
}

/// Workers wanted for `backlog` chunk tasks: one per
/// `targetBacklogPerWorker`, rounded up, within `[minWorkers, maxWorkers]`.
pub fn desired_workers(spec: &WorkerPoolSpec, backlog: u64) -> i32 {
    let per = u64::try_from(spec.target_backlog_per_worker.max(1)).unwrap_or(1);
    let max = spec.max_workers.max(0);
    let want = i32::try_from(backlog.div_ceil(per)).unwrap_or(i32::MAX);
    want.clamp(spec.min_workers.clamp(0, max), max)
}

/// Decides which Jobs to create and delete. When `hold` (the pool's
/// workers keep failing and it backs off), it creates none and keeps the
/// failed Jobs, whose pods hold the logs that say why.
pub fn decide(spec: &WorkerPoolSpec, backlog: u64, jobs: &[WorkerJob], hold: bool) -> Scale {
    // Jobs from an older template (the pool's spec changed): pending ones
    // go at once, running ones one per round (a rolling update that costs
    // at most one worker's capacity; its chunk comes back through the
    // queue). Both are replaced like any missing worker.
    let mut retired: Vec<u32> = jobs
        .iter()
        .filter(|j| !j.current && j.state == JobState::Pending)
        .map(|j| j.slot)
        .collect();
    retired.extend(
        jobs.iter()
            .filter(|j| !j.current && j.state == JobState::Running)
            .map(|j| j.slot)
            .min(),
    );
    let live = |j: &&WorkerJob| !retired.contains(&j.slot);
    let count = |s: JobState| jobs.iter().filter(live).filter(|j| j.state == s).count() as i32;
    let desired = desired_workers(spec, backlog);
    let (running, pending) = (count(JobState::Running), count(JobState::Pending));
    let mut scale = Scale {
        desired,
        running,
        pending,
        ..Scale::default()
    };
    scale.delete = jobs
        .iter()
        .filter(|j| j.state == JobState::Succeeded || (j.state == JobState::Failed && !hold))
        .map(|j| j.slot)
        .chain(retired.iter().copied())
        .collect();
    let active = running + pending;
    if desired > active && !hold {
        // A deleted Job still holds its name until it is gone, so its slot
        // is taken this round and free the next.
        let taken: Vec<u32> = jobs.iter().map(|j| j.slot).collect();
        scale.create = (0..u32::try_from(spec.max_workers.max(0)).unwrap_or(0))
            .filter(|s| !taken.contains(s))
            .take((desired - active) as usize)
            .collect();
    } else if desired < active {
        let mut surplus: Vec<u32> = jobs
            .iter()
            .filter(live)
            .filter(|j| j.state == JobState::Pending)
            .map(|j| j.slot)
            .collect();
        surplus.sort_unstable_by(|a, b| b.cmp(a));
        surplus.truncate((active - desired).min(pending) as usize);
        scale.delete.extend(surplus);
    }
    scale.delete.sort_unstable();
    scale.delete.dedup();
    scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    fn spec(min: i32, max: i32, per: i32) -> WorkerPoolSpec {
        serde_json::from_value(serde_json::json!({
            "minWorkers": min, "maxWorkers": max, "targetBacklogPerWorker": per,
            "image": "picsift"
        }))
        .unwrap()
    }

    /// A pool that is not backing off.
    fn decide_now(spec: &WorkerPoolSpec, backlog: u64, jobs: &[WorkerJob]) -> Scale {
        decide(spec, backlog, jobs, false)
    }

    fn jobs(states: &[(u32, JobState)]) -> Vec<WorkerJob> {
        states
            .iter()
            .map(|&(slot, state)| WorkerJob {
                slot,
                state,
                current: true,
                ended_at: None,
            })
            .collect()
    }

    #[test]
    fn desired_follows_the_backlog_within_bounds() {
        // (min, max, per worker, backlog, desired)
        let cases = [
            (0, 10, 4, 0, 0),     // nothing to do: zero workers
            (0, 10, 4, 1, 1),     // any backlog wakes one
            (0, 10, 4, 4, 1),     // exactly one worker's worth
            (0, 10, 4, 5, 2),     // rounds up
            (0, 10, 4, 1000, 10), // capped at max
            (2, 10, 4, 0, 2),     // min kept with no backlog
            (3, 2, 4, 100, 2),    // a min above max is cut to max
            (0, 0, 4, 100, 0),    // a pool switched off
        ];
        for (min, max, per, backlog, want) in cases {
            assert_eq!(
                desired_workers(&spec(min, max, per), backlog),
                want,
                "min {min} max {max} per {per} backlog {backlog}"
            );
        }
    }

    #[test]
    fn scale_up_from_zero_creates_jobs_in_the_lowest_free_slots() {
        let s = decide_now(&spec(0, 10, 4), 12, &[]);
        assert_eq!((s.desired, s.create, s.delete), (3, vec![0, 1, 2], vec![]));
    }

    #[test]
    fn pending_workers_count_so_slow_nodes_do_not_make_jobs_without_end() {
        // Three Jobs wait for GPU nodes; the backlog still wants three.
        let s = decide_now(
            &spec(0, 10, 4),
            12,
            &jobs(&[(0, Pending), (1, Pending), (2, Pending)]),
        );
        assert_eq!((s.running, s.pending), (0, 3));
        assert!(s.create.is_empty() && s.delete.is_empty());
    }

    #[test]
    fn scale_up_adds_only_the_difference() {
        let s = decide_now(&spec(0, 10, 4), 20, &jobs(&[(0, Running), (2, Pending)]));
        assert_eq!((s.desired, s.create), (5, vec![1, 3, 4]));
    }

    #[test]
    fn scale_up_stops_at_max() {
        let s = decide_now(
            &spec(0, 3, 1),
            100,
            &jobs(&[(0, Running), (1, Running), (2, Running)]),
        );
        assert_eq!((s.desired, s.create, s.delete), (3, vec![], vec![]));
    }

    #[test]
    fn scale_down_deletes_surplus_pending_jobs_never_running_ones() {
        let s = decide_now(
            &spec(0, 10, 4),
            4,
            &jobs(&[(0, Running), (1, Running), (2, Pending), (3, Pending)]),
        );
        // One is wanted, two run (they exit when idle), both pending go.
        assert_eq!((s.desired, s.create, s.delete), (1, vec![], vec![2, 3]));
    }

    #[test]
    fn scale_to_zero_leaves_running_workers_to_exit_when_idle() {
        let s = decide_now(&spec(0, 10, 4), 0, &jobs(&[(0, Running), (1, Running)]));
        assert_eq!((s.desired, s.create, s.delete), (0, vec![], vec![]));
    }

    #[test]
    fn finished_jobs_are_deleted_and_their_slots_reused_next_round() {
        let s = decide_now(&spec(0, 2, 1), 2, &jobs(&[(0, Succeeded), (1, Running)]));
        assert_eq!((s.create, s.delete), (vec![], vec![0]));
        let s = decide_now(&spec(0, 2, 1), 2, &jobs(&[(1, Running)]));
        assert_eq!(s.create, vec![0]);
    }

    #[test]
    fn min_workers_are_kept_and_replaced() {
        let s = decide_now(&spec(2, 5, 4), 0, &jobs(&[(0, Running), (1, Succeeded)]));
        assert_eq!((s.desired, s.create, s.delete), (2, vec![2], vec![1]));
    }

    #[test]
    fn a_changed_template_replaces_pending_jobs_and_rolls_running_ones_one_at_a_time() {
        let mut js = jobs(&[(0, Running), (1, Running), (2, Pending), (3, Running)]);
        for j in &mut js {
            j.current = false;
        }
        js[3].current = true;
        let s = decide_now(&spec(0, 10, 1), 4, &js);
        // Slot 2 (pending, stale) and slot 0 (the first stale running) go;
        // two replacements start in free slots.
        assert_eq!(s.delete, vec![0, 2]);
        assert_eq!((s.running, s.pending), (2, 0));
        assert_eq!(s.create, vec![4, 5]);
    }

    #[test]
    fn kept_workers_below_min_are_rolled_too() {
        let mut js = jobs(&[(0, Running)]);
        js[0].current = false;
        let s = decide_now(&spec(1, 5, 4), 0, &js);
        assert_eq!((s.delete, s.create), (vec![0], vec![1]));
    }

    #[test]
    fn failed_jobs_are_deleted_and_replaced_when_not_holding() {
        let s = decide_now(&spec(0, 2, 1), 2, &jobs(&[(0, Failed), (1, Running)]));
        assert_eq!((s.create, s.delete), (vec![], vec![0]));
    }

    #[test]
    fn a_holding_pool_creates_nothing_and_keeps_its_failed_jobs() {
        let js = jobs(&[(0, Failed), (1, Succeeded), (2, Running), (3, Pending)]);
        let s = decide(&spec(1, 10, 1), 8, &js, true);
        // The succeeded Job goes as always; the failed one stays for its
        // logs; nothing new starts although eight workers are wanted.
        assert_eq!((s.desired, s.create, s.delete), (8, vec![], vec![1]));
        // Surplus pending Jobs still go while holding.
        let s = decide(&spec(0, 10, 1), 1, &js, true);
        assert_eq!(s.delete, vec![1, 3]);
    }

    #[test]
    fn pools_share_the_backlog_in_proportion_to_their_max_workers() {
        let pools = |list: &[(&str, i32)]| -> Vec<(String, i32)> {
            list.iter().map(|&(n, m)| (n.to_string(), m)).collect()
        };
        let two = pools(&[("gpu", 10), ("cpu", 10)]);
        let uneven = pools(&[("a", 1), ("b", 2), ("c", 3)]);
        // (backlog, pools, me, my maxWorkers, share)
        let cases = [
            (100, two.clone(), "gpu", 10, 50),
            (101, two.clone(), "cpu", 10, 51), // the odd task to the first name
            (101, two.clone(), "gpu", 10, 50),
            (0, two.clone(), "gpu", 10, 0),
            (12, uneven.clone(), "a", 1, 2),
            (12, uneven.clone(), "b", 2, 4),
            (12, uneven.clone(), "c", 3, 6),
            (7, uneven.clone(), "a", 1, 1),
            (7, uneven.clone(), "b", 2, 2),
            (7, uneven.clone(), "c", 3, 4),
            (9, pools(&[]), "solo", 4, 9), // a list that lags: the pool itself
            (9, pools(&[("off", 0)]), "solo", 4, 9), // a switched-off pool takes none
            (9, pools(&[("solo", 4)]), "off", 0, 0),
            (9, pools(&[("x", 0)]), "y", 0, 0),
            (u64::MAX, two.clone(), "gpu", 10, u64::MAX / 2), // no overflow
        ];
        for (backlog, list, me, max, want) in cases {
            assert_eq!(
                share(backlog, &list, me, max),
                want,
                "backlog {backlog}, pools {list:?}, me {me}"
            );
        }
        // Every task goes to exactly one pool.
        for backlog in 0..50 {
            let sum: u64 = uneven
                .iter()
                .map(|(n, m)| share(backlog, &uneven, n, *m))
                .sum();
            assert_eq!(sum, backlog);
        }
    }
}
