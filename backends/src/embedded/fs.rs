//! Blob store on the local filesystem. Writes go to a temporary file that
//! is synced and renamed into place, so a crash never leaves half an object.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use picsift_core::backend::{BlobStore, ByteStream};
use picsift_core::{Error, Result};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Objects as files under a root folder.
#[derive(Clone, Debug)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// A store rooted at `root` (created if missing). Leftover temporary
    /// files of an earlier crash are removed.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let tmp = root.join(".tmp");
        let _ = fs::remove_dir_all(&tmp).await;
        fs::create_dir_all(&tmp).await?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        let ok = !key.is_empty()
            && !key.starts_with('/')
            && key.split('/').all(|p| !p.is_empty() && !p.starts_with('.'))
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
        if !ok {
            return Err(Error::InvalidKey(key.into()));
        }
        Ok(self.root.join(key))
    }

    fn tmp_path(&self) -> PathBuf {
        self.root
            .join(".tmp")
            .join(uuid::Uuid::now_v7().to_string())
    }

    /// Moves a synced temporary file into place durably: the rename is on
    /// disk (its directory synced, and the directories created for it in
    /// theirs) before this returns, so a `202` or an `accepted` that
    /// follows survives a power cut.
    async fn commit(&self, tmp: &Path, key: &str) -> Result<()> {
        let dest = self.path(key)?;
        let parent = dest.parent().unwrap_or(&self.root).to_path_buf();
        // The highest directory that does not exist yet, to sync its parent.
        let mut created = None;
        let mut dir = parent.as_path();
        while dir != self.root && fs::metadata(dir).await.is_err() {
            created = Some(dir.to_path_buf());
            dir = dir.parent().unwrap_or(&self.root);
        }
        fs::create_dir_all(&parent).await?;
        fs::rename(tmp, &dest).await?;
        sync_dir(&parent).await?;
        if let Some(top) = created {
            let mut d = parent.as_path();
            while d != top {
                d = d.parent().unwrap_or(&self.root);
                sync_dir(d).await?;
            }
            sync_dir(top.parent().unwrap_or(&self.root)).await?;
        }
        Ok(())
    }

    /// The folder of an assembled object's parts: outside every key (a key
    /// cannot start with a dot), kept across restarts (resumable uploads
    /// outlive the process).
    fn parts_dir(&self, upload: &str) -> Result<PathBuf> {
        if upload.is_empty()
            || !upload
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Error::InvalidKey(upload.into()));
        }
        Ok(self.root.join(".parts").join(upload))
    }

    async fn open_existing(&self, key: &str) -> Result<fs::File> {
        match fs::File::open(self.path(key)?).await {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound(key.into())),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.path(key)?;
        let tmp = self.tmp_path();
        let path = tmp.clone();
        let written = blocking("writing an object", move || {
            let mut f = std::fs::File::create(&path)?;
            f.write_all(&bytes)?;
            f.sync_all()
        })
        .await;
        let result = match written {
            Ok(()) => self.commit(&tmp, key).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = fs::remove_file(&tmp).await;
        }
        result
    }

    async fn put_stream(&self, key: &str, mut body: ByteStream) -> Result<u64> {
        self.path(key)?;
        let tmp = self.tmp_path();
        let path = tmp.clone();
        let result = async {
            let mut file =
                Some(blocking("creating an object", move || std::fs::File::create(&path)).await?);
            // One batch of chunks is written on a blocking thread while
            // the next arrives (what tokio's `File` would overlap too).
            let mut writing: Option<tokio::task::JoinHandle<std::io::Result<std::fs::File>>> = None;
            let (mut batch, mut queued, mut n) = (Vec::new(), 0usize, 0u64);
            loop {
                let chunk = body.next().await.transpose()?;
                let end = chunk.is_none();
                if let Some(chunk) = chunk {
                    n += chunk.len() as u64;
                    queued += chunk.len();
                    batch.push(chunk);
                }
                if queued < WRITE_BATCH && !end {
                    continue;
                }
                if let Some(w) = writing.take() {
                    file = Some(joined("writing an object", w.await)?);
                }
                let mut f = file
                    .take()
                    .expect("the file is back once its write is joined");
                let chunks = std::mem::take(&mut batch);
                queued = 0;
                writing = Some(tokio::task::spawn_blocking(move || {
                    for c in &chunks {
                        f.write_all(c)?;
                    }
                    if end {
                        f.sync_all()?;
                    }
                    Ok(f)
                }));
                if end {
                    let w = writing.take().expect("just started");
                    joined("writing an object", w.await)?;
                    break;
                }
            }
            self.commit(&tmp, key).await?;
            Ok(n)
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&tmp).await;
        }
        result
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path(key)?;
        let read = blocking("reading an object", move || {
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let len = f.metadata()?.len();
            let (start, end) = (range.start.min(len), range.end.min(len));
            let want = end.saturating_sub(start);
            f.seek(SeekFrom::Start(start))?;
            // Into the buffer's spare capacity: no zeroing pass first.
            let mut buf = Vec::with_capacity(want as usize);
            f.take(want).read_to_end(&mut buf)?;
            if (buf.len() as u64) < want {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok(Some(buf))
        })
        .await?;
        read.map(Bytes::from)
            .ok_or_else(|| Error::NotFound(key.into()))
    }

    async fn get_stream(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let mut f = self.open_existing(key).await?;
        let len = f.metadata().await?.len();
        let range = range.unwrap_or(0..len);
        f.seek(SeekFrom::Start(range.start.min(len))).await?;
        let take = range.end.min(len).saturating_sub(range.start);
        Ok(tokio_util::io::ReaderStream::with_capacity(f.take(take), 256 << 10).boxed())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        match fs::metadata(self.path(key)?).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn start_parts(&self, key: &str) -> Result<String> {
        self.path(key)?;
        let upload = uuid::Uuid::now_v7().to_string();
        fs::create_dir_all(self.parts_dir(&upload)?).await?;
        Ok(upload)
    }

    /// The parts are written in place into one file of the upload's folder
    /// (synced by `flush_parts`, once per save rather than per part), so
    /// finishing is a rename, not a copy of every byte. The ETag is fresh per write, recorded beside it,
    /// so finishing with the ETags of parts written since replaced fails.
    async fn put_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        offset: u64,
        bytes: Bytes,
    ) -> Result<String> {
        self.path(key)?;
        let dir = self.parts_dir(upload)?;
        if fs::metadata(&dir).await.is_err() {
            return Err(Error::NotFound(format!("{key} (upload {upload})")));
        }
        let etag = uuid::Uuid::now_v7().simple().to_string();
        let data = dir.join("data");
        let tag = (dir.join(format!("{number}.etag")), etag.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&data)?;
            f.write_all_at(&bytes, offset)?;
            let end = offset + bytes.len() as u64;
            std::fs::write(&tag.0, format!("{} {end}", tag.1))
        })
        .await
        .map_err(|e| Error::Backend(format!("writing a part: {e}")))??;
        Ok(etag)
    }

    async fn finish_parts(&self, key: &str, upload: &str, etags: &[String]) -> Result<u64> {
        self.path(key)?;
        let dir = self.parts_dir(upload)?;
        let mut end = 0;
        for (i, etag) in etags.iter().enumerate() {
            let recorded = fs::read_to_string(dir.join(format!("{}.etag", i + 1)))
                .await
                .map_err(|_| {
                    Error::NotFound(format!("part {} of {key} (upload {upload})", i + 1))
                })?;
            let (tag, part_end) = recorded.split_once(' ').unwrap_or_default();
            if tag != etag {
                return Err(Error::Invalid(format!(
                    "part {} of {key} is not the one with ETag {etag}",
                    i + 1
                )));
            }
            end = part_end.parse().unwrap_or(0);
        }
        let data = dir.join("data");
        let file = fs::OpenOptions::new().write(true).open(&data).await?;
        file.set_len(end).await?;
        file.sync_all().await?;
        self.commit(&data, key).await?;
        let _ = fs::remove_dir_all(&dir).await;
        Ok(end)
    }

    async fn flush_parts(&self, _key: &str, upload: &str) -> Result<()> {
        let dir = self.parts_dir(upload)?;
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            match std::fs::File::open(dir.join("data")) {
                Ok(f) => f.sync_data()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            // The parts' ETag files too.
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(|e| Error::Backend(format!("syncing parts: {e}")))??;
        Ok(())
    }

    async fn abort_parts(&self, _key: &str, upload: &str) -> Result<()> {
        match fs::remove_dir_all(self.parts_dir(upload)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let mut rd = match fs::read_dir(&dir).await {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            while let Some(e) = rd.next_entry().await? {
                let path = e.path();
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let rel = rel.to_string_lossy().replace('\\', "/");
                if rel.starts_with(".tmp") || rel.starts_with(".parts") {
                    continue;
                }
                if e.file_type().await?.is_dir() {
                    dirs.push(path);
                } else if rel.starts_with(prefix) {
                    out.push(rel);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// How many bytes of an upload's chunks are gathered for one write.
const WRITE_BATCH: usize = 1 << 20;

/// Runs whole-object file I/O on a blocking thread with `std::fs`.
/// tokio's `File` copies every write into a buffer of its own and every
/// read out of one, in steps of at most 2 MB: for each 12 MP photo of
/// `picsift serve` that was three extra passes over its bytes (staged,
/// read back, stored), and this machine copies memory at 1-2 GB/s
/// (docs/benchmarks.md, end to end).
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    joined(what, tokio::task::spawn_blocking(f).await)
}

/// The result of a blocking task, its panic or cancellation a backend error.
fn joined<T>(
    what: &str,
    r: std::result::Result<std::io::Result<T>, tokio::task::JoinError>,
) -> Result<T> {
    Ok(r.map_err(|e| Error::Backend(format!("{what}: {e}")))??)
}

/// Makes a directory's entries durable (fsync of the directory itself).
async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir).await?.sync_all().await
}
