//! The one error type of the store. Callers match on the domain variants (quota, limit, not
//! found, duplicate); the backend variants are for logs and become a bare 500 upstream.

/// What can go wrong in a [`Store`](crate::Store) call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The caller passed a value the store refuses (e.g. an empty email).
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    /// No user with that id or email.
    #[error("user not found")]
    UserNotFound,
    /// No API key matches.
    #[error("API key not found")]
    KeyNotFound,
    /// No node with that name is registered.
    #[error("no node named {0:?} is registered")]
    NodeNotFound(String),
    /// A key prefix matches several keys; revoke by id or hash instead.
    #[error("{matches} API keys match that prefix; use the key id")]
    AmbiguousKey {
        /// How many keys share the prefix.
        matches: u64,
    },
    /// A row with the same unique value (named here) already exists.
    #[error("{0} already exists")]
    Duplicate(&'static str),
    /// The user has used all of today's requests.
    #[error("daily request quota of {limit} exceeded")]
    QuotaExceeded {
        /// The daily limit that was hit.
        limit: u64,
    },
    /// The user already has as many active sandboxes as the plan allows.
    #[error("sandbox limit of {limit} reached")]
    SandboxLimit {
        /// The limit that was hit.
        limit: u64,
    },
    /// A stored value cannot be read back (e.g. an unknown plan name written by a newer
    /// version).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The data directory could not be created.
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    /// Applying the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database itself failed (I/O, lock timeout, constraint not mapped above).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Result of a store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Maps a failed INSERT: a unique violation becomes [`StoreError::Duplicate`] (`what` names
    /// the value), a foreign-key violation [`StoreError::UserNotFound`] (every foreign key in the
    /// schema points at `users`).
    pub(crate) fn from_insert(err: sqlx::Error, what: &'static str) -> StoreError {
        if let sqlx::Error::Database(db) = &err {
            if db.is_unique_violation() {
                return StoreError::Duplicate(what);
            }
            if db.is_foreign_key_violation() {
                return StoreError::UserNotFound;
            }
        }
        StoreError::Database(err)
    }
}
