//! The quality and ML checks: every image's pixels are measured (blank,
//! blur, exposure) and run through the policy's TorchScript models, all of
//! which must pass.
//!
//! Work is split the way the hardware wants it. The CPU side
//! ([`Checker::inputs`], on the pipeline's blocking threads) resizes and
//! normalises the decoded pixels once per model input size. The device side
//! is one thread per model (and one for the quality measurements): each
//! gathers the requests that are waiting (from every chunk the worker is
//! processing) into a batch of up to [`Options::batch_size`], runs it on the
//! GPU when `tch::Cuda::is_available()` (otherwise on the CPU) and answers
//! each request. Models run concurrently, so an image's checks take about as
//! long as its slowest model.

mod engine;
mod input;
mod quality;

use engine::Engine;
use picsift_core::orientation::Oriented;
use picsift_core::policy::{ModelSpec, Output, Policy, QualityPolicy};
use picsift_core::setting::{Setting, Spelling};
use picsift_core::verdict::{Checks, Reason, Rejection};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use input::{Inputs, model_input, reduced};

/// A model or policy that cannot be used: found when the worker starts (or
/// first sees the policy), never reported as a per-image failure.
#[derive(Debug, thiserror::Error)]
#[error("model {model:?}: {message}")]
pub struct ConfigError {
    /// The model's name (empty for policy-wide problems).
    pub model: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn new(model: &str, message: impl Into<String>) -> Self {
        Self {
            model: model.to_owned(),
            message: message.into(),
        }
    }
}

/// Where inference runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The first CUDA GPU when there is one, else the CPU.
    #[default]
    Auto,
    /// The CPU, even with a GPU present.
    Cpu,
    /// The first CUDA GPU; an error at start without one.
    Cuda,
}

impl DeviceChoice {
    /// `PICSIFT_ML_DEVICE` when set (as `picsift serve` reads it), else auto.
    pub fn from_env() -> Result<Self, String> {
        std::env::var("PICSIFT_ML_DEVICE").map_or(Ok(Self::Auto), |v| v.parse())
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            _ => Err(format!("unknown ML device {s:?}: use auto, cpu or cuda")),
        }
    }
}

/// How inference is run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where.
    pub device: DeviceChoice,
    /// Most images per forward pass.
    pub batch_size: usize,
    /// How long a partial batch waits for more images before it runs.
    pub max_wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            device: DeviceChoice::Auto,
            batch_size: 32,
            max_wait: Duration::from_millis(5),
        }
    }
}

/// The models loaded in this process and the threads that run them; one
/// per worker process, shared by every chunk it processes.
pub struct Runtime {
    options: Options,
    device: tch::Device,
    quality: Mutex<Option<Arc<Engine>>>,
    models: Mutex<HashMap<String, Arc<Engine>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("device", &self.device_name())
            .field("batch_size", &self.options.batch_size)
            .field("models", &self.models.lock().unwrap().len())
            .finish()
    }
}

/// Loads libtorch's CUDA half (`libtorch_cuda.so`) when the libtorch we
/// run with has one. tch references none of its symbols, so the linker's
/// `--as-needed` leaves it out of the binary's dependencies, and without
/// it loaded `tch::Cuda::is_available()` is false even on a GPU machine.
/// Loading it registers CUDA with libtorch, as importing torch does in
/// Python. A CPU-only libtorch has no such library: nothing happens.
fn load_cuda_half() {
    static LOADED: std::sync::Once = std::sync::Once::new();
    LOADED.call_once(|| {
        // SAFETY: dlopen with a constant, NUL-terminated name; the handle
        // is kept for the life of the process (never dlclose'd).
        let handle = unsafe {
            libc::dlopen(
                c"libtorch_cuda.so".as_ptr(),
                libc::RTLD_NOW | libc::RTLD_GLOBAL,
            )
        };
        if handle.is_null() {
            tracing::debug!("no libtorch_cuda.so on the library path: CPU only");
        }
    });
}

