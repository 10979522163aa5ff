use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in this crate. Each message is safe to log: none quotes a
/// user's input, a password or a message body.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// An email address was refused; the reason never repeats the address.
    #[error("invalid email address: {0}")]
    InvalidAddress(&'static str),
    /// The mail configuration cannot work (reported by `Mailer::new`).
    #[error("invalid mail configuration: {0}")]
    Config(String),
    /// A message is out of bounds, or could not be turned into an email.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// The SMTP relay could not be reached, or refused the message.
    #[error("SMTP delivery via {endpoint} failed: {error}")]
    Smtp {
        /// `host:port` of the relay.
        endpoint: String,
        error: lettre::transport::smtp::Error,
    },
    /// The SMTP relay did not complete the delivery within the configured timeout.
    #[error("SMTP delivery via {endpoint} timed out after {}s", .after.as_secs())]
    Timeout {
        /// `host:port` of the relay.
        endpoint: String,
        after: Duration,
    },
    /// The spool directory could not be created or written.
    #[error("cannot write to the mail spool {}: {error}", .dir.display())]
    Spool { dir: PathBuf, error: io::Error },
    /// The spool directory holds too many messages; nobody is reading them.
    #[error(
        "the mail spool {} holds {limit} messages, the most allowed; configure an SMTP host or empty it",
        .dir.display()
    )]
    SpoolFull { dir: PathBuf, limit: usize },
}
