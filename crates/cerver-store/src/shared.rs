//! What both backends share: the embedded-migrations source and small conversions.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType};

/// One backend's schema steps compiled into the binary, in the form `sqlx` applies (and
/// checksums, so that an edited, already-applied migration is refused): (version,
/// description, SQL).
#[derive(Debug)]
pub(crate) struct Embedded(pub &'static [(i64, &'static str, &'static str)]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    false,
                )
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}

/// A SQL count (never negative) as `u64`.
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A caller's limit as an SQL integer (limits past `i64::MAX` are as good as unlimited).
pub(crate) fn sql_limit(limit: u64) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Checks that every file in `migrations/<dir>/` is listed in `steps` with its number and
/// name and the same text, in order, and nothing else is: a new file cannot be forgotten.
#[cfg(test)]
pub(crate) fn assert_migrations_match(dir: &str, steps: &[(i64, &str, &str)]) {
    let dir = format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let listed: Vec<String> = steps
        .iter()
        .map(|(version, name, _)| format!("{version:04}_{name}.sql"))
        .collect();
    assert_eq!(files, listed);
    for (i, (version, _, sql)) in steps.iter().enumerate() {
        assert_eq!(*version, i as i64 + 1, "versions count up from 1");
        let file = std::fs::read_to_string(format!("{dir}/{}", listed[i])).unwrap();
        assert_eq!(*sql, file);
    }
}
