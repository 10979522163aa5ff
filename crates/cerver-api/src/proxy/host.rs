//! Which sandbox a request's host names: `<label>-<port>.<sandbox domain>`.

use axum::extract::Request;
use axum::http::header::{self, HeaderValue};

/// Where a request's host name sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    /// Not a sandbox host: the API.
    Api,
    /// `<label>-<port>.<domain>`.
    Sandbox { label: String, port: u16 },
    /// Under the sandbox domain but not a sandbox host name: never the API, always 404.
    Invalid,
}

/// Classifies a request's host (the `Host` header or an absolute URI's authority) against the
/// sandbox domain (lower case, no trailing dot). A port suffix is ignored; case and one
/// trailing dot do not matter. The bare domain is left to the API, so the API may share it.
pub fn classify_host(host: &[u8], domain: &str) -> HostKind {
    let host = String::from_utf8_lossy(host);
    let host = host.trim();
    if host.starts_with('[') {
        return HostKind::Api; // an IPv6 literal
    }
    let name = host.rsplit_once(':').map_or(host, |(name, _port)| name);
    let name = name.to_ascii_lowercase();
    let name = name.strip_suffix('.').unwrap_or(&name);
    let Some(first) = name.strip_suffix(domain).and_then(|n| n.strip_suffix('.')) else {
        return HostKind::Api;
    };
    parse_first_label(first).unwrap_or(HostKind::Invalid)
}

/// `<8 hex>-<port>`, the port in canonical decimal (1-65535, no leading zero).
fn parse_first_label(first: &str) -> Option<HostKind> {
    let (label, port) = first.split_once('-')?;
    let valid_label = label.len() == cerver_control::ports::LABEL_LEN
        && label.bytes().all(|b| b.is_ascii_hexdigit());
    let canonical_port = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && !port.starts_with('0');
    if !valid_label || !canonical_port {
        return None;
    }
    let port = port.parse::<u16>().ok()?;
    Some(HostKind::Sandbox {
        label: label.to_string(),
        port,
    })
}

/// The host a request names: an absolute-form URI's authority wins over `Host` (RFC 9112
/// §3.2.2).
pub(super) fn request_host(req: &Request) -> &[u8] {
    match req.uri().authority() {
        Some(a) => a.as_str().as_bytes(),
        None => req
            .headers()
            .get(header::HOST)
            .map_or(&[][..], HeaderValue::as_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sandbox.localhost";

    fn sb(label: &str, port: u16) -> HostKind {
        HostKind::Sandbox {
            label: label.into(),
            port,
        }
    }

    #[test]
    fn sandbox_hosts_are_recognised() {
        let cases: &[(&[u8], HostKind)] = &[
            (b"9f83e711-8080.sandbox.localhost", sb("9f83e711", 8080)),
            (
                b"9f83e711-8080.sandbox.localhost:8080",
                sb("9f83e711", 8080),
            ),
            (b"9F83E711-8080.SANDBOX.Localhost", sb("9f83e711", 8080)),
            (b"9f83e711-8080.sandbox.localhost.", sb("9f83e711", 8080)),
            (b"9f83e711-8080.sandbox.localhost.:80", sb("9f83e711", 8080)),
            (b"9f83e711-1.sandbox.localhost", sb("9f83e711", 1)),
            (b"9f83e711-65535.sandbox.localhost", sb("9f83e711", 65535)),
            (b" 9f83e711-80.sandbox.localhost ", sb("9f83e711", 80)),
            // A port suffix is ignored whatever it is.
            (b"9f83e711-80.sandbox.localhost:", sb("9f83e711", 80)),
            (b"9f83e711-80.sandbox.localhost:abc", sb("9f83e711", 80)),
            (
                b"9f83e711-80.sandbox.localhost:99999999",
                sb("9f83e711", 80),
            ),
        ];
        for (host, want) in cases {
            assert_eq!(
                &classify_host(host, D),
                want,
                "{}",
                String::from_utf8_lossy(host)
            );
        }
    }

    #[test]
    fn other_hosts_go_to_the_api() {
        for host in [
            &b""[..],
            b"127.0.0.1:8080",
            b"localhost",
            b"localhost:8080",
            b"sandbox.localhost",
            b"sandbox.localhost.",
            b"SANDBOX.LOCALHOST:8080",
            b"[::1]:8080",
            b"[9f83e711-80.sandbox.localhost]",
            b"9f83e711-80.sandbox.localhost.evil.com",
            b"9f83e711-80.xsandbox.localhost",
            b"9f83e711-80sandbox.localhost",
            b"example.com",
            b":",
            b":::::",
            b"\xff\xfe",
            "例え.jp".as_bytes(),
        ] {
            assert_eq!(
                classify_host(host, D),
                HostKind::Api,
                "{}",
                String::from_utf8_lossy(host)
            );
        }
    }

    #[test]
    fn malformed_names_under_the_domain_are_never_the_api() {
        for host in [
            &b".sandbox.localhost"[..],
            b"9f83e711.sandbox.localhost",
            b"9f83e711-.sandbox.localhost",
            b"-8080.sandbox.localhost",
            b"9f83e71-8080.sandbox.localhost",
            b"9f83e7111-8080.sandbox.localhost",
            b"9f83e71g-8080.sandbox.localhost",
            b"9f83e711-0.sandbox.localhost",
            b"9f83e711-08080.sandbox.localhost",
            b"9f83e711-65536.sandbox.localhost",
            b"9f83e711-123456.sandbox.localhost",
            b"9f83e711-80-1.sandbox.localhost",
            b"9f83e711-+80.sandbox.localhost",
            b"x.9f83e711-8080.sandbox.localhost",
            b"9f83e711-8080.x.sandbox.localhost",
            b"..sandbox.localhost",
            "9f83e711-８０.sandbox.localhost".as_bytes(),
            "é9f83e711-80.sandbox.localhost".as_bytes(),
            b"9f83e711-80\xff.sandbox.localhost",
        ] {
            assert_eq!(
                classify_host(host, D),
                HostKind::Invalid,
                "{}",
                String::from_utf8_lossy(host)
            );
        }
    }
}
