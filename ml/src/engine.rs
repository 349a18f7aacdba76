//! One thread per model: it gathers waiting requests into batches and runs
//! them on the device.

use crate::Options;
use picsift_core::policy::{ModelSpec, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};
use tokio::sync::oneshot;

struct Job {
    input: Vec<f32>,
    reply: oneshot::Sender<Result<Vec<f32>, String>>,
}

/// Runs a batch: `n` inputs laid end to end, `n × outputs` values back.
trait Runner {
    fn run(&mut self, flat: &[f32], n: usize) -> Result<Vec<f32>, String>;
    fn outputs(&self) -> usize;
}

/// The handle of a model's (or the quality measurements') thread.
pub(crate) struct Engine {
    tx: mpsc::Sender<Job>,
}

impl Engine {
    /// Loads and checks the model on its own thread; `Err` when it does not
    /// load or does not give what the spec declares.
    pub(crate) fn model(
        spec: ModelSpec,
        bytes: Vec<u8>,
        device: Device,
        options: &Options,
    ) -> Result<Self, String> {
        Self::spawn(&format!("model-{}", spec.name), options, move || {
            ModelRunner::load(spec, bytes, device)
        })
    }

    /// The quality measurements' thread.
    pub(crate) fn quality(device: Device, options: &Options) -> Result<Self, String> {
        Self::spawn("quality", options, move || {
            Ok(crate::quality::Runner::new(device))
        })
    }

    fn spawn<R: Runner + 'static>(
        name: &str,
        options: &Options,
        make: impl FnOnce() -> Result<R, String> + Send + 'static,
    ) -> Result<Self, String> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (batch, wait) = (options.batch_size, options.max_wait);
        std::thread::Builder::new()
            .name(format!("ml-{name}"))
            .spawn(move || {
                // The module is created and used on this thread only.
                let mut runner = match make() {
                    Ok(r) => {
                        let _ = ready_tx.send(Ok(()));
                        r
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                serve(&mut runner, &rx, batch, wait);
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the model's thread crashed while loading it".to_string())??;
        Ok(Self { tx })
    }

    /// Queues one input; the reply comes when its batch has run.
    pub(crate) fn submit(&self, input: Vec<f32>) -> oneshot::Receiver<Result<Vec<f32>, String>> {
        let (reply, rx) = oneshot::channel();
        // A stopped thread drops the job, and the receiver reports it.
        let _ = self.tx.send(Job { input, reply });
        rx
    }
}

/// The batching loop: block for the first job, then take what else is
/// waiting (up to `batch`), waiting at most `wait` for a partial batch to
/// fill. Ends when every handle is dropped.
fn serve(runner: &mut impl Runner, rx: &mpsc::Receiver<Job>, batch: usize, wait: Duration) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let deadline = Instant::now() + wait;
        while jobs.len() < batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
            }
        }
        let flat: Vec<f32> = jobs.iter().flat_map(|j| j.input.iter().copied()).collect();
        let per = runner.outputs();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runner.run(&flat, jobs.len())
        })) {
            Ok(Ok(out)) => {
                for (job, scores) in jobs.into_iter().zip(out.chunks(per)) {
                    let _ = job.reply.send(Ok(scores.to_vec()));
                }
            }
            Ok(Err(e)) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
            Err(_) => {
                for job in jobs {
                    let _ = job.reply.send(Err("inference panicked".into()));
                }
            }
        }
    }
}

struct ModelRunner {
    spec: ModelSpec,
    module: tch::CModule,
    device: Device,
}

impl ModelRunner {
    fn load(spec: ModelSpec, bytes: Vec<u8>, device: Device) -> Result<Self, String> {
        let mut module =
            tch::CModule::load_data_on_device(&mut std::io::Cursor::new(bytes), device)
                .map_err(|e| format!("not a TorchScript module that loads: {}", first_line(&e)))?;
        module.set_eval();
        let mut runner = Self {
            spec,
            module,
            device,
        };
        // A dummy batch checks the declared input and output. Two images
        // (unless the trace fixed the batch) also catch a model that only
        // runs at batch size 1.
        let n = runner.spec.fixed_batch.unwrap_or(2);
        let zeros = vec![0f32; n * runner.input_len()];
        let out = runner.run(&zeros, n)?;
        if let Some(bad) = out.iter().find(|v| !v.is_finite()) {
            return Err(format!(
                "a blank test input gives a non-finite score ({bad})"
            ));
        }
        if runner.spec.output == Output::Probabilities
            && let Some(bad) = out.iter().find(|v| !(0.0..=1.0).contains(*v))
        {
            return Err(format!(
                "declared output probabilities, but a blank test input scores {bad}, outside 0–1"
            ));
        }
        Ok(runner)
    }

    fn input_len(&self) -> usize {
        3 * self.spec.width as usize * self.spec.height as usize
    }

    fn forward(&self, flat: &[f32], n: usize) -> Result<Vec<f32>, String> {
        let (w, h) = (i64::from(self.spec.width), i64::from(self.spec.height));
        let labels = self.spec.labels.len();
        let x = Tensor::from_slice(flat)
            .view([n as i64, 3, h, w])
            .to_device(self.device);
        let y = tch::no_grad(|| self.module.forward_ts(&[x]))
            .map_err(|e| format!("forward pass failed: {}", first_line(&e)))?;
        if y.size() != [n as i64, labels as i64] {
            return Err(format!(
                "output has shape {:?}; the spec declares [{n}, {labels}] for labels {}",
                y.size(),
                self.spec.labels.join(", ")
            ));
        }
        let y = y.to_kind(Kind::Float);
        let scores = match self.spec.output {
            Output::Sigmoid => y.sigmoid(),
            Output::Softmax => y.softmax(-1, Kind::Float),
            Output::Probabilities => y,
        };
        Vec::<f32>::try_from(scores.to_device(Device::Cpu).flatten(0, -1))
            .map_err(|e| format!("reading the scores failed: {e}"))
    }
}

impl Runner for ModelRunner {
    fn run(&mut self, flat: &[f32], n: usize) -> Result<Vec<f32>, String> {
        let Some(fixed) = self.spec.fixed_batch else {
            return self.forward(flat, n);
        };
        // A traced batch size: run in pieces of exactly that many, the
        // last one padded with zeros.
        let len = self.input_len();
        let labels = self.spec.labels.len();
        let mut out = Vec::with_capacity(n * labels);
        for piece in flat.chunks(fixed * len) {
            let real = piece.len() / len;
            let mut padded = piece.to_vec();
            padded.resize(fixed * len, 0.0);
            let got = self.forward(&padded, fixed)?;
            out.extend_from_slice(&got[..real * labels]);
        }
        Ok(out)
    }

    fn outputs(&self) -> usize {
        self.spec.labels.len()
    }
}

impl Runner for crate::quality::Runner {
    fn run(&mut self, flat: &[f32], n: usize) -> Result<Vec<f32>, String> {
        self.measure(flat, n)
    }

    fn outputs(&self) -> usize {
        crate::quality::OUTPUTS
    }
}

/// libtorch errors carry a C++ backtrace; the first line says what happened.
fn first_line(e: &tch::TchError) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}
