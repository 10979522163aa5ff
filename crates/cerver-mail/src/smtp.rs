//! Delivery through an SMTP relay: lettre's tokio transport, rustls with the bundled web PKI
//! roots, one connection per message (sign-up mail is rare; nothing idles open), and a bound
//! on the whole delivery, because lettre's own timeout covers connecting only.

use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::{MailConfig, MailError, TlsMode};

/// Longest accepted host name (RFC 1035), checked before lettre or DNS see it.
const MAX_HOST_BYTES: usize = 253;

pub(crate) struct SmtpDelivery {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// `host:port`, for errors and logs.
    endpoint: String,
    timeout: Duration,
}

impl SmtpDelivery {
    pub(crate) fn new(config: &MailConfig, host: &str) -> Result<Self, MailError> {
        if host.len() > MAX_HOST_BYTES
            || host
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '/')
        {
            return Err(MailError::Config("host is not a valid host name".into()));
        }
        let port = config.port();
        if port == 0 {
            return Err(MailError::Config("port must not be 0".into()));
        }
        let timeout = config.timeout()?;
        let tls_parameters = || {
            TlsParameters::new(host.to_owned())
                .map_err(|e| MailError::Config(format!("cannot set up TLS for host {host}: {e}")))
        };
        let tls = match config.tls {
            TlsMode::None => Tls::None,
            TlsMode::Starttls => Tls::Required(tls_parameters()?),
            TlsMode::Tls => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(timeout));
        match (&config.username, &config.password) {
            (None, None) => {}
            (Some(username), Some(password)) => {
                if config.tls == TlsMode::None && !MailConfig::host_is_loopback(host) {
                    return Err(MailError::Config(
                        "refusing to send SMTP credentials unencrypted to another machine: \
                         use tls = \"starttls\" or \"tls\""
                            .into(),
                    ));
                }
                builder = builder.credentials(Credentials::new(
                    username.clone(),
                    password.expose().to_owned(),
                ));
            }
            _ => {
                return Err(MailError::Config(
                    "username and password must be set together".into(),
                ));
            }
        }
        Ok(SmtpDelivery {
            transport: builder.build(),
            endpoint: format!("{host}:{port}"),
            timeout,
        })
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) async fn send(&self, email: lettre::Message, to: &Address) -> Result<(), MailError> {
        match tokio::time::timeout(self.timeout, self.transport.send(email)).await {
            Ok(Ok(_response)) => {
                tracing::info!(to = %to, relay = %self.endpoint, "mail sent");
                Ok(())
            }
            Ok(Err(error)) => Err(MailError::Smtp {
                endpoint: self.endpoint.clone(),
                error,
            }),
            Err(_elapsed) => Err(MailError::Timeout {
                endpoint: self.endpoint.clone(),
                after: self.timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;

    fn smtp(host: &str) -> MailConfig {
        MailConfig {
            host: Some(host.into()),
            from: Some("noreply@example.com".into()),
            ..MailConfig::default()
        }
    }

    #[test]
    fn builds_for_each_tls_mode() {
        for tls in [TlsMode::None, TlsMode::Starttls, TlsMode::Tls] {
            let config = MailConfig {
                tls,
                ..smtp("smtp.example.com")
            };
            let delivery = SmtpDelivery::new(&config, "smtp.example.com").unwrap();
            assert_eq!(
                delivery.endpoint(),
                format!("smtp.example.com:{}", tls.default_port())
            );
        }
    }

    #[test]
    fn credentials_need_encryption_off_this_machine() {
        let config = MailConfig {
            tls: TlsMode::None,
            username: Some("u".into()),
            password: Some(Secret::new("p")),
            ..smtp("smtp.example.com")
        };
        let err = SmtpDelivery::new(&config, "smtp.example.com")
            .err()
            .unwrap();
        assert!(err.to_string().contains("unencrypted"), "{err}");
        SmtpDelivery::new(&config, "127.0.0.1").unwrap();
        let encrypted = MailConfig {
            tls: TlsMode::Starttls,
            ..config
        };
        SmtpDelivery::new(&encrypted, "smtp.example.com").unwrap();
    }

    #[test]
    fn half_credentials_are_refused() {
        let config = MailConfig {
            username: Some("u".into()),
            ..smtp("smtp.example.com")
        };
        assert!(SmtpDelivery::new(&config, "smtp.example.com").is_err());
        let config = MailConfig {
            password: Some(Secret::new("p")),
            ..smtp("smtp.example.com")
        };
        assert!(SmtpDelivery::new(&config, "smtp.example.com").is_err());
    }

    #[test]
    fn bad_hosts_are_refused() {
        for host in [
            "smtp example.com",
            "smtp\r\n.example.com",
            "a/b",
            &"a".repeat(254),
        ] {
            assert!(SmtpDelivery::new(&smtp(host), host).is_err(), "{host:?}");
        }
    }
}
