//! The policy's consistency rules: every name known, every entry with a reason, no refused
//! syscall allowed, no syscall both allowed and answered ENOSYS, no entry voiding another.
//! All errors are collected, so one build shows every mistake of the file.

use std::collections::{BTreeMap, BTreeSet};

use crate::policy::{CheckedCond, Policy};

/// What the allow-list allows for one syscall.
#[derive(Debug, PartialEq)]
pub enum Rule {
    /// Every call.
    Unconditional,
    /// Calls matching one of these condition sets (each set AND-ed).
    Conditions(Vec<Vec<CheckedCond>>),
}

/// A policy that passed every check.
#[derive(Debug)]
pub struct Checked<'p> {
    pub allowed: BTreeMap<&'p str, Rule>,
    pub enosys: BTreeSet<&'p str>,
}

pub fn check<'p>(policy: &'p Policy, known: &BTreeSet<&str>) -> Result<Checked<'p>, Vec<String>> {
    let mut errors = Vec::new();
    let refused = check_refused(policy, known, &mut errors);
    let allowed = check_allowed(policy, known, &refused, &mut errors);
    let enosys = check_enosys(policy, known, &allowed, &refused, &mut errors);
    if errors.is_empty() {
        Ok(Checked { allowed, enosys })
    } else {
        Err(errors)
    }
}

fn check_entry(list: &str, name: &str, reason: &str, known: &BTreeSet<&str>) -> Vec<String> {
    let mut errors = Vec::new();
    if !known.contains(name) {
        errors.push(format!("{list}: unknown syscall {name:?}"));
    }
    if reason.trim().is_empty() {
        errors.push(format!("{list}: {name}: empty reason"));
    }
    errors
}

fn check_refused<'p>(
    policy: &'p Policy,
    known: &BTreeSet<&str>,
    errors: &mut Vec<String>,
) -> BTreeSet<&'p str> {
    let mut refused = BTreeSet::new();
    for r in &policy.refused {
        let name = r.syscall.as_str();
        errors.extend(check_entry("refused", name, &r.reason, known));
        if !refused.insert(name) {
            errors.push(format!("refused: {name} is listed twice"));
        }
    }
    refused
}

fn check_allowed<'p>(
    policy: &'p Policy,
    known: &BTreeSet<&str>,
    refused: &BTreeSet<&str>,
    errors: &mut Vec<String>,
) -> BTreeMap<&'p str, Rule> {
    let mut allowed: BTreeMap<&str, Rule> = BTreeMap::new();
    for a in &policy.syscalls {
        let name = a.syscall.as_str();
        let entry_errors = check_entry("syscalls", name, &a.reason, known);
        let unknown = !known.contains(name);
        errors.extend(entry_errors);
        if unknown {
            continue;
        }
        let conds = match a
            .args
            .iter()
            .map(|c| c.check())
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("syscalls: {name}: {e}"));
                continue;
            }
        };
        if refused.contains(name) {
            errors.push(format!(
                "syscalls: {name} is in the `refused` list and must not be allowed"
            ));
        }
        // Mixing an unconditional entry with conditional ones would silently void the conditions.
        match (allowed.get_mut(name), conds.is_empty()) {
            (None, true) => drop(allowed.insert(name, Rule::Unconditional)),
            (None, false) => drop(allowed.insert(name, Rule::Conditions(vec![conds]))),
            (Some(Rule::Conditions(list)), false) => list.push(conds),
            (Some(Rule::Unconditional), true) => {
                errors.push(format!("syscalls: {name} is allowed unconditionally twice"));
            }
            (Some(_), _) => errors.push(format!(
                "syscalls: {name} has both an unconditional entry and entries with conditions"
            )),
        }
    }
    allowed
}

fn check_enosys<'p>(
    policy: &'p Policy,
    known: &BTreeSet<&str>,
    allowed: &BTreeMap<&str, Rule>,
    refused: &BTreeSet<&str>,
    errors: &mut Vec<String>,
) -> BTreeSet<&'p str> {
    let mut names = BTreeSet::new();
    for e in &policy.enosys {
        let name = e.syscall.as_str();
        errors.extend(check_entry("enosys", name, &e.reason, known));
        if allowed.contains_key(name) {
            // The main filter must refuse it on its own, so that forgetting the clone3 filter
            // fails closed (EPERM) instead of open.
            errors.push(format!("enosys: {name} must not also be in the allow-list"));
        }
        if refused.contains(name) {
            errors.push(format!("enosys: {name} is also in `refused`; list it once"));
        }
        if !names.insert(name) {
            errors.push(format!("enosys: {name} is listed twice"));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(json: &str) -> Result<Vec<(String, Rule)>, Vec<String>> {
        let policy: Policy = serde_json::from_str(json).unwrap();
        let known: BTreeSet<&str> = ["read", "write", "clone3", "ptrace", "socket"].into();
        let checked = check(&policy, &known)?;
        Ok(checked
            .allowed
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect())
    }

    const COND: &str = r#"{"index":0,"type":"dword","op":"eq","val":2}"#;

    #[test]
    fn a_good_policy_passes() {
        let json = format!(
            r#"{{"syscalls":[{{"syscall":"read","reason":"r"}},
                {{"syscall":"socket","reason":"s","args":[{COND}]}},
                {{"syscall":"socket","reason":"s","args":[{COND},{COND}]}}],
              "enosys":[{{"syscall":"clone3","reason":"c"}}],
              "refused":[{{"syscall":"ptrace","reason":"p"}}]}}"#
        );
        let allowed = run(&json).unwrap();
        assert_eq!(allowed[0], ("read".into(), Rule::Unconditional));
        assert!(matches!(&allowed[1].1, Rule::Conditions(l) if l.len() == 2 && l[1].len() == 2));
    }

    #[test]
    fn every_mistake_is_reported() {
        let json = format!(
            r#"{{"syscalls":[{{"syscall":"reed","reason":"typo"}},
                {{"syscall":"write","reason":" "}},
                {{"syscall":"ptrace","reason":"no"}},
                {{"syscall":"read","reason":"a"}}, {{"syscall":"read","reason":"b"}},
                {{"syscall":"socket","reason":"s"}},
                {{"syscall":"socket","reason":"s","args":[{COND}]}},
                {{"syscall":"clone3","reason":"x"}}],
              "enosys":[{{"syscall":"clone3","reason":"c"}}, {{"syscall":"ptrace","reason":"p"}}],
              "refused":[{{"syscall":"ptrace","reason":"p"}}, {{"syscall":"ptrace","reason":"p"}}]}}"#
        );
        let errors = run(&json).unwrap_err().join("\n");
        for want in [
            "syscalls: unknown syscall \"reed\"",
            "syscalls: write: empty reason",
            "syscalls: ptrace is in the `refused` list",
            "syscalls: read is allowed unconditionally twice",
            "syscalls: socket has both an unconditional entry and entries with conditions",
            "enosys: clone3 must not also be in the allow-list",
            "enosys: ptrace is also in `refused`",
            "refused: ptrace is listed twice",
        ] {
            assert!(errors.contains(want), "missing {want:?} in:\n{errors}");
        }
    }

    #[test]
    fn zygote_only_is_no_longer_part_of_the_format() {
        let json =
            r#"{"syscalls":[{"syscall":"read","reason":"r","zygote_only":true}],"refused":[]}"#;
        assert!(serde_json::from_str::<Policy>(json).is_err());
    }
}
