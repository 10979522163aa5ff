//! The mail settings: one flat section so that a TOML table (`[mail]`) and `CERVER_SMTP_*`
//! variables map onto it field for field.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use lettre::message::Mailbox;
use serde::Deserialize;

use crate::MailError;
use crate::address::parse_email;

/// The spool directory's name inside the data directory.
pub const SPOOL_DIR_NAME: &str = "mail";
/// Sender used in spool mode when none is configured (nothing leaves the machine).
const SPOOL_DEFAULT_FROM: &str = "Cerver <cerver@localhost>";
/// Default bound on one SMTP delivery (connect, TLS, the whole conversation).
const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// Longest accepted delivery timeout: a sign-up request waits for it.
const MAX_TIMEOUT_SECS: u64 = 300;
/// Longest accepted `from` (display name and address).
const MAX_FROM_BYTES: usize = 512;

/// How mail leaves the server. With no `host` (the default), messages are written to the
/// spool directory `<data-dir>/mail/` instead of being sent.
///
/// ```toml
/// [mail]
/// host = "smtp.example.com"
/// port = 587                       # default: 25 / 587 / 465 for tls = none / starttls / tls
/// username = "cerver"
/// password = "…"                   # never logged; Debug prints [redacted]
/// tls = "starttls"                 # none | starttls | tls
/// from = "Cerver <noreply@example.com>"
/// timeout_secs = 10
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// SMTP relay host name or IP address. Unset or empty: spool mode.
    pub host: Option<String>,
    /// SMTP port; unset means the usual port for [`MailConfig::tls`].
    pub port: Option<u16>,
    /// SMTP user name; set together with `password` or not at all.
    pub username: Option<String>,
    /// SMTP password.
    pub password: Option<Secret>,
    /// Transport security towards the relay.
    pub tls: TlsMode,
    /// The `From` of every message, `addr@host` or `Name <addr@host>`. Required with SMTP.
    pub from: Option<String>,
    /// Bound on one delivery in seconds (1 to 300, default 10).
    pub timeout_secs: Option<u64>,
}

impl MailConfig {
    /// The SMTP host, if one is configured (an empty value counts as none, so that an empty
    /// `CERVER_SMTP_HOST=` keeps the spool).
    pub fn smtp_host(&self) -> Option<&str> {
        self.host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
    }

    /// The port to connect to: the configured one or the usual one for the TLS mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.tls.default_port())
    }

    /// The bound on one delivery.
    pub fn timeout(&self) -> Result<Duration, MailError> {
        let secs = self.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
            return Err(MailError::Config(format!(
                "timeout_secs must be between 1 and {MAX_TIMEOUT_SECS}"
            )));
        }
        Ok(Duration::from_secs(secs))
    }

    /// The sender mailbox: the configured `from`, or a local placeholder in spool mode.
    pub(crate) fn sender(&self) -> Result<Mailbox, MailError> {
        let from = match (self.from.as_deref().map(str::trim), self.smtp_host()) {
            (Some(from), _) if !from.is_empty() => from,
            (_, Some(_)) => {
                return Err(MailError::Config(
                    "`from` is required when an SMTP host is set".into(),
                ));
            }
            (_, None) => SPOOL_DEFAULT_FROM,
        };
        parse_mailbox(from)
    }

    /// Whether the host is this machine, where an unencrypted hop exposes nothing.
    pub(crate) fn host_is_loopback(host: &str) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// Parses the configured sender; the address part obeys the same rules as a user's.
fn parse_mailbox(from: &str) -> Result<Mailbox, MailError> {
    let bad = |why: &str| MailError::Config(format!("`from` is not a valid mailbox: {why}"));
    if from.len() > MAX_FROM_BYTES {
        return Err(bad("too long"));
    }
    if from.chars().any(char::is_control) {
        return Err(bad("contains a control character"));
    }
    let mailbox = Mailbox::from_str(from).map_err(|e| bad(&e.to_string()))?;
    parse_email(mailbox.email.as_ref()).map_err(|e| bad(&e.to_string()))?;
    Ok(mailbox)
}

