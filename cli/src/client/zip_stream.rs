//! The upload body as a byte stream: a zip file sent as it is, or a
//! folder zipped on the fly (stored entries, sizes in data descriptors) by
//! a thread writing into a bounded channel, so memory stays at a few MiB
//! whatever the upload's size and a failed read aborts the body instead of
//! ending it early.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, stream};
use tokio::sync::{mpsc, oneshot};
use zip::CompressionMethod;
use zip::result::ZipError;
use zip::write::SimpleFileOptions;

use super::folder::{FolderFile, with_path};

/// Bytes per chunk handed to the HTTP body: large enough that the channel
/// costs nothing per byte, small enough that the progress bar moves.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the reading thread and the request; with
/// [`CHUNK`] this bounds the upload's memory to a few MiB, whatever its size.
const CHANNEL_DEPTH: usize = 8;
/// Zip bookkeeping per entry besides its name (local header, data
/// descriptor, central directory record): only feeds the progress estimate.
const ZIP_ENTRY_OVERHEAD: u64 = 128;
/// Files from this size on need ZIP64 records, which must be chosen before
/// the file's data is written because a streamed zip cannot go back.
const ZIP64_THRESHOLD: u64 = u32::MAX as u64;

/// What `picsift upload` sends.
pub(super) enum Source {
    /// A zip file, sent byte for byte.
    ZipFile { path: PathBuf, len: u64 },
    /// Files of a folder, zipped while they are sent.
    Folder(Vec<FolderFile>),
}

impl Source {
    /// The bytes the upload will have; exact for a zip file.
    pub(super) fn estimated_len(&self) -> u64 {
        match self {
            Self::ZipFile { len, .. } => *len,
            Self::Folder(files) => files
                .iter()
                .map(|f| f.len + ZIP_ENTRY_OVERHEAD + 2 * f.name.len() as u64)
                .sum(),
        }
    }

    /// The exact length, when it is known before sending (a zip file).
    pub(super) fn known_len(&self) -> Option<u64> {
        match self {
            Self::ZipFile { len, .. } => Some(*len),
            Self::Folder(_) => None,
        }
    }

    /// Runs on a blocking thread: the zip writer and file reads are synchronous.
    pub(super) fn write_to(self, out: &mut ChannelWriter) -> io::Result<()> {
        match self {
            Self::ZipFile { path, len } => {
                let file = File::open(&path).map_err(|e| with_path("cannot open", &path, e))?;
                // `take` keeps the body to the Content-Length already sent
                // if the file grows meanwhile.
                io::copy(&mut file.take(len), out)
                    .map_err(|e| with_path("cannot read", &path, e))?;
                Ok(())
            }
            Self::Folder(files) => write_zip(&files, out).map(drop),
        }
    }
}

/// Zips `files` into `out` as a stream: entries are stored (images do not
/// compress) and sized in data descriptors, so nothing is ever rewritten
/// and memory does not grow with the files' sizes.
fn write_zip<W: Write>(files: &[FolderFile], out: W) -> io::Result<W> {
    let mut zip = zip::ZipWriter::new_stream(out);
    for file in files {
        // Fixed metadata (the default 1980 timestamp, 0644) keeps the
        // archive a function of the files' names and contents.
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .unix_permissions(0o644)
            .large_file(file.len >= ZIP64_THRESHOLD);
        zip.start_file(file.name.as_str(), options)
            .map_err(zip_error)?;
        let source = File::open(&file.path).map_err(|e| with_path("cannot open", &file.path, e))?;
        // `take` keeps the entry to the size that chose the ZIP64 option
        // above if the file grows meanwhile.
        io::copy(&mut source.take(file.len), &mut zip)
            .map_err(|e| with_path("cannot add", &file.path, e))?;
    }
    Ok(zip.finish().map_err(zip_error)?.into_inner())
}

fn zip_error(err: ZipError) -> io::Error {
    match err {
        ZipError::Io(e) => e,
        other => io::Error::other(other),
    }
}

/// A `Write` that hands its bytes to the async side in [`CHUNK`]s, blocking
/// while the channel is full: the request's pace sets the reading's pace.
pub(super) struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
    /// The receiving side (the request body) is gone.
    disconnected: bool,
}

