//! What callers send, and how it becomes an RFC 5322 email.

use std::fmt;

use lettre::Address;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart};

use crate::MailError;

/// Longest accepted subject (headers stay well inside the 998-byte line limit).
pub const MAX_SUBJECT_BYTES: usize = 256;
/// Longest accepted body, text and HTML each.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// One email to one recipient. `Debug` shows the recipient, the subject and the body sizes,
/// never the bodies: they carry login links.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// The recipient; from user input only through [`crate::parse_email`].
    pub to: Address,
    /// One line, at most [`MAX_SUBJECT_BYTES`] bytes.
    pub subject: String,
    /// The plain-text body.
    pub text_body: String,
    /// An HTML alternative to the text body.
    pub html_body: Option<String>,
}

impl Message {
    /// Builds the lettre message: checks the bounds, then lets lettre encode the headers and
    /// pick a transfer encoding for the bodies.
    pub(crate) fn to_lettre(&self, from: &Mailbox) -> Result<lettre::Message, MailError> {
        if self.subject.len() > MAX_SUBJECT_BYTES {
            return Err(MailError::InvalidMessage(format!(
                "subject longer than {MAX_SUBJECT_BYTES} bytes"
            )));
        }
        if self.subject.chars().any(char::is_control) {
            return Err(MailError::InvalidMessage(
                "subject contains a control character".into(),
            ));
        }
        let html_len = self.html_body.as_ref().map_or(0, String::len);
        if self.text_body.len() > MAX_BODY_BYTES || html_len > MAX_BODY_BYTES {
            return Err(MailError::InvalidMessage(format!(
                "body longer than {MAX_BODY_BYTES} bytes"
            )));
        }
        let builder = lettre::Message::builder()
            .from(from.clone())
            .to(Mailbox::new(None, self.to.clone()))
            .subject(self.subject.as_str())
            // Random, under the sender's domain: lettre's default would reveal the host name.
            .message_id(Some(format!(
                "<{:032x}@{}>",
                rand::random::<u128>(),
                from.email.domain()
            )));
        let built = match &self.html_body {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                self.text_body.clone(),
                html.clone(),
            )),
            None => builder
                .header(ContentType::TEXT_PLAIN)
                .body(self.text_body.clone()),
        };
        built.map_err(|e| MailError::InvalidMessage(e.to_string()))
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("to", &self.to.to_string())
            .field("subject", &self.subject)
            .field("text_body_bytes", &self.text_body.len())
            .field("html_body_bytes", &self.html_body.as_ref().map(String::len))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_email;

    fn message(subject: &str) -> Message {
        Message {
            to: parse_email("ada@example.com").unwrap(),
            subject: subject.into(),
            text_body: "secret link https://x.example/t".into(),
            html_body: None,
        }
    }

    fn from() -> Mailbox {
        "Cerver <cerver@localhost>".parse().unwrap()
    }

    #[test]
    fn subject_cannot_inject_headers() {
        for subject in ["hi\r\nBcc: eve@example.com", "hi\nX: y", "hi\r"] {
            assert!(matches!(
                message(subject).to_lettre(&from()),
                Err(MailError::InvalidMessage(_))
            ));
        }
    }

    #[test]
    fn bounds() {
        assert!(
            message(&"s".repeat(MAX_SUBJECT_BYTES + 1))
                .to_lettre(&from())
                .is_err()
        );
        let mut big = message("hi");
        big.text_body = "x".repeat(MAX_BODY_BYTES + 1);
        assert!(big.to_lettre(&from()).is_err());
        let mut big_html = message("hi");
        big_html.html_body = Some("x".repeat(MAX_BODY_BYTES + 1));
        assert!(big_html.to_lettre(&from()).is_err());
    }

    #[test]
    fn headers() {
        let formatted = message("Hello").to_lettre(&from()).unwrap().formatted();
        let text = String::from_utf8(formatted).unwrap();
        assert!(text.contains("To: ada@example.com\r\n"), "{text}");
        assert!(text.contains("Subject: Hello\r\n"), "{text}");
        assert!(
            text.contains("From: Cerver <cerver@localhost>\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Type: text/plain"), "{text}");
        assert!(
            text.contains("@localhost>\r\n"),
            "Message-ID under the sender's domain: {text}"
        );
    }

    #[test]
    fn debug_hides_bodies() {
        let mut msg = message("Hello");
        msg.html_body = Some("<a href=\"https://x.example/t\">x</a>".into());
        let printed = format!("{msg:?}");
        assert!(!printed.contains("x.example"), "{printed}");
        assert!(printed.contains("ada@example.com"));
    }
}
