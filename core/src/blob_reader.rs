//! A blocking `Read + Seek` view of a blob, by range reads, so the zip
//! reader can walk a staged archive in any blob store. Use it only on a
//! blocking thread (it blocks on the runtime for each read).

use crate::backend::BlobStore;
use bytes::Bytes;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;

/// Reads a blob in blocks of `block` bytes.
pub struct BlobReader {
    store: Arc<dyn BlobStore>,
    key: String,
    handle: Handle,
    len: u64,
    pos: u64,
    block: u64,
    buf_start: u64,
    buf: Bytes,
    failure: Arc<Mutex<Option<String>>>,
}

/// Tells whether a [`BlobReader`] hit a storage failure. The zip reader
/// turns every read error into a "bad archive" error; this keeps a store
/// that was briefly unreachable from being mistaken for a corrupt upload.
#[derive(Clone, Debug, Default)]
pub struct ReadFailure(Arc<Mutex<Option<String>>>);

impl ReadFailure {
    /// The storage error the reader saw, if any.
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl BlobReader {
    /// A reader of `key`, whose size is `len`.
    pub fn new(store: Arc<dyn BlobStore>, key: &str, len: u64, handle: Handle) -> Self {
        Self {
            store,
            key: key.into(),
            handle,
            len,
            pos: 0,
            block: 1 << 20,
            buf_start: 0,
            buf: Bytes::new(),
            failure: Arc::default(),
        }
    }

    /// A handle that says, after reading, whether the store failed.
    pub fn failure(&self) -> ReadFailure {
        ReadFailure(self.failure.clone())
    }
}

impl Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || out.is_empty() {
            return Ok(0);
        }
        let in_buf =
            self.pos >= self.buf_start && self.pos < self.buf_start + self.buf.len() as u64;
        if !in_buf {
            // Reads larger than a block go straight through.
            let want = (out.len() as u64).max(self.block);
            let end = (self.pos + want).min(self.len);
            let (store, key, start) = (self.store.clone(), self.key.clone(), self.pos);
            self.buf = self
                .handle
                .block_on(async move { store.get_range(&key, start..end).await })
                .map_err(|e| {
                    *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    io::Error::other(e)
                })?;
            self.buf_start = self.pos;
            if self.buf.is_empty() {
                return Ok(0);
            }
        }
        let off = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - off);
        out[..n].copy_from_slice(&self.buf[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for BlobReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let next = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = next
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}
