//! Port exposure: the public name of a sandbox's port (`<label>-<port>.<domain>`), its URL and,
//! when the operator requires them, the access tokens that unlock it.
//!
//! A sandbox's *label* is the first 8 hex characters of its id; the registry keeps labels unique
//! among live sandboxes, so a label names at most one sandbox.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Hex characters of a sandbox id that make its label.
pub const LABEL_LEN: usize = 8;
/// Bytes of the HMAC kept in a port token (128 bits, as hex).
const TOKEN_BYTES: usize = 16;
/// The per-server secret under which port tokens are computed, in the data dir.
pub const TOKEN_SECRET_FILE: &str = "port-token.secret";

/// How exposed ports are named and reached from outside.
#[derive(Clone, Debug)]
pub struct PortConfig {
    /// Domain under which sandbox hosts live (lower case, no trailing dot).
    pub domain: String,
    /// Scheme of the public URLs (`http` or `https`).
    pub scheme: String,
    /// Port of the public URLs; `None` or the scheme's default leaves it out of the URL.
    pub public_port: Option<u16>,
    /// When set, every exposed port needs its access token.
    pub tokens: Option<PortTokens>,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            domain: "sandbox.localhost".into(),
            scheme: "http".into(),
            public_port: None,
            tokens: None,
        }
    }
}

/// A port's public address, as `GET /sandbox/:id/host` answers it.
#[derive(Clone, Debug)]
pub struct Exposure {
    pub sandbox_id: String,
    pub port: u16,
    /// `<label>-<port>.<domain>`.
    pub host: String,
    /// `<scheme>://<host>[:<public port>]/`, with `?cerver_token=...` when tokens are required.
    pub url: String,
}

/// The query parameter that carries a port token.
pub const TOKEN_PARAM: &str = "cerver_token";

impl PortConfig {
    /// Checks and normalises the operator's settings (lower-case domain without trailing dot).
    pub fn validated(mut self) -> Result<PortConfig, String> {
        self.domain = self.domain.trim_end_matches('.').to_ascii_lowercase();
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if self.domain.is_empty()
            || self.domain.len() > 200
            || !self.domain.split('.').all(valid_label)
        {
            return Err(format!("invalid sandbox domain {:?}", self.domain));
        }
        self.scheme = self.scheme.to_ascii_lowercase();
        if self.scheme != "http" && self.scheme != "https" {
            return Err(format!(
                "invalid public scheme {:?}: use http or https",
                self.scheme
            ));
        }
        if self.public_port == Some(0) {
            return Err("the public port must be from 1 to 65535".into());
        }
        Ok(self)
    }

    /// `<label>-<port>.<domain>`.
    pub fn host(&self, label: &str, port: u16) -> String {
        format!("{label}-{port}.{}", self.domain)
    }

    /// The public URL of `host` (the port left out when it is the scheme's default).
    pub fn url(&self, host: &str) -> String {
        let default = if self.scheme == "https" { 443 } else { 80 };
        match self.public_port {
            Some(p) if p != default => format!("{}://{host}:{p}/", self.scheme),
            _ => format!("{}://{host}/", self.scheme),
        }
    }

    /// The public address of a sandbox's port, with its token when tokens are required.
    pub fn exposure(&self, sandbox_id: &str, port: u16) -> Exposure {
        let label = host_label(sandbox_id);
        let host = self.host(&label, port);
        let mut url = self.url(&host);
        if let Some(tokens) = &self.tokens {
            url.push_str(&format!(
                "?{TOKEN_PARAM}={}",
                tokens.token(sandbox_id, port)
            ));
        }
        Exposure {
            sandbox_id: sandbox_id.to_string(),
            port,
            host,
            url,
        }
    }
}

/// The label of a sandbox id: its first [`LABEL_LEN`] hex characters, lower case.
pub fn host_label(id: &str) -> String {
    id.chars()
        .filter(char::is_ascii_hexdigit)
        .take(LABEL_LEN)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Port access tokens: HMAC-SHA-256 of `<sandbox id>:<port>` under a per-server secret, so that a
/// token opens one port of one sandbox and the server stores nothing per token. The full id,
/// not the label, is signed: a label is only 32 bits and comes back with later sandboxes,
/// whose ports an old token must not open.
#[derive(Clone)]
pub struct PortTokens {
    secret: Vec<u8>,
}

impl std::fmt::Debug for PortTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PortTokens(..)")
    }
}

impl PortTokens {
    pub fn new(secret: &[u8]) -> PortTokens {
        PortTokens {
            secret: secret.to_vec(),
        }
    }

