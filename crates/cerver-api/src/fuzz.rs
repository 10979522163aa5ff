//! Property tests (proptest, stable Rust) for the API's parsers of untrusted input: request
//! bodies through the JSON extractor, Host-header routing, SSE framing, the request-id filter
//! (pids and the UTF-8 stream decoder: `cerver-control/tests/fuzz_inputs.rs`). Short by default (proptest's 256 cases,
//! or `PROPTEST_CASES`); the README gives the longer run.

use proptest::prelude::*;

use crate::proxy::{HostKind, classify_host};

/// Arbitrary JSON values, nested a few levels.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("code".to_string()),
                    Just("envs".to_string()),
                    Just("path".to_string()),
                    Just("timeout".to_string()),
                    Just("engine".to_string()),
                    ".{0,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every request body type: parsing never panics and fails only with 400 or 422.
fn parses_or_4xx(bytes: &[u8]) {
    use cerver_types as t;
    fn one<T: serde::de::DeserializeOwned>(bytes: &[u8]) {
        if let Err(e) = crate::extract::parse::<T>(bytes) {
            assert!(
                e.status == 400 || e.status == 422,
                "{} for {:?}",
                e.status,
                String::from_utf8_lossy(bytes)
            );
        }
    }
    one::<t::CreateSandboxRequest>(bytes);
    one::<t::RunRequest>(bytes);
    one::<t::WriteFileRequest>(bytes);
    one::<t::SetTimeoutRequest>(bytes);
    one::<t::InstallRequest>(bytes);
    one::<t::EmailRequest>(bytes);
}

proptest! {
    #[test]
    fn bodies_of_any_bytes_are_4xx_or_parsed(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        parses_or_4xx(&bytes);
    }

    #[test]
    fn bodies_of_any_json_are_4xx_or_parsed(v in json_value()) {
        parses_or_4xx(v.to_string().as_bytes());
    }

    /// A routed host always names a well-formed label-port, and the name it was built from
    /// routes back to the same place.
    #[test]
    fn host_routing_yields_well_formed_label_ports(host in prop::collection::vec(any::<u8>(), 0..80)) {
        if let HostKind::Sandbox { label, port } = classify_host(&host, "sandbox.localhost") {
            prop_assert_eq!(label.len(), cerver_control::ports::LABEL_LEN);
            prop_assert!(label.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            prop_assert!(port > 0);
            let again = format!("{label}-{port}.sandbox.localhost");
            prop_assert_eq!(classify_host(again.as_bytes(), "sandbox.localhost"), HostKind::Sandbox { label, port });
        }
    }

    #[test]
    fn built_host_names_route_to_their_sandbox(
        label in "[0-9a-fA-F]{8}",
        port in 1u16..,
        suffix in prop_oneof![Just(""), Just("."), Just(":8080"), Just(".:443")],
    ) {
        let host = format!("{label}-{port}.Sandbox.Localhost{suffix}");
        prop_assert_eq!(
            classify_host(host.as_bytes(), "sandbox.localhost"),
            HostKind::Sandbox { label: label.to_ascii_lowercase(), port }
        );
    }

    /// An SSE event's data is one line of JSON whatever the output holds, so output can
    /// never end an event early or forge another one.
    #[test]
    fn sse_event_data_is_a_single_line(data in ".{0,64}", stderr in any::<bool>()) {
        let ev = if stderr {
            cerver_types::StreamEvent::Stderr { data: data.clone() }
        } else {
            cerver_types::StreamEvent::Stdout { data: data.clone() }
        };
        let line = serde_json::to_string(&ev).unwrap();
        prop_assert!(!line.contains(['\n', '\r']));
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        prop_assert_eq!(back["data"].as_str(), Some(data.as_str()));
    }

    /// Client request ids reach logs and headers only when harmless.
    #[test]
    fn request_ids_are_kept_only_when_harmless(s in ".{0,80}") {
        let v = axum::http::HeaderValue::from_str(&s).ok();
        let id = crate::request_id::pick(v.as_ref());
        prop_assert!(crate::request_id::is_well_formed(&id));
        if id == s {
            prop_assert!(s.len() <= crate::request_id::MAX_LEN);
        }
    }
}
