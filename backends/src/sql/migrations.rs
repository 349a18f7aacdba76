//! The schema's migrations per dialect. Those the two dialects share are
//! kept once, in `migrations/common/`; each dialect's list names its own
//! files and the shared ones, in version order. A test checks that every
//! file in the folders is listed, so a new migration cannot be forgotten.

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use std::borrow::Cow;

/// A migration named like sqlx names it from a file: version, then the
/// description with `_` read as a space.
macro_rules! migration {
    ($dir:literal, $version:literal, $name:literal) => {
        (
            $version,
            $name,
            include_str!(concat!(
                "../../migrations/",
                $dir,
                "/",
                $version,
                "_",
                $name,
                ".sql"
            )),
        )
    };
}

/// (version, description, SQL), as in the file names of SQLite's migrations.
const SQLITE: &[(&str, &str, &str)] = &[
    migration!("sqlite", "0001", "init"),
    migration!("sqlite", "0002", "pdq"),
    migration!("sqlite", "0003", "expired"),
    migration!("sqlite", "0004", "near"),
    migration!("sqlite", "0005", "originals"),
    migration!("common", "0006", "image_search"),
    migration!("common", "0007", "checks"),
    migration!("common", "0008", "image_scores"),
    migration!("sqlite", "0009", "tenants"),
    migration!("common", "0010", "orphan_blobs"),
    migration!("common", "0011", "upload_reservations"),
    migration!("common", "0012", "resumable_uploads"),
];

/// (version, description, SQL), as in the file names of PostgreSQL's migrations.
const POSTGRES: &[(&str, &str, &str)] = &[
    migration!("postgres", "0001", "init"),
    migration!("postgres", "0002", "pdq"),
    migration!("postgres", "0003", "expired"),
    migration!("postgres", "0004", "near"),
    migration!("postgres", "0005", "originals"),
    migration!("common", "0006", "image_search"),
    migration!("common", "0007", "checks"),
    migration!("common", "0008", "image_scores"),
    migration!("postgres", "0009", "tenants"),
    migration!("common", "0010", "orphan_blobs"),
    migration!("common", "0011", "upload_reservations"),
    migration!("common", "0012", "resumable_uploads"),
    migration!("postgres", "0013", "near_locks"),
];

fn migrator(list: &[(&str, &str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        list.iter()
            .map(|&(version, name, sql)| {
                let version = version.parse().expect("migration versions are numbers");
                // The checksum is the SQL's, as when sqlx read the files
                // itself, so databases migrated before keep matching.
                Migration::new(
                    version,
                    Cow::Owned(name.replace('_', " ")),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    sql.starts_with("-- no-transaction"),
                )
            })
            .collect(),
    )
}

/// SQLite's migrator.
pub(crate) fn sqlite() -> Migrator {
    migrator(SQLITE)
}

/// PostgreSQL's migrator.
pub(crate) fn postgres() -> Migrator {
    migrator(POSTGRES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// `dir` as (version, description) of the `NNNN_name.sql` files.
    fn files(dir: &str) -> BTreeSet<(i64, String)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dir);
        std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|name| {
                let (v, rest) = name.split_once('_')?;
                Some((v.parse().ok()?, rest.strip_suffix(".sql")?.to_string()))
            })
            .collect()
    }

    #[test]
    fn every_migration_file_is_listed_once_per_dialect() {
        let common = files("common");
        for (dir, list) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let listed: BTreeSet<(i64, String)> = list
                .iter()
                .map(|(v, n, _)| (v.parse().unwrap(), n.to_string()))
                .collect();
            assert_eq!(listed.len(), list.len(), "{dir}: a version listed twice");
            let on_disk: BTreeSet<(i64, String)> = files(dir).union(&common).cloned().collect();
            assert_eq!(listed, on_disk, "{dir}: the list and the folders differ");
        }
    }
}