/// Transport security towards the SMTP relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text. Only for a relay on a path you trust; credentials are refused unless the
    /// relay is on this machine.
    None,
    /// Plain connection upgraded with STARTTLS, which the relay must offer (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

impl TlsMode {
    /// The usual port for this mode.
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::None => 25,
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
        }
    }
}

impl FromStr for TlsMode {
    type Err = MailError;

    fn from_str(s: &str) -> Result<Self, MailError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(TlsMode::None),
            "starttls" => Ok(TlsMode::Starttls),
            "tls" => Ok(TlsMode::Tls),
            _ => Err(MailError::Config(
                "tls must be one of none, starttls, tls".into(),
            )),
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::None => "none",
            TlsMode::Starttls => "starttls",
            TlsMode::Tls => "tls",
        })
    }
}

/// A string that must not reach a log: `Debug` prints `[redacted]` and there is no `Display`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_host_means_spool() {
        let config = MailConfig {
            host: Some("  ".into()),
            ..MailConfig::default()
        };
        assert_eq!(config.smtp_host(), None);
        assert_eq!(MailConfig::default().smtp_host(), None);
    }

    #[test]
    fn default_ports_follow_tls_mode() {
        let mut config = MailConfig::default();
        assert_eq!(config.port(), 587);
        config.tls = TlsMode::Tls;
        assert_eq!(config.port(), 465);
        config.tls = TlsMode::None;
        assert_eq!(config.port(), 25);
        config.port = Some(2525);
        assert_eq!(config.port(), 2525);
    }

    #[test]
    fn tls_mode_parses_case_insensitively() {
        assert_eq!("STARTTLS".parse::<TlsMode>().unwrap(), TlsMode::Starttls);
        assert_eq!("none".parse::<TlsMode>().unwrap(), TlsMode::None);
        assert!("ssl".parse::<TlsMode>().is_err());
        assert_eq!(TlsMode::Tls.to_string(), "tls");
    }

    #[test]
    fn timeout_is_bounded() {
        let mut config = MailConfig::default();
        assert_eq!(config.timeout().unwrap(), Duration::from_secs(10));
        config.timeout_secs = Some(0);
        assert!(config.timeout().is_err());
        config.timeout_secs = Some(301);
        assert!(config.timeout().is_err());
    }

    #[test]
    fn from_is_required_with_smtp_and_defaulted_for_the_spool() {
        let mut config = MailConfig::default();
        assert_eq!(
            config.sender().unwrap().email.to_string(),
            "cerver@localhost"
        );
        config.host = Some("smtp.example.com".into());
        assert!(matches!(config.sender(), Err(MailError::Config(_))));
        config.from = Some("Cerver <noreply@example.com>".into());
        let from = config.sender().unwrap();
        assert_eq!(from.name.as_deref(), Some("Cerver"));
        assert_eq!(from.email.to_string(), "noreply@example.com");
    }

    #[test]
    fn hostile_from_is_rejected() {
        for from in [
            "Cerver <noreply@example.com>\r\nBcc: x@y.z",
            "not a mailbox",
            &format!("{}@example.com", "a".repeat(600)),
        ] {
            let config = MailConfig {
                from: Some(from.into()),
                ..MailConfig::default()
            };
            assert!(
                matches!(config.sender(), Err(MailError::Config(_))),
                "{from:?} accepted"
            );
        }
    }

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "127.0.0.1", "::1", "[::1]", "127.1.2.3"] {
            assert!(MailConfig::host_is_loopback(host), "{host}");
        }
        for host in ["smtp.example.com", "10.0.0.1", "localhost.example.com"] {
            assert!(!MailConfig::host_is_loopback(host), "{host}");
        }
    }

    #[test]
    fn secret_is_redacted() {
        let config = MailConfig {
            password: Some(Secret::new("hunter2")),
            ..MailConfig::default()
        };
        let printed = format!("{config:?} {config:#?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("[redacted]"));
    }
}
