//! Black-box tests of `cerver-mail`: the spool on a real temporary directory, SMTP against a
//! real (minimal) SMTP server on 127.0.0.1 started by the test itself.

mod sink;
mod smtp;
mod spool;

use cerver_mail::{MailError, parse_email};

/// Parses a whole RFC 5322 message the way a mail client would.
fn parse(raw: &[u8]) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default()
        .parse(raw)
        .expect("a parseable RFC 5322 message")
}

#[test]
fn invalid_addresses_are_rejected() {
    let long = format!("{}@example.com", "a".repeat(300));
    for input in ["a@b\r\nBcc: x@y", "no-at-sign", long.as_str(), "", "a@b\nc"] {
        let result = parse_email(input);
        assert!(
            matches!(result, Err(MailError::InvalidAddress(_))),
            "{input:?} gave {result:?}"
        );
    }
    assert_eq!(
        parse_email("ada@example.com").unwrap().domain(),
        "example.com"
    );
}
