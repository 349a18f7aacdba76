//! The catalog in SQL: one implementation of `Catalog` for both databases,
//! SQLite (the standalone server's file) and PostgreSQL (the cluster's).
//!
//! The queries are written once, with `$n` placeholders, which both drivers
//! take. What differs between the dialects lives in small modules:
//! [`sqlite`] (the file one process owns: near duplicates from an index in
//! memory, inserts serialized by its lock, the dedup claims),
//! [`postgres`] (many processes: row locks, array parameters) and
//! [`pg_near`] (near duplicates across processes: each its own copy of the
//! hashes in memory, inserts ordered by the rows their hashes lock). [`with_db!`]
//! runs one body against whichever pool a catalog holds.

mod catalog;
mod migrations;
mod pg_near;
pub(crate) mod postgres;
mod quotas;
pub(crate) mod rows;
pub(crate) mod sqlite;
mod statements;
mod uploads;

pub use sqlite::SqliteDedup;

use picsift_core::pdq_memory::MemoryIndex;
use sqlx::{PgPool, SqlitePool};
use std::sync::Arc;

/// Batches, entries, verdicts, images, API keys and quotas, in SQLite or in
/// PostgreSQL ([`SqlCatalog::open_sqlite`], [`SqlCatalog::connect_postgres`]).
#[derive(Clone)]
pub struct SqlCatalog {
    db: Db,
}

/// The pool of one database, with what its dialect needs besides.
#[derive(Clone)]
pub(crate) enum Db {
    /// The standalone file. One process owns it, so the stored images'
    /// PDQ hashes are indexed in its memory; the index's lock is also what
    /// serializes image inserts, so a near-duplicate check sees every image
    /// recorded before it.
    Sqlite {
        pool: SqlitePool,
        pdq: Arc<tokio::sync::Mutex<MemoryIndex>>,
    },
    /// The cluster's database, shared by every gateway and worker, and
    /// this process's copy of its PDQ hashes ([`pg_near`]).
    Postgres {
        pool: PgPool,
        near: pg_near::SharedReplica,
    },
}

/// Runs `$body` with `$pool` bound to the catalog's pool, whichever
/// database it is: the same tokens type-check against each driver.
macro_rules! with_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::sql::Db::Sqlite { pool: $pool, .. } => $body,
            $crate::sql::Db::Postgres { pool: $pool, .. } => $body,
        }
    };
}
pub(crate) use with_db;
