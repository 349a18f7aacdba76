//! TODO

/// The catalog in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgCatalog;