impl ChannelWriter {
    fn send(&mut self, item: io::Result<Bytes>) -> io::Result<()> {
        self.tx.blocking_send(item).map_err(|_| {
            self.disconnected = true;
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the request stopped taking the upload",
            )
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            let chunk = std::mem::replace(&mut self.buf, BytesMut::with_capacity(CHUNK)).freeze();
            self.send(Ok(chunk))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.send(Ok(chunk))
    }
}

/// Runs `produce` on its own thread, writing into a bounded channel, and
/// returns the channel as a stream of chunks plus the thread's outcome.
///
/// A failure of `produce` is also sent down the stream, so the HTTP body
/// is aborted rather than ended early: the server must never take a
/// truncated upload for a whole one. The outcome is `Ok` when the stream's
/// consumer went away first, since the consumer then knows why.
pub(super) fn byte_pipe<F>(
    produce: F,
) -> io::Result<(
    impl Stream<Item = io::Result<Bytes>>,
    oneshot::Receiver<io::Result<()>>,
)>
where
    F: FnOnce(&mut ChannelWriter) -> io::Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let (done_tx, done_rx) = oneshot::channel();
    // A plain thread, not `spawn_blocking`: the runtime's shutdown waits for
    // blocking tasks, and this one may sit on a full channel.
    std::thread::Builder::new()
        .name("picsift-upload".into())
        .spawn(move || {
            let mut out = ChannelWriter {
                tx,
                buf: BytesMut::with_capacity(CHUNK),
                disconnected: false,
            };
            let result = match produce(&mut out).and_then(|()| out.flush()) {
                Err(_) if out.disconnected => Ok(()),
                Err(err) => {
                    // Ignored: if the receiver is gone, the request failed anyway.
                    let _ = out.send(Err(io::Error::new(err.kind(), err.to_string())));
                    Err(err)
                }
                Ok(()) => Ok(()),
            };
            let _ = done_tx.send(result);
        })?;
    let chunks = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((chunks, done_rx))
}

#[cfg(test)]
mod tests {
    use super::super::folder::list_folder;
    use super::super::test_folder::sample_folder;
    use super::*;
    use futures_util::StreamExt;
    use std::io::Cursor;

    fn read_back(zip_bytes: Vec<u8>) -> Vec<(String, Vec<u8>)> {
        let mut archive = zip::ZipArchive::new(Cursor::new(zip_bytes)).unwrap();
        (0..archive.len())
            .map(|i| {
                let mut file = archive.by_index(i).unwrap();
                let mut data = Vec::new();
                file.read_to_end(&mut data).unwrap();
                (file.name().unwrap().into_owned(), data)
            })
            .collect()
    }

    #[test]
    fn streamed_folder_zip_reads_back_with_the_same_files() {
        let dir = sample_folder("zip", 3 * CHUNK + 17);
        let listing = list_folder(&dir.0).unwrap();
        let entries = read_back(write_zip(&listing.files, Vec::new()).unwrap());
        let names: Vec<_> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.png", "b/deeper/c.webp", "b/x.jpg", "z.jpg"]);
        assert_eq!(entries[0].1, vec![7u8; 3 * CHUNK + 17]);
        assert_eq!(entries[3].1, b"zzz");
    }

    #[test]
    fn same_folder_gives_the_same_archive() {
        let dir = sample_folder("determinism", 3 * CHUNK + 17);
        let listing = list_folder(&dir.0).unwrap();
        assert_eq!(
            write_zip(&listing.files, Vec::new()).unwrap(),
            write_zip(&listing.files, Vec::new()).unwrap()
        );
    }

    #[tokio::test]
    async fn folder_through_the_pipe_arrives_whole_in_bounded_chunks() {
        let dir = sample_folder("pipe", 3 * CHUNK + 17);
        let files = list_folder(&dir.0).unwrap().files;
        let expected = write_zip(&files, Vec::new()).unwrap();
        let (chunks, done) = byte_pipe(move |out| Source::Folder(files).write_to(out)).unwrap();
        let chunks: Vec<Bytes> = chunks.map(|c| c.unwrap()).collect().await;
        assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
        assert_eq!(chunks.concat(), expected);
        done.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn failed_read_aborts_the_stream_instead_of_ending_it() {
        let (chunks, done) = byte_pipe(|out| {
            out.write_all(b"PK partial")?;
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "cannot open photo.jpg",
            ))
        })
        .unwrap();
        let items: Vec<io::Result<Bytes>> = chunks.collect().await;
        assert!(items.last().is_some_and(|last| last.is_err()));
        assert_eq!(
            done.await.unwrap().unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
    }

    #[tokio::test]
    async fn dropped_request_body_stops_the_reader_quietly() {
        let (chunks, done) = byte_pipe(|out| {
            loop {
                out.write_all(&[0; 4096])?;
            }
        })
        .unwrap();
        drop(chunks);
        done.await.unwrap().unwrap();
    }
}
