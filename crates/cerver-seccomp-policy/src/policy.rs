//! The policy file's format (`policy/seccomp.json` of cerver-jail; its `comment` documents
//! it) and the checks of a single argument condition.

use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Free-form documentation, ignored.
    #[serde(default)]
    #[allow(dead_code)]
    comment: serde_json::Value,
    pub syscalls: Vec<Allowed>,
    #[serde(default)]
    pub enosys: Vec<Enosys>,
    pub refused: Vec<Refused>,
}

/// An allow-list entry: the syscall, why, and (optionally) conditions on its arguments.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowed {
    pub syscall: String,
    pub reason: String,
    #[serde(default)]
    pub args: Vec<Cond>,
}

/// A syscall answered with ENOSYS (so that libc falls back to an older, filterable one).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enosys {
    pub syscall: String,
    pub reason: String,
}

/// A syscall that must never be in the allow-list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refused {
    pub syscall: String,
    pub reason: String,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum ArgLen {
    Dword,
    Qword,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    MaskedEq,
}

/// A JSON integer, or a string holding a `0x` hex or decimal integer.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub enum Num {
    Int(u64),
    Str(String),
}

impl Num {
    pub fn value(&self) -> Result<u64, String> {
        match self {
            Num::Int(v) => Ok(*v),
            Num::Str(s) => {
                let t = s.trim().replace('_', "");
                let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => t.parse::<u64>(),
                };
                parsed.map_err(|e| format!("invalid number {s:?}: {e}"))
            }
        }
    }
}

/// A condition on one argument, as written in the file.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Cond {
    pub index: u8,
    #[serde(rename = "type")]
    pub len: ArgLen,
    pub op: Op,
    pub val: Num,
    #[serde(default)]
    pub mask: Option<Num>,
    #[serde(default)]
    #[allow(dead_code)]
    comment: Option<String>,
}

/// A validated condition (comments dropped).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CheckedCond {
    pub index: u8,
    pub len: ArgLen,
    pub op: Op,
    pub val: u64,
    pub mask: Option<u64>,
}

impl Cond {
    pub fn check(&self) -> Result<CheckedCond, String> {
        if self.index > 5 {
            return Err(format!("argument index {} > 5", self.index));
        }
        let val = self.val.value()?;
        let mask = self.mask.as_ref().map(Num::value).transpose()?;
        match (self.op, mask) {
            (Op::MaskedEq, None) => return Err("masked_eq needs a `mask`".into()),
            (Op::MaskedEq, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err("`mask` is only meaningful with op masked_eq".into()),
        }
        // A dword comparison only sees the low 32 bits: a wider constant is a policy bug.
        let wide = |v: u64| v > u64::from(u32::MAX);
        if self.len == ArgLen::Dword && (wide(val) || mask.is_some_and(wide)) {
            return Err(format!(
                "dword comparison with a value wider than 32 bits ({val:#x})"
            ));
        }
        let (index, len, op) = (self.index, self.len, self.op);
        Ok(CheckedCond {
            index,
            len,
            op,
            val,
            mask,
        })
    }
}

impl CheckedCond {
    pub fn to_seccompiler(self) -> Result<SeccompCondition, String> {
        let len = match self.len {
            ArgLen::Dword => SeccompCmpArgLen::Dword,
            ArgLen::Qword => SeccompCmpArgLen::Qword,
        };
        let op = match self.op {
            Op::Eq => SeccompCmpOp::Eq,
            Op::Ne => SeccompCmpOp::Ne,
            Op::Lt => SeccompCmpOp::Lt,
            Op::Le => SeccompCmpOp::Le,
            Op::Gt => SeccompCmpOp::Gt,
            Op::Ge => SeccompCmpOp::Ge,
            Op::MaskedEq => SeccompCmpOp::MaskedEq(self.mask.unwrap_or(u64::MAX)),
        };
        SeccompCondition::new(self.index, len, op, self.val).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(json: &str) -> Result<CheckedCond, String> {
        serde_json::from_str::<Cond>(json)
            .map_err(|e| e.to_string())?
            .check()
    }

    #[test]
    fn numbers_in_every_spelling() {
        assert_eq!(Num::Int(7).value(), Ok(7));
        assert_eq!(Num::Str("0x10".into()).value(), Ok(16));
        assert_eq!(Num::Str("0X1_0".into()).value(), Ok(16));
        assert_eq!(Num::Str(" 42 ".into()).value(), Ok(42));
        assert!(Num::Str("0xg".into()).value().is_err());
        assert!(Num::Str("-1".into()).value().is_err());
    }

    #[test]
    fn conditions_are_checked() {
        let ok = cond(r#"{"index":1,"type":"dword","op":"masked_eq","val":"0x10","mask":"0xff"}"#);
        assert_eq!(ok.unwrap().mask, Some(0xff));
        let err = |j: &str| cond(j).unwrap_err();
        assert!(err(r#"{"index":6,"type":"qword","op":"eq","val":0}"#).contains("index 6"));
        assert!(err(r#"{"index":0,"type":"qword","op":"masked_eq","val":0}"#).contains("mask"));
        assert!(err(r#"{"index":0,"type":"qword","op":"eq","val":0,"mask":1}"#).contains("only"));
        let wide = r#"{"index":0,"type":"dword","op":"eq","val":"0x100000000"}"#;
        assert!(err(wide).contains("wider than 32 bits"));
        assert!(cond(r#"{"index":0,"type":"qword","op":"eq","val":"0x100000000"}"#).is_ok());
        assert!(err(r#"{"index":0,"type":"dword","op":"eq","val":0,"x":1}"#).contains("unknown"));
    }

    #[test]
    fn conditions_become_seccompiler_conditions() {
        let c = cond(r#"{"index":2,"type":"qword","op":"ge","val":5}"#).unwrap();
        assert!(c.to_seccompiler().is_ok());
    }
}
