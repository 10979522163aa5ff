//! The spool directory: mail "sent" without an SMTP host. Each message is one `.eml` file
//! named `<unix-ms>-<random>.eml`, written under a hidden temporary name in the same directory
//! and renamed into place, so that a reader never sees half a message. Files are private to
//! the server's user (0600, directory 0700): they hold login links.
//!
//! Anyone who can ask for a sign-up can make the server spool a message, so the number of
//! files is bounded ([`MAX_SPOOLED_FILES`]).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{MailError, Message};

/// Most `.eml` files the spool may hold; past it, sending fails instead of filling the disk.
pub const MAX_SPOOLED_FILES: usize = 10_000;
/// Longest link copied into the log; a longer one is left out rather than cut.
const MAX_LOGGED_LINK_BYTES: usize = 2048;

pub(crate) struct Spool {
    dir: PathBuf,
}

impl Spool {
    pub(crate) fn open(dir: PathBuf) -> Result<Self, MailError> {
        create_dir(&dir).map_err(|error| MailError::Spool {
            dir: dir.clone(),
            error,
        })?;
        Ok(Spool { dir })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the message and logs where it went and the link it carries.
    pub(crate) async fn write(
        &self,
        email: &lettre::Message,
        msg: &Message,
    ) -> Result<PathBuf, MailError> {
        let bytes = email.formatted();
        let dir = self.dir.clone();
        let written = tokio::task::spawn_blocking(move || write_file(&dir, &bytes))
            .await
            .unwrap_or_else(|join| Err(Written::Io(io::Error::other(join.to_string()))));
        let path = match written {
            Ok(path) => path,
            Err(Written::Full) => {
                return Err(MailError::SpoolFull {
                    dir: self.dir.clone(),
                    limit: MAX_SPOOLED_FILES,
                });
            }
            Err(Written::Io(error)) => {
                return Err(MailError::Spool {
                    dir: self.dir.clone(),
                    error,
                });
            }
        };
        let file = path.display();
        match first_url(&msg.text_body).map(redacted) {
            // The link's token is a credential (it mints a key or a session): the log shows
            // where it leads, the spooled file holds it.
            Some(link) => tracing::info!(
                to = %msg.to, link, %file,
                "no SMTP host configured: mail written to the spool; open the link in the file"
            ),
            None => tracing::info!(
                to = %msg.to, %file,
                "no SMTP host configured: mail written to the spool"
            ),
        }
        Ok(path)
    }
}

enum Written {
    Full,
    Io(io::Error),
}

impl From<io::Error> for Written {
    fn from(error: io::Error) -> Self {
        Written::Io(error)
    }
}

fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn write_file(dir: &Path, bytes: &[u8]) -> Result<PathBuf, Written> {
    // Recreated if someone removed it while the server runs.
    create_dir(dir)?;
    let mut spooled = 0;
    for entry in fs::read_dir(dir)? {
        if entry?.file_name().as_encoded_bytes().ends_with(b".eml") {
            spooled += 1;
        }
    }
    if spooled >= MAX_SPOOLED_FILES {
        return Err(Written::Full);
    }

    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let name = format!("{unix_ms}-{:016x}.eml", rand::random::<u64>());
    let temp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(&name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, &path)
    })();
    if let Err(error) = result {
        let _ = fs::remove_file(&temp);
        return Err(error.into());
    }
    // Make the rename itself durable; the message is in place either way.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(path)
}

/// The first `http://` or `https://` link in `text`, for the log line. It stops at whitespace,
/// control characters and characters that delimit links in prose, drops trailing punctuation,
/// and gives up on links too long to be useful in a log.
pub(crate) fn first_url(text: &str) -> Option<&str> {
    let start = [text.find("https://"), text.find("http://")]
        .into_iter()
        .flatten()
        .min()?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | '\'' | '`')
        })
        .unwrap_or(rest.len());
    let url = rest[..end].trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']']);
    let scheme_only = !url
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .contains(|c: char| c.is_alphanumeric());
    (url.len() <= MAX_LOGGED_LINK_BYTES && !scheme_only).then_some(url)
}

/// `link` with every query value replaced by `<redacted>` (names kept).
pub(crate) fn redacted(link: &str) -> String {
    let Some((base, query)) = link.split_once('?') else {
        return link.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((name, _)) => format!("{name}=<redacted>"),
            None => p.to_string(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::{first_url, redacted};

    #[test]
    fn logged_links_lose_their_query_values() {
        assert_eq!(
            redacted("http://h:1/auth/verify-signup?token=abc123&x=1"),
            "http://h:1/auth/verify-signup?token=<redacted>&x=<redacted>"
        );
        assert_eq!(redacted("http://h/p"), "http://h/p");
    }

    #[test]
    fn finds_the_first_link() {
        assert_eq!(
            first_url("Open this:\n\nhttps://a.example/v?t=1&x=2\n\nhttp://b.example"),
            Some("https://a.example/v?t=1&x=2")
        );
        assert_eq!(
            first_url("see http://a.example/x, then https://b.example"),
            Some("http://a.example/x")
        );
        assert_eq!(
            first_url("(at https://a.example/p)."),
            Some("https://a.example/p")
        );
        assert_eq!(
            first_url("<https://a.example/p>"),
            Some("https://a.example/p")
        );
        assert_eq!(first_url("no link here"), None);
        assert_eq!(first_url("https:// nothing"), None);
    }

    #[test]
    fn stops_at_control_characters() {
        assert_eq!(
            first_url("https://a.example/x\u{1b}[31mred\r\nforged log line"),
            Some("https://a.example/x")
        );
    }

    #[test]
    fn skips_over_long_links() {
        let long = format!("https://a.example/{}", "x".repeat(3000));
        assert_eq!(first_url(&long), None);
    }
}
