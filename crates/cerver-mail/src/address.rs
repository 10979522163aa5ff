//! The only way an email address from a user gets in. Checks run cheapest first, so that a
//! hostile megabyte is refused before any parser sees it, and a rejection never quotes the
//! input (it may contain anything, including a forged log line).

use lettre::Address;

use crate::MailError;

/// Longest accepted address: the 254 bytes that fit in an SMTP path (RFC 5321 §4.5.3.1.3).
pub const MAX_EMAIL_BYTES: usize = 254;
/// Longest local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_PART_BYTES: usize = 64;

/// Parses an email address typed by a user (sign-up, login).
///
/// Refused: more than [`MAX_EMAIL_BYTES`] bytes, any control character (CR/LF header
/// injection), whitespace, non-ASCII (an international domain must be given in its `xn--`
/// form), quoted local parts, a local part over 64 bytes, and anything lettre's parser
/// refuses. The input is not trimmed or case-folded: callers decide that.
pub fn parse_email(s: &str) -> Result<Address, MailError> {
    if s.len() > MAX_EMAIL_BYTES {
        return Err(MailError::InvalidAddress("longer than 254 bytes"));
    }
    if s.is_empty() {
        return Err(MailError::InvalidAddress("empty"));
    }
    if s.chars().any(char::is_control) {
        return Err(MailError::InvalidAddress("contains a control character"));
    }
    if !s.is_ascii() {
        return Err(MailError::InvalidAddress("contains a non-ASCII character"));
    }
    if s.bytes()
        .any(|b| b.is_ascii_whitespace() || b == b'"' || b == b'\\')
    {
        return Err(MailError::InvalidAddress(
            "contains whitespace, a quote or a backslash",
        ));
    }
    let Some((local, _domain)) = s.rsplit_once('@') else {
        return Err(MailError::InvalidAddress("has no @"));
    };
    if local.len() > MAX_LOCAL_PART_BYTES {
        return Err(MailError::InvalidAddress(
            "has a local part longer than 64 bytes",
        ));
    }
    s.parse::<Address>()
        .map_err(|_| MailError::InvalidAddress("is not of the form name@domain"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses() {
        for s in [
            "ada@example.com",
            "a.b+tag@sub.example.co.uk",
            "x_y-z@example.io",
            "user@localhost",
            "user@[127.0.0.1]",
            "user@xn--bcher-kva.example",
        ] {
            let address = parse_email(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(address.to_string(), s);
        }
    }

    #[test]
    fn rejects_header_injection() {
        for s in [
            "a@b\r\nBcc: x@y",
            "a@b.com\nBcc: x@y.com",
            "a@b.com\r",
            "a\0@b.com",
            "a@b.com\u{85}",
        ] {
            assert!(
                matches!(parse_email(s), Err(MailError::InvalidAddress(_))),
                "{s:?} accepted"
            );
        }
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "no-at-sign",
            "@example.com",
            "user@",
            "a@b@c.com",
            "user @example.com",
            " user@example.com",
            "user@exa mple.com",
            "\"quoted user\"@example.com",
            "\"a\\\"b\"@example.com",
            "user@-example.com",
            "user@example..com",
            "us..er@example.com",
            "Ada <ada@example.com>",
            "ada@example.com, eve@example.com",
            "ada@bücher.example",
            "üser@example.com",
        ] {
            assert!(
                matches!(parse_email(s), Err(MailError::InvalidAddress(_))),
                "{s:?} accepted"
            );
        }
    }

    #[test]
    fn rejects_over_long_input() {
        let long = format!("{}@example.com", "a".repeat(300));
        assert_eq!(
            parse_email(&long).unwrap_err().to_string(),
            "invalid email address: longer than 254 bytes"
        );
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(parse_email(&long_local).is_err());
        let long_domain = format!("a@{}.com", "b".repeat(250));
        assert!(parse_email(&long_domain).is_err());
        // Exactly at the limits is fine.
        let local = "a".repeat(64);
        let label = "b".repeat(63);
        let edge = format!("{local}@{label}.{label}.{}.com", "c".repeat(57));
        assert_eq!(edge.len(), 254);
        parse_email(&edge).unwrap();
    }

    #[test]
    fn errors_never_quote_the_input() {
        let err = parse_email("evil\r\n@x").unwrap_err().to_string();
        assert!(!err.contains("evil"), "{err}");
    }
}
