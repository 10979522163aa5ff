//! Property tests (proptest) for the workspace path rules: whatever a client sends, an
//! accepted path stays inside the workspace. Short by default; see the README for a long run.

use cerver_runtime::files::workspace_path;
use proptest::prelude::*;

/// Paths built from the pieces that matter (`..`, `.`, empty segments, the workspace prefix)
/// and arbitrary text.
fn path() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just(String::new()),
        Just("home".to_string()),
        Just("user".to_string()),
        "[a-z]{1,4}",
        ".{0,6}",
    ];
    (
        prop_oneof![
            Just(""),
            Just("/"),
            Just("/home/user"),
            Just("/home/user/"),
            Just("/home/")
        ],
        prop::collection::vec(part, 0..8),
    )
        .prop_map(|(start, parts)| format!("{start}{}", parts.join("/")))
}

/// Resolves `rel` under `/home/user` lexically, as the kernel would without symlinks.
fn resolve(rel: &str) -> Option<Vec<String>> {
    let mut at = vec!["home".to_string(), "user".to_string()];
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                at.pop()?;
            }
            p => at.push(p.to_string()),
        }
    }
    Some(at)
}

proptest! {
    #[test]
    fn accepted_paths_never_leave_the_workspace(p in path(), allow_root in any::<bool>()) {
        if let Ok(rel) = workspace_path(&p, allow_root) {
            prop_assert!(!rel.starts_with('/'), "{rel:?}");
            prop_assert!(!rel.contains('\0'));
            prop_assert!(rel.split('/').all(|s| s != ".." && s != "."), "{rel:?}");
            prop_assert!(rel.is_empty() || rel.split('/').all(|s| !s.is_empty()), "{rel:?}");
            prop_assert!(allow_root || !rel.is_empty());
            let inside = resolve(&rel).unwrap();
            prop_assert!(inside.len() >= 2 && inside[0] == "home" && inside[1] == "user");
            // Normalizing is idempotent.
            if !rel.is_empty() {
                prop_assert_eq!(workspace_path(&rel, allow_root).ok(), Some(rel.clone()));
            }
        }
    }

    #[test]
    fn any_string_is_answered_without_panicking(p in ".{0,300}", allow_root in any::<bool>()) {
        let _ = workspace_path(&p, allow_root);
    }

    /// A path that resolves inside the workspace is accepted (relative ones, at least): the
    /// rules refuse only what escapes.
    #[test]
    fn relative_paths_inside_are_accepted(parts in prop::collection::vec(prop_oneof![Just(".."), Just("."), Just("a"), Just("b")], 1..8)) {
        let p = parts.join("/");
        let mut depth = 0i32;
        let mut escapes = false;
        for part in &parts {
            match *part {
                ".." => { depth -= 1; escapes |= depth < 0; }
                "." => {}
                _ => depth += 1,
            }
        }
        let got = workspace_path(&p, true);
        prop_assert_eq!(got.is_err(), escapes, "{:?} -> {:?}", p, got);
    }
}
