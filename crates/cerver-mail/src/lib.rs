//! Outgoing mail: how the control plane sends sign-up verification and login magic-link emails.
//!
//! A [`Mailer`] is built once from a [`MailConfig`] and delivers [`Message`]s in one of two ways:
//!
//! - **SMTP**, when the configuration names a host: through a relay with lettre's tokio
//!   transport, TLS by rustls (`tls = "starttls"` by default, `"tls"` for implicit TLS on 465,
//!   `"none"` only for a relay you trust the path to), every delivery bounded by a timeout.
//! - **Spool**, when it does not (the embedded default): each message becomes one RFC 5322
//!   `.eml` file in `<data-dir>/mail/`, written atomically, and the server log gets one line
//!   with the recipient and the first link of the message, so that someone running Cerver on
//!   their own machine can finish signing up without any mail server.
//!
//! Email addresses are hostile input: one from a user becomes an [`Address`] only through
//! [`parse_email`], and a [`Message`] can only be addressed to an [`Address`].
//!
//! ```no_run
//! # async fn demo(data_dir: &std::path::Path) -> Result<(), cerver_mail::MailError> {
//! use cerver_mail::{MailConfig, Mailer, parse_email, signup_message};
//!
//! let mailer = Mailer::new(&MailConfig::default(), data_dir)?; // no host: spool mode
//! let to = parse_email("ada@example.com")?;
//! mailer.send(&signup_message(&to, "https://cerver.example/verify?t=abc")).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! | module | what lives there |
//! |---|---|
//! | `config.rs` | [`MailConfig`] (a TOML section, `CERVER_SMTP_*` later), [`TlsMode`], [`Secret`] |
//! | `address.rs` | [`parse_email`]: length, control characters, then lettre's parser |
//! | `message.rs` | [`Message`] and its bounds; the conversion to a lettre message |
//! | `templates.rs` | [`signup_message`], [`login_message`]: plain text plus escaped HTML |
//! | `smtp.rs` | the SMTP transport: TLS mode, credentials, the delivery timeout |
//! | `spool.rs` | the spool directory: atomic `.eml` files, the bounded file count, the log line |
//! | `error.rs` | [`MailError`], the one error type of this crate |
//!
//! # What is never logged
//!
//! The SMTP password (its type, [`Secret`], prints as `[redacted]`) and message bodies: a login
//! link is a credential. [`Message`]'s `Debug` shows the recipient, the subject and body sizes.
//! Only spool mode logs a link, because there the log *is* the delivery.

mod address;
mod config;
mod error;
mod message;
mod smtp;
mod spool;
mod templates;

use std::fmt;
use std::path::Path;

pub use address::{MAX_EMAIL_BYTES, parse_email};
pub use config::{MailConfig, SPOOL_DIR_NAME, Secret, TlsMode};
pub use error::MailError;
/// A validated email address (lettre's type). Build one from user input with [`parse_email`].
pub use lettre::Address;
pub use message::{MAX_BODY_BYTES, MAX_SUBJECT_BYTES, Message};
pub use spool::MAX_SPOOLED_FILES;
pub use templates::{login_message, signup_message};

use lettre::message::Mailbox;

/// Sends [`Message`]s through SMTP or into the spool directory, as configured.
pub struct Mailer {
    from: Mailbox,
    delivery: Delivery,
}

enum Delivery {
    Smtp(smtp::SmtpDelivery),
    Spool(spool::Spool),
}

impl Mailer {
    /// Builds the mailer that `config` describes. Without an SMTP host, messages go to
    /// `<data_dir>/mail/`, which is created (mode 0700) if missing. Nothing is sent or
    /// connected to here; configuration mistakes are reported now, delivery problems by
    /// [`Mailer::send`].
    pub fn new(config: &MailConfig, data_dir: &Path) -> Result<Self, MailError> {
        let from = config.sender()?;
        let delivery = match config.smtp_host() {
            Some(host) => Delivery::Smtp(smtp::SmtpDelivery::new(config, host)?),
            None => Delivery::Spool(spool::Spool::open(data_dir.join(SPOOL_DIR_NAME))?),
        };
        Ok(Mailer { from, delivery })
    }

    /// The spool directory, when this mailer writes files instead of using SMTP.
    pub fn spool_dir(&self) -> Option<&Path> {
        match &self.delivery {
            Delivery::Spool(spool) => Some(spool.dir()),
            Delivery::Smtp(_) => None,
        }
    }

    /// Delivers one message: hands it to the SMTP relay (within the configured timeout) or
    /// writes it to the spool. `Ok` means the relay accepted it or the file is in place.
    pub async fn send(&self, msg: &Message) -> Result<(), MailError> {
        let email = msg.to_lettre(&self.from)?;
        match &self.delivery {
            Delivery::Smtp(smtp) => smtp.send(email, &msg.to).await,
            Delivery::Spool(spool) => spool.write(&email, msg).await.map(drop),
        }
    }
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Mailer");
        s.field("from", &self.from.to_string());
        match &self.delivery {
            Delivery::Smtp(smtp) => s.field("smtp", &smtp.endpoint()),
            Delivery::Spool(spool) => s.field("spool", &spool.dir()),
        };
        s.finish()
    }
}
