//! CPU time over a run, read from `/proc`: the whole machine's, and by
//! process, to tell which part of the machine each photo's CPU went to
//! (the server, its decoder processes, the stand-in stores, the bench's
//! own client). A whole-machine figure alone cannot tell the product's
//! overhead from its neighbours'.

use std::collections::HashMap;
use std::time::Duration;

/// One process as `/proc` shows it.
pub struct Proc {
    pub ppid: u32,
    pub comm: String,
    pub cmdline: String,
    /// User and system time so far, in clock ticks.
    ticks: u64,
    /// When it started (after boot, in clock ticks): a pid seen twice is
    /// the same process only if this is the same. (Not the name: kernel
    /// workers rename themselves after the queue they serve.)
    started: u64,
}

/// Clock ticks, in `/proc`, of 10 ms (USER_HZ on Linux).
const TICK_MS: u64 = 10;

/// The whole machine's busy CPU time so far (user, nice, system), from
/// `/proc/stat`.
pub fn machine() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(3)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * TICK_MS)
}

/// Every process now.
pub fn snapshot() -> HashMap<u32, Proc> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The name is in parentheses and may hold anything: the fields
        // counted from after the last ')' (state, ppid, ..., utime, stime,
        // ..., starttime: fields 3, 4, 14, 15 and 22 of proc(5)).
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        out.insert(
            pid,
            Proc {
                ppid: num(1) as u32,
                comm: stat[open + 1..close].to_string(),
                cmdline,
                ticks: num(11) + num(12),
                started: num(19),
            },
        );
    }
    out
}

/// The CPU each part used between two snapshots, `part` naming each
/// process's (a process started meanwhile counts from zero; one that
/// ended meanwhile is lost, which the runs here do not have).
pub fn split(
    before: &HashMap<u32, Proc>,
    after: &HashMap<u32, Proc>,
    part: &dyn Fn(u32, &Proc) -> &'static str,
) -> HashMap<&'static str, Duration> {
    let mut out = HashMap::new();
    for (pid, p, used) in used(before, after) {
        *out.entry(part(pid, p)).or_default() += used;
    }
    out
}

/// The CPU of the processes of one part between two snapshots, by name,
/// the largest first.
pub fn by_name(
    before: &HashMap<u32, Proc>,
    after: &HashMap<u32, Proc>,
    part: &dyn Fn(u32, &Proc) -> &'static str,
    which: &str,
) -> Vec<(String, Duration)> {
    let mut names: HashMap<String, Duration> = HashMap::new();
    for (pid, p, used) in used(before, after) {
        if part(pid, p) == which {
            // Kernel threads carry their CPU or queue in the name.
            let name = p.comm.split(['/', ':']).next().unwrap_or_default();
            *names.entry(name.to_string()).or_default() += used;
        }
    }
    let mut names: Vec<_> = names.into_iter().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.1));
    names
}

fn used<'a>(
    before: &'a HashMap<u32, Proc>,
    after: &'a HashMap<u32, Proc>,
) -> impl Iterator<Item = (u32, &'a Proc, Duration)> + 'a {
    after.iter().map(|(pid, p)| {
        let was = before
            .get(pid)
            .filter(|b| b.started == p.started)
            .map_or(0, |b| b.ticks);
        (
            *pid,
            p,
            Duration::from_millis(p.ticks.saturating_sub(was) * TICK_MS),
        )
    })
}