impl Runtime {
    /// A runtime on the chosen device; nothing is loaded yet.
    pub fn new(options: Options) -> Result<Self, ConfigError> {
        if options.device != DeviceChoice::Cpu {
            load_cuda_half();
        }
        let device = match options.device {
            DeviceChoice::Auto => tch::Device::cuda_if_available(),
            DeviceChoice::Cpu => tch::Device::Cpu,
            DeviceChoice::Cuda if tch::Cuda::is_available() => tch::Device::Cuda(0),
            DeviceChoice::Cuda => {
                return Err(ConfigError::new(
                    "",
                    "ML device cuda was asked for, but no CUDA GPU is available",
                ));
            }
        };
        if options.batch_size == 0 {
            return Err(ConfigError::new("", "the ML batch size must be at least 1"));
        }
        if device == tch::Device::Cpu {
            // One core per model thread: the process already decodes on
            // every core, and libtorch's OpenMP helpers spin between
            // batches (perf of `picsift serve`: a tenth of the machine's
            // CPU in libgomp on the quality thread, docs/benchmarks.md).
            tch::set_num_threads(1);
        }
        Ok(Self {
            options,
            device,
            quality: Mutex::new(None),
            models: Mutex::new(HashMap::new()),
        })
    }

    /// The largest batch a model runs at once.
    pub fn batch_size(&self) -> usize {
        self.options.batch_size
    }

    /// `cuda:0` or `cpu`.
    pub fn device_name(&self) -> String {
        match self.device {
            tch::Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".into(),
        }
    }

    /// Whether `spec` is loaded already.
    pub fn is_loaded(&self, spec: &ModelSpec) -> bool {
        self.models.lock().unwrap().contains_key(&key(spec))
    }

    /// Loads a model from its TorchScript bytes and checks it against what
    /// the spec declares: a dummy batch must give `[batch, labels]` finite
    /// scores. Loading the same spec again does nothing.
    pub fn load(&self, spec: &ModelSpec, bytes: Vec<u8>) -> Result<(), ConfigError> {
        validate_spec(spec)?;
        let key = key(spec);
        if self.models.lock().unwrap().contains_key(&key) {
            return Ok(());
        }
        let engine = Engine::model(spec.clone(), bytes, self.device, &self.options)
            .map_err(|m| ConfigError::new(&spec.name, m))?;
        self.models
            .lock()
            .unwrap()
            .entry(key)
            .or_insert_with(|| Arc::new(engine));
        tracing::info!(model = %spec.name, device = %self.device_name(), "model loaded");
        Ok(())
    }

    /// The checks of `policy`. Its models must have been [loaded](Self::load).
    pub fn checker(&self, policy: &Policy) -> Result<Checker, ConfigError> {
        let mut names = HashSet::new();
        let mut models = Vec::new();
        for spec in &policy.models {
            if !names.insert(spec.name.as_str()) {
                return Err(ConfigError::new(
                    &spec.name,
                    "two models of the policy have this name",
                ));
            }
            let engine = self
                .models
                .lock()
                .unwrap()
                .get(&key(spec))
                .cloned()
                .ok_or_else(|| ConfigError::new(&spec.name, "not loaded"))?;
            models.push((Arc::new(spec.clone()), engine));
        }
        let quality = if policy.quality.any() {
            let mut slot = self.quality.lock().unwrap();
            if slot.is_none() {
                let engine = Engine::quality(self.device, &self.options)
                    .map_err(|m| ConfigError::new("", m))?;
                *slot = Some(Arc::new(engine));
            }
            slot.clone()
        } else {
            None
        };
        Ok(Checker {
            quality_policy: policy.quality.clone(),
            spelling: policy.spelling,
            quality,
            models,
        })
    }
}

/// Limits libtorch's CPU threads for this process (benchmarks measure per core).
pub fn set_cpu_threads(n: i32) {
    tch::set_num_threads(n);
}

