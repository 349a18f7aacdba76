//! The WorkerPool autoscaler over a month: a synthetic trace of uploads
//! (1M a month, a daily and a weekly cycle, bursts of 10x) replayed through
//! the real [`autoscale::decide`], every 10 s as the operator runs it, with
//! a model of the workers: a Job runs after a start-up delay (node and pod
//! start, image pull, model load), works through chunk tasks first come
//! first served at a measured images/s, and exits after the pool's idle
//! timeout. For each `targetBacklogPerWorker` / `idleTimeoutSeconds` setting
//! it prints the time from upload to completion (p50, p99, max), deadline
//! misses (7 days) and worker-hours against the lower bound (the month's
//! work at full speed), and writes an SVG of backlog, workers and latency
//! over the month for one setting.
//!
//! `cargo bench -p picsift-operator --bench autoscale_sim --profile dev`
//! (a pure simulation: the dev profile is fast enough and reuses the test
//! build). Settings: `PICSIFT_SIM_IMAGES_PER_S` (one worker, default 21:
//! a 4-core worker at the measured 5.35 images/s per core end to end),
//! `PICSIFT_SIM_STARTUP_S` (default 120), `PICSIFT_SIM_MAX_WORKERS`
//! (default 20), `PICSIFT_SIM_SVG` (where the plot goes, default
//! `target/autoscale_sim.svg`), `PICSIFT_SIM_SEED`.

use picsift_crds::WorkerPoolSpec;
use picsift_operator::autoscale::{JobState, WorkerJob, decide};
use std::collections::VecDeque;
use std::fmt::Write as _;

const DAY: f64 = 86_400.0;
const MONTH: f64 = 30.0 * DAY;
const UPLOADS: f64 = 1_000_000.0;
/// Seconds per simulation step.
const STEP: f64 = 5.0;
/// The operator's reconcile interval (`operator::pool::INTERVAL`).
const TICK: f64 = 10.0;
/// Entries per chunk task (the default chunk limit; 25 images of ~4 MB
/// stay under its 64 MiB).
const CHUNK_ENTRIES: u32 = 16;
const DEADLINE: f64 = 7.0 * DAY;

/// SplitMix64, for a trace that replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A Poisson draw (Knuth's method; means here are small).
    fn poisson(&mut self, mean: f64) -> u32 {
        let (limit, mut p, mut k) = ((-mean).exp(), 1.0, 0);
        loop {
            p *= self.next();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }
}

/// The month's load shape at time `t`, before scaling to 1M uploads: a
/// daily cycle peaking mid-afternoon (x0.4 at night, x1.6 at the peak),
/// weekends at 60%, and 10x bursts of an hour.
fn shape(t: f64, bursts: &[f64]) -> f64 {
    let day = t / DAY;
    let daily = 1.0 + 0.6 * (std::f64::consts::TAU * (day.fract() - 0.375)).sin();
    let weekly = if (day as u64) % 7 >= 5 { 0.6 } else { 1.0 };
    let burst = if bursts.iter().any(|b| t >= *b && t < b + 3600.0) {
        10.0
    } else {
        1.0
    };
    daily * weekly * burst
}

/// One upload: when it arrived and its chunks still to finish.
struct Upload {
    at: f64,
    left: u32,
}

/// One chunk task in the queue.
struct Task {
    upload: usize,
    images: u32,
}

/// A worker Job in the model.
struct Worker {
    slot: u32,
    /// Running from then on (pending before).
    runs_at: f64,
    /// The task in hand and the images of it still to do.
    task: Option<(Task, f64)>,
    idle_since: f64,
    ended: Option<f64>,
}

struct Outcome {
    latencies: Vec<f64>,
    misses: usize,
    worker_hours: f64,
    busy_hours: f64,
    max_workers: usize,
    /// Per hour: backlog (chunks, max), workers (max), latency of the
    /// uploads finished in it (max, s).
    hourly: Vec<(u64, usize, f64)>,
}

struct Model {
    images_per_s: f64,
    startup_s: f64,
}

