//! Property tests (proptest) for the control plane's parsers of untrusted input: package
//! specs, port tokens, the `[ports]` settings, host labels, pids in paths and the UTF-8 stream
//! decoder of run output. Short by default; see the
//! README for a long run.

use cerver_control::packages;
use cerver_control::ports::{LABEL_LEN, PortConfig, PortTokens, host_label};
use proptest::prelude::*;

proptest! {
    /// Package specs: never a panic; what is accepted is bounded and carries nothing an
    /// installer would read as an option, a URL, a path or shell syntax.
    #[test]
    fn package_specs_accepted_are_plain_requirements(
        packages in prop_oneof![".{0,80}", "[a-zA-Z0-9._\\-\\[\\],<>=!~*+ ]{0,80}"],
        package in proptest::option::of("[a-z0-9=<>.\\-]{0,20}"),
    ) {
        if let Ok(reqs) = packages::parse(Some(&packages), package.as_deref()) {
            prop_assert!(!reqs.is_empty() && reqs.len() <= packages::MAX_PACKAGES);
            for r in reqs {
                prop_assert!(!r.starts_with('-'), "{r}");
                prop_assert!(!r.contains(['/', ':', '@', ';', '$', '`', '\n', ' ', '\\']), "{r}");
            }
        }
    }

    /// Port tokens: the minted token verifies for its sandbox and port only; no other
    /// string does, and any input is answered without a panic.
    #[test]
    fn port_tokens_verify_only_their_own(
        secret in prop::collection::vec(any::<u8>(), 1..64),
        id in "[0-9a-f-]{36}",
        port in 1u16..,
        other in ".{0,80}",
    ) {
        let tokens = PortTokens::new(&secret);
        let token = tokens.token(&id, port);
        prop_assert!(tokens.verify(&id, port, &token));
        prop_assert!(!tokens.verify(&id, port.wrapping_add(1).max(1), &token) || port == u16::MAX);
        prop_assert_eq!(tokens.verify(&id, port, &other), other == token);
    }

    /// The `[ports]` settings: anything is answered without a panic; an accepted domain
    /// makes host names that are lower case, dot-separated labels.
    #[test]
    fn port_settings_are_checked(
        domain in prop_oneof![".{0,40}", "[a-zA-Z0-9.\\-]{0,40}"],
        scheme in prop_oneof![Just("http".to_string()), Just("HTTPS".to_string()), ".{0,6}"],
        public_port in proptest::option::of(any::<u16>()),
    ) {
        let cfg = PortConfig { domain, scheme, public_port, tokens: None };
        if let Ok(cfg) = cfg.validated() {
            prop_assert!(cfg.scheme == "http" || cfg.scheme == "https");
            prop_assert!(cfg.public_port != Some(0));
            let host = cfg.host("0123abcd", 8080);
            prop_assert!(host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'), "{host}");
            prop_assert!(!host.ends_with('.') && !host.contains(".."), "{host}");
        }
    }

    /// A label is at most LABEL_LEN lower-case hex characters, whatever the id.
    #[test]
    fn host_labels_are_short_lower_hex(id in ".{0,64}") {
        let label = host_label(&id);
        prop_assert!(label.len() <= LABEL_LEN);
        prop_assert!(label.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{label}");
    }

    /// A pid parses exactly when it is a positive decimal i32, and round-trips.
    #[test]
    fn pids_are_canonical_positive_integers(s in prop_oneof!["[0-9]{1,12}", ".{0,12}", "-?[0-9]{1,4}"]) {
        match cerver_control::ops::processes::parse_pid(&s) {
            Ok(pid) => {
                prop_assert!(pid > 0);
                prop_assert_eq!(pid.to_string(), s);
            }
            Err(e) => {
                let refused = matches!(e, cerver_control::ControlError::Invalid { code: "invalid_pid", .. });
                prop_assert!(refused, "unexpected error for {:?}", s);
            }
        }
    }

    /// However the output is cut into reads, the decoded text is the lossy decoding of it all.
    #[test]
    fn utf8_stream_is_independent_of_chunking(
        text in ".{0,64}",
        noise in prop::collection::vec(any::<u8>(), 0..16),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut bytes = text.into_bytes();
        bytes.extend(noise);
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut d = cerver_control::stream::Utf8Stream::default();
        let (mut out, mut from) = (String::new(), 0);
        for cut in at.into_iter().chain([bytes.len()]) {
            out.push_str(&d.push(&bytes[from..cut]));
            from = cut;
        }
        out.push_str(&d.finish());
        prop_assert_eq!(out, String::from_utf8_lossy(&bytes).into_owned());
    }
}
