//! The standalone backends: files on disk, SQLite, an in-process queue.

mod fs;
mod queue;
mod sqlite;

pub use fs::FsBlobStore;
pub use queue::MemQueue;
pub use sqlite::SqliteCatalog;