/// Reads a model's TorchScript file when its source is a path. `blob:`
/// sources are the caller's to fetch (they need the blob store).
pub fn read_model_file(spec: &ModelSpec) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(&spec.source).map_err(|e| {
        ConfigError::new(
            &spec.name,
            format!("cannot read the model file {}: {e}", spec.source),
        )
    })
}

/// The cache key of a spec: everything about it.
fn key(spec: &ModelSpec) -> String {
    serde_json::to_string(spec).expect("a spec serialises")
}

fn validate_spec(spec: &ModelSpec) -> Result<(), ConfigError> {
    let bad = |m: String| Err(ConfigError::new(&spec.name, m));
    if spec.name.is_empty() {
        return bad("a model needs a name".into());
    }
    if !(1..=4096).contains(&spec.width) || !(1..=4096).contains(&spec.height) {
        return bad(format!(
            "input size {}×{} is out of range (1–4096)",
            spec.width, spec.height
        ));
    }
    if spec.std.iter().any(|s| *s == 0.0 || !s.is_finite())
        || spec.mean.iter().any(|m| !m.is_finite())
    {
        return bad("mean must be finite and std finite and non-zero".into());
    }
    if spec.labels.is_empty() {
        return bad("a model needs at least one label".into());
    }
    let labels: HashSet<&str> = spec.labels.iter().map(String::as_str).collect();
    if labels.len() != spec.labels.len() {
        return bad("labels must be distinct".into());
    }
    if spec.output == Output::Softmax && spec.labels.len() < 2 {
        return bad("softmax output needs at least two labels".into());
    }
    if spec.fixed_batch == Some(0) {
        return bad("fixedBatch must be at least 1".into());
    }
    for rule in &spec.reject {
        if !labels.contains(rule.label.as_str()) {
            return bad(format!(
                "reject rule names label {:?}, which is not one of the model's labels ({})",
                rule.label,
                spec.labels.join(", ")
            ));
        }
        if !(0.0..=1.0).contains(&rule.at_least) {
            return bad(format!(
                "reject threshold {} for {:?} is not between 0 and 1",
                rule.at_least, rule.label
            ));
        }
    }
    Ok(())
}

/// A policy's checks, ready to run. Cheap to clone.
#[derive(Clone)]
pub struct Checker {
    quality_policy: QualityPolicy,
    spelling: Spelling,
    quality: Option<Arc<Engine>>,
    models: Vec<(Arc<ModelSpec>, Arc<Engine>)>,
}

impl Checker {
    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.quality.is_none() && self.models.is_empty()
    }

    /// Whether the policy has models (not just quality checks).
    pub fn has_models(&self) -> bool {
        !self.models.is_empty()
    }

    /// The CPU side: each model's input (and the quality thumbnail) from
    /// the decoded pixels, turned upright by their orientation.
    pub fn inputs(&self, pixels: &Oriented) -> Inputs {
        self.inputs_of(&pixels.stored, pixels.orientation)
    }

    /// The longest side of any input the checks take (the quality
    /// thumbnail, each model's): pixels shrunk by [`reduced`] to it give
    /// the same inputs as the whole picture.
    pub fn largest_input(&self) -> u32 {
        let specs: Vec<&ModelSpec> = self.models.iter().map(|(s, _)| s.as_ref()).collect();
        input::largest_side(&specs, self.quality.is_some())
    }

    fn inputs_of(&self, rgb: &image::RgbImage, orientation: u16) -> Inputs {
        let specs: Vec<&ModelSpec> = self.models.iter().map(|(s, _)| s.as_ref()).collect();
        Inputs::new(rgb, orientation, &specs, self.quality.is_some())
    }

    /// Queues the inputs on every model's thread; the answer comes through
    /// [`Pending::wait`].
    pub fn submit(&self, inputs: Inputs) -> Pending {
        let Inputs { quality, models } = inputs;
        let quality = match (&self.quality, quality) {
            (Some(engine), Some(gray)) => Some(engine.submit(gray)),
            _ => None,
        };
        let models = self
            .models
            .iter()
            .zip(models)
            .map(|((spec, engine), input)| (spec.clone(), engine.submit(input)))
            .collect();
        Pending {
            quality_policy: self.quality_policy.clone(),
            spelling: self.spelling,
            quality,
            models,
        }
    }

    /// [`Self::inputs`], [`Self::submit`] and [`Pending::wait_blocking`]
    /// in one: for tests, benchmarks and one-off checks.
    /// `rgb` is upright.
    pub fn check_blocking(&self, rgb: &image::RgbImage) -> Result<Outcome, String> {
        self.submit(self.inputs_of(rgb, 1)).wait_blocking()
    }
}