fn simulate(spec: &WorkerPoolSpec, model: &Model, seed: u64) -> Outcome {
    let mut rng = Rng(seed);
    let bursts: Vec<f64> = (0..6).map(|_| rng.next() * (MONTH - 3600.0)).collect();
    // Scale the shape so the month holds 1M uploads on average.
    let steps = (MONTH / STEP) as usize;
    let total_shape: f64 = (0..steps).map(|i| shape(i as f64 * STEP, &bursts)).sum();
    let per_shape = UPLOADS / total_shape;

    let mut uploads: Vec<Upload> = Vec::new();
    let mut queue: VecDeque<Task> = VecDeque::new();
    let mut workers: Vec<Worker> = Vec::new();
    let mut latencies = Vec::new();
    let mut hourly = Vec::new();
    let (mut hour_backlog, mut hour_workers, mut hour_latency) = (0u64, 0usize, 0f64);
    let mut next_tick = 0.0;
    let (mut busy_s, mut worker_s) = (0.0, 0.0);
    let mut max_workers = 0;
    let mut step = 0usize;
    loop {
        let t = step as f64 * STEP;
        let arriving = t < MONTH;
        if !arriving && queue.is_empty() && workers.iter().all(|w| w.task.is_none()) {
            break;
        }
        // Arrivals: 1 to 49 images each (25 on average).
        if arriving {
            for _ in 0..rng.poisson(per_shape * shape(t, &bursts)) {
                let images = 1 + (rng.next() * 49.0) as u32;
                let chunks = images.div_ceil(CHUNK_ENTRIES);
                let id = uploads.len();
                uploads.push(Upload {
                    at: t,
                    left: chunks,
                });
                for c in 0..chunks {
                    let n = (images - c * CHUNK_ENTRIES).min(CHUNK_ENTRIES);
                    queue.push_back(Task {
                        upload: id,
                        images: n,
                    });
                }
            }
        }
        // The operator, every TICK: the real decision on the model's Jobs.
        if t >= next_tick {
            next_tick += TICK;
            let in_hand = workers.iter().filter(|w| w.task.is_some()).count();
            let backlog = (queue.len() + in_hand) as u64;
            let jobs: Vec<WorkerJob> = workers
                .iter()
                .map(|w| WorkerJob {
                    slot: w.slot,
                    state: match (w.ended, t >= w.runs_at) {
                        (Some(_), _) => JobState::Succeeded,
                        (None, true) => JobState::Running,
                        (None, false) => JobState::Pending,
                    },
                    current: true,
                    ended_at: None,
                })
                .collect();
            let scale = decide(spec, backlog, &jobs, false);
            workers.retain(|w| !scale.delete.contains(&w.slot));
            for slot in scale.create {
                workers.push(Worker {
                    slot,
                    runs_at: t + model.startup_s,
                    task: None,
                    idle_since: t + model.startup_s,
                    ended: None,
                });
            }
        }
        // Workers work for one step.
        for w in workers
            .iter_mut()
            .filter(|w| w.ended.is_none() && t >= w.runs_at)
        {
            let mut budget = model.images_per_s * STEP;
            while budget > 0.0 {
                if w.task.is_none() {
                    match queue.pop_front() {
                        Some(task) => {
                            let n = f64::from(task.images);
                            w.task = Some((task, n));
                        }
                        None => break,
                    }
                }
                let (task, left) = w.task.as_mut().unwrap();
                let done = left.min(budget);
                *left -= done;
                budget -= done;
                busy_s += done / model.images_per_s;
                if *left <= 0.0 {
                    let u = &mut uploads[task.upload];
                    u.left -= 1;
                    if u.left == 0 {
                        let latency = t + STEP - budget / model.images_per_s - u.at;
                        latencies.push(latency);
                        hour_latency = hour_latency.max(latency);
                    }
                    w.task = None;
                    w.idle_since = t + STEP - budget / model.images_per_s;
                }
            }
            if w.task.is_none() && t + STEP - w.idle_since >= spec.idle_timeout_seconds as f64 {
                w.ended = Some(t + STEP);
            }
        }
        // Billed from the Job's creation (its node and start-up included)
        // to its end.
        let alive = workers.iter().filter(|w| w.ended.is_none()).count();
        worker_s += alive as f64 * STEP;
        max_workers = max_workers.max(alive);
        hour_workers = hour_workers.max(alive);
        hour_backlog = hour_backlog.max(queue.len() as u64);
        step += 1;
        if step.is_multiple_of((3600.0 / STEP) as usize) {
            hourly.push((hour_backlog, hour_workers, hour_latency));
            (hour_backlog, hour_workers, hour_latency) = (0, 0, 0.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let misses = latencies.iter().filter(|l| **l > DEADLINE).count();
    Outcome {
        latencies,
        misses,
        worker_hours: worker_s / 3600.0,
        busy_hours: busy_s / 3600.0,
        max_workers,
        hourly,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn hours(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Backlog, workers and the slowest upload finished, per hour of the month,
/// as three stacked line plots.
fn svg(title: &str, hourly: &[(u64, usize, f64)]) -> String {
    let (w, h, pad) = (1200.0, 160.0, 40.0);
    let mut out = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{}' font-family='sans-serif' font-size='12'>\n\
         <rect width='100%' height='100%' fill='white'/>\n<text x='{pad}' y='20'>{title}</text>\n",
        3.0 * (h + pad) + pad
    );
    let series: [(&str, Vec<f64>); 3] = [
        (
            "backlog (chunk tasks, hourly max)",
            hourly.iter().map(|r| r.0 as f64).collect(),
        ),
        (
            "workers (hourly max)",
            hourly.iter().map(|r| r.1 as f64).collect(),
        ),
        (
            "slowest upload finished in the hour (minutes)",
            hourly.iter().map(|r| r.2 / 60.0).collect(),
        ),
    ];
    for (i, (name, ys)) in series.iter().enumerate() {
        let top = pad + i as f64 * (h + pad);
        let max = ys.iter().copied().fold(1e-9, f64::max);
        let points: Vec<String> = ys
            .iter()
            .enumerate()
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    pad + x as f64 / ys.len().max(1) as f64 * (w - 2.0 * pad),
                    top + h - y / max * h
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "<text x='{pad}' y='{:.0}'>{name}: max {max:.1}</text>\n\
             <rect x='{pad}' y='{top}' width='{}' height='{h}' fill='none' stroke='#ccc'/>\n\
             <polyline fill='none' stroke='#1f77b4' points='{}'/>",
            top - 4.0,
            w - 2.0 * pad,
            points.join(" ")
        );
        for day in (0..=30).step_by(7) {
            let x = pad + f64::from(day) / 30.0 * (w - 2.0 * pad);
            let _ = writeln!(
                out,
                "<text x='{x:.0}' y='{:.0}' fill='#666'>day {day}</text>",
                top + h + 14.0
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

fn spec(target: i32, idle: i64, max: i32) -> WorkerPoolSpec {
    serde_json::from_value(serde_json::json!({
        "minWorkers": 0, "maxWorkers": max, "targetBacklogPerWorker": target,
        "idleTimeoutSeconds": idle, "image": "picsift"
    }))
    .expect("a valid WorkerPool spec")
}

fn main() {
    let model = Model {
        images_per_s: picsift_tests::env_or("PICSIFT_SIM_IMAGES_PER_S", 21.0),
        startup_s: picsift_tests::env_or("PICSIFT_SIM_STARTUP_S", 120.0),
    };
    let max = picsift_tests::env_or("PICSIFT_SIM_MAX_WORKERS", 20.0) as i32;
    let seed = picsift_tests::env_or("PICSIFT_SIM_SEED", 1.0) as u64;
    let svg_path = std::env::var("PICSIFT_SIM_SVG").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/autoscale_sim.svg").into()
    });
    println!(
        "autoscale_sim: 1M uploads in 30 days (25 images each on average), one worker {} images/s, \
         start-up {} s, maxWorkers {max}, seed {seed}\n",
        model.images_per_s, model.startup_s
    );
    println!(
        "| targetBacklogPerWorker | idleTimeoutSeconds | p50 | p99 | max | deadline misses | worker-hours | lower bound | ratio | most workers |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for target in [1, 4, 16, 64, 256] {
        for idle in [30, 60, 300, 900] {
            let o = simulate(&spec(target, idle, max), &model, seed);
            println!(
                "| {target} | {idle} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {} |",
                hours(percentile(&o.latencies, 0.5)),
                hours(percentile(&o.latencies, 0.99)),
                hours(*o.latencies.last().unwrap()),
                o.misses,
                o.worker_hours,
                o.busy_hours,
                o.worker_hours / o.busy_hours,
                o.max_workers
            );
            if target == 4 && idle == 300 {
                let title = format!(
                    "targetBacklogPerWorker 4, idleTimeoutSeconds 300, maxWorkers {max}: one month, 1M uploads"
                );
                if let Err(e) = std::fs::write(&svg_path, svg(&title, &o.hourly)) {
                    eprintln!("cannot write {svg_path}: {e}");
                }
            }
            assert_eq!(o.misses, 0, "an upload missed its 7-day deadline");
        }
    }
    println!("\nplot (targetBacklogPerWorker 4, idleTimeoutSeconds 300): {svg_path}");
}
