//! Decoding in a child process, so that a decoder that aborts, runs out of
//! memory or hangs costs one entry, never the process that runs it. The
//! standalone server (`picsift serve`) holds the API, the catalog and the
//! queue in one process: a libjpeg-turbo or libheif abort there would take
//! them all down. So each of its decoding threads keeps one child (the same
//! binary, started with [`CHILD_ENV`] set) and hands it one entry at a time
//! over pipes; a child that dies on an entry makes that entry
//! `decoder_crash`, one that takes longer than the wall-clock limit is
//! killed and the entry is `decode_timeout`, and the next entry gets a
//! fresh child. (The cluster's workers are processes of their own: a crash
//! there is counted across deliveries, see `entries.rs`.)
//!
//! The child runs the whole pure pipeline ([`pipeline::prepare_with_pixels`])
//! and sends back the prepared image and, when the checks need pixels, the
//! decoded picture already shrunk the way the ML inputs shrink it
//! ([`picsift_ml::reduced`]), so a 12 MP photo crosses the pipe as its
//! stored bytes and a picture of a few hundred pixels a side.

use picsift_core::format::Format;
use picsift_core::orientation::Oriented;
use picsift_core::pdq::{Hash, Pdq};
use picsift_core::pipeline::{self, Prepared};
use picsift_core::policy::Policy;
use picsift_core::verdict::{Reason, Rejection};
use serde::{Deserialize, Serialize};
use std::io::{BufReader, BufWriter, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Set in a child's environment: the binary then serves decodes on its
/// standard input and output ([`child_main`]) instead of its usual job.
pub const CHILD_ENV: &str = "PICSIFT_DECODER_CHILD";

/// How long one entry may take in the child before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// One request: the policy, how far to shrink the pixels (0: none needed)
/// and the entry's bytes follow as a length-prefixed section.
#[derive(Serialize, Deserialize)]
struct Request {
    policy: Policy,
    reduce_to: u32,
}

/// One answer; the stored bytes and the pixels follow as sections.
#[derive(Serialize, Deserialize)]
enum Answer {
    Prepared {
        id: String,
        source_sha256: String,
        format: Format,
        width: u32,
        height: u32,
        orientation: Option<u16>,
        pdq: Option<(String, u8)>,
        removed: Option<String>,
        /// Width, height and orientation of the pixels section, if any.
        pixels: Option<(u32, u32, u16)>,
    },
    Rejected {
        reason: Reason,
        detail: String,
    },
}

/// Writes a length-prefixed section.
fn put(w: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    w.write_all(&(data.len() as u64).to_le_bytes())?;
    w.write_all(data)
}

/// Reads a length-prefixed section of at most `limit` bytes.
fn take(r: &mut impl Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > limit {
        return Err(std::io::Error::other(format!("a section of {len} bytes")));
    }
    // Into the buffer's spare capacity: no zeroing pass over a photo's
    // megabytes before the pipe's bytes overwrite them.
    let mut data = Vec::with_capacity(len as usize);
    r.take(len).read_to_end(&mut data)?;
    if (data.len() as u64) < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(data)
}

/// The child's loop: one request in, one answer out, until its input ends.
pub fn child_main() -> ! {
    // Keep freed memory for the next entry instead of returning it to the
    // kernel: each picture's buffers (tens of MB) would otherwise be fresh
    // pages, faulted in and zeroed again for every entry.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
    let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
    let (mut input, mut output) = (BufReader::new(stdin.lock()), BufWriter::new(stdout.lock()));
    let code = match serve(&mut input, &mut output) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("picsift decoder child: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn serve(input: &mut impl Read, output: &mut impl Write) -> std::io::Result<()> {
    loop {
        let request = match take(input, 1 << 20) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let request: Request = serde_json::from_slice(&request).map_err(std::io::Error::other)?;
        let data = take(input, u64::MAX)?;
        let (answer, bytes, pixels) = match pipeline::prepare_with_pixels(&data, &request.policy) {
            Err(r) => (
                Answer::Rejected {
                    reason: r.reason,
                    detail: r.detail,
                },
                Vec::new(),
                Vec::new(),
            ),
            Ok((p, oriented)) => {
                let pixels = oriented
                    .filter(|_| request.reduce_to > 0)
                    .map(|o| Oriented {
                        stored: picsift_ml::reduced(&o.stored, request.reduce_to),
                        orientation: o.orientation,
                    });
                let answer = Answer::Prepared {
                    id: p.id,
                    source_sha256: p.source_sha256,
                    format: p.format,
                    width: p.width,
                    height: p.height,
                    orientation: p.orientation,
                    pdq: p.pdq.map(|h| (h.hash.to_string(), h.quality)),
                    removed: p.removed,
                    pixels: pixels
                        .as_ref()
                        .map(|o| (o.stored.width(), o.stored.height(), o.orientation)),
                };
                (
                    answer,
                    p.bytes,
                    pixels.map(|o| o.stored.into_raw()).unwrap_or_default(),
                )
            }
        };
        put(
            output,
            &serde_json::to_vec(&answer).map_err(std::io::Error::other)?,
        )?;
        put(output, &bytes)?;
        put(output, &pixels)?;
        output.flush()?;
    }
}

/// What a child answered, or how it failed.
type Reply = std::io::Result<(Answer, Vec<u8>, Vec<u8>)>;

/// A running child: its input, and the answers its reader thread passes on.
struct Running {
    child: Child,
    input: BufWriter<ChildStdin>,
    answers: mpsc::Receiver<Reply>,
}

/// One decoding thread's child, started on first use and again after it
/// died or was killed.
pub struct Decoder {
    command: DecoderCommand,
    timeout: Duration,
    running: Option<Running>,
}

/// How to start a child.
#[derive(Clone, Debug)]
pub struct DecoderCommand {
    /// The program (for `picsift serve`: its own executable).
    pub program: std::path::PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

impl DecoderCommand {
    /// This executable, as a decoder child.
    pub fn this_executable() -> std::io::Result<Self> {
        Ok(Self {
            program: std::env::current_exe()?,
            args: Vec::new(),
        })
    }
}

impl Decoder {
    /// A decoder that starts `command` when it first needs a child.
    pub fn new(command: DecoderCommand, timeout: Duration) -> Self {
        Self {
            command,
            timeout,
            running: None,
        }
    }

    fn start(&self) -> std::io::Result<Running> {
        let mut child = Command::new(&self.command.program)
            .args(&self.command.args)
            .env(CHILD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        widen_pipe(&stdin);
        widen_pipe(&stdout);
        let input = BufWriter::new(stdin);
        let mut output = BufReader::new(stdout);
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            loop {
                let reply = (|| {
                    let answer = take(&mut output, 1 << 20)?;
                    let answer: Answer =
                        serde_json::from_slice(&answer).map_err(std::io::Error::other)?;
                    Ok((
                        answer,
                        take(&mut output, 1 << 36)?,
                        take(&mut output, 1 << 32)?,
                    ))
                })();
                let failed = reply.is_err();
                if tx.send(reply).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Running {
            child,
            input,
            answers,
        })
    }

    /// The pipeline on `data` in the child, with the pixels shrunk for
    /// inputs at most `reduce_to` a side (0: no pixels wanted).
    pub fn prepare(
        &mut self,
        data: &[u8],
        policy: &Policy,
        reduce_to: u32,
    ) -> Result<(Prepared, Option<Oriented>), Rejection> {
        let running = match self.running.take() {
            Some(r) => r,
            None => self
                .start()
                .map_err(|e| internal(format!("cannot start a decoder process: {e}")))?,
        };
        let mut running = running;
        let request = Request {
            policy: policy.clone(),
            reduce_to,
        };
        let sent = serde_json::to_vec(&request)
            .map_err(std::io::Error::other)
            .and_then(|r| put(&mut running.input, &r))
            .and_then(|()| put(&mut running.input, data))
            .and_then(|()| running.input.flush());
        let reply = match sent {
            Ok(()) => running.answers.recv_timeout(self.timeout),
            // The child is gone already: what its reader saw says why.
            Err(_) => running
                .answers
                .recv_timeout(Duration::from_secs(5))
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match reply {
            Ok(Ok((answer, bytes, pixels))) => {
                self.running = Some(running);
                into_result(answer, bytes, pixels)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = running.child.kill();
                let _ = running.child.wait();
                Err(Rejection::new(
                    Reason::DecodeTimeout,
                    format!(
                        "decoding this entry took longer than {} s; it was stopped",
                        self.timeout.as_secs()
                    ),
                ))
            }
            Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = running.child.kill();
                let status = running.child.wait();
                let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                Err(Rejection::new(
                    Reason::DecoderCrash,
                    format!(
                        "the decoder process died on this entry ({how}); the server and the rest of the batch go on"
                    ),
                ))
            }
        }
    }
}

/// Sets a pipe's buffer to 1 MiB (Linux's default limit for anyone), up
/// from 64 KiB: an entry of a few MB then crosses in a few writes instead
/// of dozens of wake-ups, 1.2 against 0.8 GB/s on this machine (a photo
/// crosses twice: its bytes in, the stored bytes back). Where it cannot be
/// set, the pipe stays as it is.
fn widen_pipe(pipe: &impl std::os::fd::AsRawFd) {
    #[cfg(target_os = "linux")]
    // SAFETY: F_SETPIPE_SZ on a pipe this process owns; failure is harmless.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        if let Some(mut r) = self.running.take() {
            // Its input closes: the child's loop ends.
            drop(r.input);
            let _ = r.child.wait();
        }
    }
}

fn internal(detail: String) -> Rejection {
    Rejection::new(Reason::InternalError, detail)
}

fn into_result(
    answer: Answer,
    bytes: Vec<u8>,
    pixels: Vec<u8>,
) -> Result<(Prepared, Option<Oriented>), Rejection> {
    match answer {
        Answer::Rejected { reason, detail } => Err(Rejection::new(reason, detail)),
        Answer::Prepared {
            id,
            source_sha256,
            format,
            width,
            height,
            orientation,
            pdq,
            removed,
            pixels: shape,
        } => {
            let pdq = match pdq {
                None => None,
                Some((hex, quality)) => Some(Pdq {
                    hash: hex
                        .parse::<Hash>()
                        .map_err(|e| internal(format!("the decoder sent a bad hash: {e}")))?,
                    quality,
                }),
            };
            let oriented = match shape {
                None => None,
                Some((w, h, orientation)) => Some(Oriented {
                    stored: image::RgbImage::from_raw(w, h, pixels)
                        .ok_or_else(|| internal("the decoder sent short pixels".into()))?,
                    orientation,
                }),
            };
            let prepared = Prepared {
                bytes,
                id,
                source_sha256,
                format,
                width,
                height,
                orientation,
                pdq,
                removed,
            };
            Ok((prepared, oriented))
        }
    }
}

/// The decoders of a process's decoding threads: each entry takes an idle
/// one (or a new one) and gives it back.
pub struct DecoderPool {
    command: DecoderCommand,
    timeout: Duration,
    idle: std::sync::Mutex<Vec<Decoder>>,
}

impl std::fmt::Debug for DecoderPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecoderPool")
            .field("command", &self.command)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DecoderPool {
    /// Children started with `command`, stopped after `timeout` on one entry.
    pub fn new(command: DecoderCommand, timeout: Duration) -> Self {
        Self {
            command,
            timeout,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Starts children until `n` wait idle, so the first entries do not
    /// wait for them to load (each child is this binary, libtorch and all:
    /// a few hundred milliseconds, which the first batch's time showed).
    /// A child that cannot start is left for the first entry to report.
    pub fn start(&self, n: usize) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while idle.len() < n {
            let mut decoder = Decoder::new(self.command.clone(), self.timeout);
            match decoder.start() {
                Ok(running) => decoder.running = Some(running),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a decoder process yet");
                    return;
                }
            }
            idle.push(decoder);
        }
    }

    /// [`Decoder::prepare`] on an idle decoder.
    pub fn prepare(
        &self,
        data: &[u8],
        policy: &Policy,
        reduce_to: u32,
    ) -> Result<(Prepared, Option<Oriented>), Rejection> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut decoder = idle.unwrap_or_else(|| Decoder::new(self.command.clone(), self.timeout));
        let result = decoder.prepare(data, policy, reduce_to);
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(decoder);
        result
    }
}
