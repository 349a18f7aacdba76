//! The standalone backends: files on disk and an in-process queue (the
//! catalog and dedup claims are SQLite, in [`crate::sql`]).

mod fs;
mod queue;

pub use fs::FsBlobStore;
pub use queue::MemQueue;
