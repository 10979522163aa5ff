//! Package requirements for `POST /sandbox/:id/install`: each item must be a plain PEP 508
//! requirement (name, extras, version specifiers). Installer options, URLs, paths and shell
//! syntax are refused before anything reaches an installer.

use std::str::FromStr;

use pep508_rs::{Requirement, VersionOrUrl};

use crate::ControlError;

/// Most requirements in one install.
pub const MAX_PACKAGES: usize = 50;
/// Longest single requirement.
pub const MAX_REQUIREMENT: usize = 200;

/// File endings pip takes for a local archive or wheel.
const ARCHIVE_SUFFIXES: [&str; 9] = [
    ".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz",
];

fn bad(item: &str, why: &str) -> ControlError {
    let shown: String = item.chars().take(64).collect();
    ControlError::BadRequest(format!("invalid package {shown:?}: {why}"))
}

/// Parses `packages` (whitespace-separated) and/or `package` into normalized requirements.
pub fn parse(packages: Option<&str>, package: Option<&str>) -> Result<Vec<String>, ControlError> {
    let items: Vec<&str> = packages
        .into_iter()
        .chain(package)
        .flat_map(str::split_whitespace)
        .collect();
    if items.is_empty() {
        return Err(ControlError::BadRequest(
            "give `packages` (e.g. \"pandas numpy\") or `package` (e.g. \"six\")".into(),
        ));
    }
    if items.len() > MAX_PACKAGES {
        return Err(ControlError::BadRequest(format!(
            "at most {MAX_PACKAGES} packages per install"
        )));
    }
    items.into_iter().map(parse_one).collect()
}

fn parse_one(item: &str) -> Result<String, ControlError> {
    if item.len() > MAX_REQUIREMENT {
        return Err(bad(item, "too long"));
    }
    if item.starts_with('-') {
        return Err(bad(item, "installer options are not allowed"));
    }
    // Only what a name, extras and version specifiers use: no URLs, paths, markers or shell.
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-[],<>=!~*+".contains(c);
    if let Some(c) = item.chars().find(|c| !allowed(*c)) {
        return Err(bad(
            item,
            &format!("character {c:?} is not allowed in a requirement"),
        ));
    }
    // PEP 508: a name starts and ends with a letter or digit. Checked here because
    // `pep508_rs` 0.9 panics on a name that ends in `.`, `_` or `-` (found by
    // tests/fuzz_inputs.rs: `"9_"`, `"a_]a"`).
    let name_end = item
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .unwrap_or(item.len());
    let name = &item[..name_end];
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Err(bad(
            item,
            "a package name starts and ends with a letter or digit",
        ));
    }
    let req: Requirement =
        Requirement::from_str(item).map_err(|e| bad(item, &e.message.to_string()))?;
    // A version's local label may spell an archive's name (`x==1.0+a.tar.gz`), which pip
    // would take for a file to install: refused, whatever the host's pip does with it (it
    // runs in an empty scratch directory as well).
    let lower = item.to_ascii_lowercase();
    if ARCHIVE_SUFFIXES.iter().any(|s| lower.ends_with(s)) {
        return Err(bad(item, "a requirement may not name a file"));
    }
    if let Some(VersionOrUrl::Url(_)) = req.version_or_url {
        return Err(bad(item, "URLs are not allowed"));
    }
    Ok(req.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_ending_in_punctuation_are_refused_not_a_panic() {
        for item in ["9_", "a.", "six-", "a_==1", "x-[y]", "a_]a"] {
            assert!(super::parse(Some(item), None).is_err(), "{item}");
        }
        assert!(super::parse(Some("a_b==1.0 six"), None).is_ok());
    }

    use super::parse;

    #[test]
    fn accepts_plain_requirements() {
        let got = parse(Some("pandas  numpy==1.26.4"), Some("requests[socks]>=2,<3")).unwrap();
        assert_eq!(got, ["pandas", "numpy==1.26.4", "requests[socks]>=2,<3"]);
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "-r",
            "--index-url=http://x",
            "git+https://github.com/x/y",
            "./local",
            "/abs/path",
            "x;rm",
            "x|y",
            "$(id)",
            "`id`",
            "pkg@https://x/y.whl",
            "a>>b",
            "",
            "x==1.0;python_version<'3'",
            "pkg\\..\\x",
            "~=1",
            "x==1.0+a.tar.gz",
            "x==1.0+a.whl",
            "x==1.0+local.ZIP",
            "foo.whl",
        ] {
            assert!(
                parse(Some(bad), None).is_err() || bad.is_empty(),
                "{bad:?} accepted"
            );
        }
        assert!(parse(None, None).is_err());
        assert!(parse(Some(&"a ".repeat(51)), None).is_err());
        assert!(parse(Some(&"a".repeat(201)), None).is_err());
    }
}