type Reply = tokio::sync::oneshot::Receiver<Result<Vec<f32>, String>>;

/// Checks under way for one image.
pub struct Pending {
    quality_policy: QualityPolicy,
    spelling: Spelling,
    quality: Option<Reply>,
    models: Vec<(Arc<ModelSpec>, Reply)>,
}

/// What the checks found for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Every measurement and score.
    pub checks: Checks,
    /// The first failed check, if any (quality first, then models in policy order).
    pub rejection: Option<Rejection>,
}

impl Pending {
    /// Waits for every model's answer. An `Err` is a failure of the run
    /// itself (the device, a model's thread), not of the image.
    pub async fn wait(self) -> Result<Outcome, String> {
        let quality = match self.quality {
            Some(reply) => Some(reply.await.map_err(|_| "the quality thread stopped")??),
            None => None,
        };
        let mut scores = Vec::new();
        for (spec, reply) in self.models {
            let got = reply
                .await
                .map_err(|_| format!("model {}'s thread stopped", spec.name))??;
            scores.push((spec, got));
        }
        Ok(judge(&self.quality_policy, self.spelling, quality, scores))
    }

    /// [`Self::wait`] from a thread outside the async runtime.
    pub fn wait_blocking(self) -> Result<Outcome, String> {
        let quality = match self.quality {
            Some(reply) => Some(
                reply
                    .blocking_recv()
                    .map_err(|_| "the quality thread stopped")??,
            ),
            None => None,
        };
        let mut scores = Vec::new();
        for (spec, reply) in self.models {
            let got = reply
                .blocking_recv()
                .map_err(|_| format!("model {}'s thread stopped", spec.name))??;
            scores.push((spec, got));
        }
        Ok(judge(&self.quality_policy, self.spelling, quality, scores))
    }
}

/// Scores and measurements keep six decimals: more than f32 carries
/// meaningfully, and the same JSON whichever way a verdict is read back.
fn round(v: f32) -> f64 {
    (f64::from(v) * 1e6).round() / 1e6
}

fn judge(
    policy: &QualityPolicy,
    spelling: Spelling,
    quality: Option<Vec<f32>>,
    models: Vec<(Arc<ModelSpec>, Vec<f32>)>,
) -> Outcome {
    let quality = quality.map(|q| quality::Measured::from_vec(&q).0);
    let mut rejection = quality.and_then(|q| quality::judge(policy, spelling, &q));
    let mut scores = BTreeMap::new();
    for (spec, values) in models {
        let labelled: BTreeMap<String, f64> = spec
            .labels
            .iter()
            .cloned()
            .zip(values.into_iter().map(round))
            .collect();
        if rejection.is_none() {
            rejection = spec.reject.iter().find_map(|rule| {
                let score = labelled.get(&rule.label).copied()?;
                (score >= f64::from(rule.at_least)).then(|| {
                    Rejection::new(
                        Reason::ModelRejected,
                        format!(
                            "model {} scored label {} at {score:.3}, at or above the policy's threshold {} ({})",
                            spec.name,
                            rule.label,
                            rule.at_least,
                            spelling
                                .name(Setting::ModelReject)
                                .replace("[]", &format!("[{}]", spec.name))
                        ),
                    )
                })
            });
        }
        scores.insert(spec.name.clone(), labelled);
    }
    Outcome {
        checks: Checks { quality, scores },
        rejection,
    }
}