    /// Reads the server's secret from `<data_dir>/port-token.secret`, creating it (mode 0600,
    /// ~190 random bits from the OS) on first use.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<PortTokens> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = data_dir.join(TOKEN_SECRET_FILE);
        match std::fs::read_to_string(&path) {
            Ok(s) if s.trim().len() >= 32 => return Ok(PortTokens::new(s.trim().as_bytes())),
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is too short to be a secret", path.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let secret = cerver_store::keys::generate_secret().token;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(secret.as_bytes())?;
        f.sync_all()?;
        Ok(PortTokens::new(secret.as_bytes()))
    }

    fn mac(&self, sandbox_id: &str, port: u16) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key");
        mac.update(format!("{sandbox_id}:{port}").as_bytes());
        mac
    }

    /// The token of `port` of the sandbox `sandbox_id` (32 hex characters).
    pub fn token(&self, sandbox_id: &str, port: u16) -> String {
        hex::encode(&self.mac(sandbox_id, port).finalize().into_bytes()[..TOKEN_BYTES])
    }

    /// Whether `token` opens `port` of the sandbox `sandbox_id` (compared in constant time).
    pub fn verify(&self, sandbox_id: &str, port: u16, token: &str) -> bool {
        match hex::decode(token) {
            Ok(bytes) if bytes.len() == TOKEN_BYTES => self
                .mac(sandbox_id, port)
                .verify_truncated_left(&bytes)
                .is_ok(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_first_hex_characters() {
        assert_eq!(
            host_label("9F83E711-1234-4abc-8def-000000000000"),
            "9f83e711"
        );
        assert_eq!(host_label("abc-123"), "abc123");
    }

    #[test]
    fn urls_leave_out_default_ports() {
        let mut c = PortConfig::default();
        assert_eq!(
            c.url("a-1.sandbox.localhost"),
            "http://a-1.sandbox.localhost/"
        );
        c.public_port = Some(8080);
        assert_eq!(
            c.url("a-1.sandbox.localhost"),
            "http://a-1.sandbox.localhost:8080/"
        );
        c.public_port = Some(80);
        assert_eq!(
            c.url("a-1.sandbox.localhost"),
            "http://a-1.sandbox.localhost/"
        );
        c.scheme = "https".into();
        assert_eq!(
            c.url("a-1.sandbox.localhost"),
            "https://a-1.sandbox.localhost:80/"
        );
        c.public_port = Some(443);
        assert_eq!(
            c.url("a-1.sandbox.localhost"),
            "https://a-1.sandbox.localhost/"
        );
    }

    #[test]
    fn config_is_normalised_and_checked() {
        let c = PortConfig {
            domain: "Sandbox.Example.COM.".into(),
            scheme: "HTTPS".into(),
            ..Default::default()
        }
        .validated()
        .unwrap();
        assert_eq!(
            (c.domain.as_str(), c.scheme.as_str()),
            ("sandbox.example.com", "https")
        );
        for bad in ["", ".", "a..b", "-a.b", "a b", "é.com"] {
            let c = PortConfig {
                domain: bad.into(),
                ..Default::default()
            };
            assert!(c.validated().is_err(), "{bad:?}");
        }
        let c = PortConfig {
            scheme: "ftp".into(),
            ..Default::default()
        };
        assert!(c.validated().is_err());
    }

    #[test]
    fn tokens_open_one_port_of_one_sandbox() {
        let t = PortTokens::new(b"0123456789abcdef0123456789abcdef");
        let id = "9f83e711-1234-4abc-8def-000000000000";
        let tok = t.token(id, 8080);
        assert_eq!(tok.len(), 32);
        assert!(t.verify(id, 8080, &tok));
        assert!(!t.verify(id, 8081, &tok));
        assert!(!t.verify("9f83e712-1234-4abc-8def-000000000000", 8080, &tok));
        assert!(!t.verify(id, 8080, &tok[..30]));
        assert!(!t.verify(id, 8080, "not hex"));
        let other = PortTokens::new(b"another secret, another server!!");
        assert!(!other.verify(id, 8080, &tok));
    }

    #[test]
    fn a_later_sandbox_with_the_same_label_needs_its_own_token() {
        let t = PortTokens::new(b"0123456789abcdef0123456789abcdef");
        let old = "9f83e711-1234-4abc-8def-000000000000";
        let new = "9f83e711-ffff-4abc-8def-000000000001";
        assert_eq!(host_label(old), host_label(new));
        let tok = t.token(old, 8080);
        assert!(!t.verify(new, 8080, &tok));
        assert_ne!(t.token(new, 8080), tok);
    }

    #[test]
    fn the_secret_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = PortTokens::load_or_create(dir.path()).unwrap();
        let b = PortTokens::load_or_create(dir.path()).unwrap();
        assert_eq!(a.token("abcdef01", 1), b.token("abcdef01", 1));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(TOKEN_SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
