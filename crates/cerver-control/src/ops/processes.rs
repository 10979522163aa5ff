//! Background processes: list, inspect, follow, kill. They are started by the run operations
//! with `background` (see [`super::runs`]).

use cerver_types::{KillProcessResponse, ProcessDetail, ProcessInfo, ProcessList, StreamEvent};

use crate::processes::BackgroundProcess;
use crate::stream::{EventStream, Events, Source};
use crate::{Caller, Control, ControlError, unix};

/// A pid as given: a positive decimal integer that fits a pid.
pub fn parse_pid(s: &str) -> Result<i32, ControlError> {
    // Canonical decimal only (no sign, no leading zero): one spelling per process. The
    // OpenAPI document's pattern (`^[1-9][0-9]{0,8}$`) is a subset: every pid it allows
    // parses, and the 10-digit ones it leaves out name no process (pid_max is far below).
    let valid = !s.is_empty()
        && s.len() <= 10
        && !s.starts_with('0')
        && s.bytes().all(|b| b.is_ascii_digit());
    match s.parse::<i32>() {
        Ok(pid) if valid && pid > 0 => Ok(pid),
        _ => Err(ControlError::Invalid {
            code: "invalid_pid",
            message: "pid must be a positive integer".into(),
        }),
    }
}

pub(crate) fn info_of(p: &BackgroundProcess) -> ProcessInfo {
    let s = p.process.snapshot();
    ProcessInfo {
        pid: s.pid as u32,
        status: s.status.as_str().into(),
        code: p.code.clone(),
        started_at: unix(s.started_at),
        exit_code: s.exit.as_ref().map(|e| e.exit_code),
        ended_at: s.ended_at.map(unix),
    }
}

/// Running background processes and the most recently ended ones, oldest first.
pub fn list(c: &Control, caller: &Caller, id: &str) -> Result<ProcessList, ControlError> {
    let processes = c.processes(&caller.user.id, id)?;
    Ok(ProcessList {
        processes: processes.iter().map(info_of).collect(),
    })
}

/// One process with its recent output (and why it was stopped, if it was).
pub fn get(
    c: &Control,
    caller: &Caller,
    id: &str,
    pid: &str,
) -> Result<ProcessDetail, ControlError> {
    let pid = parse_pid(pid)?;
    let p = c.process(&caller.user.id, id, pid)?;
    let info = info_of(&p);
    let out = p.process.output();
    let mut error = String::from_utf8_lossy(&out.stderr).into_owned();
    if let Some(msg) = p.process.snapshot().exit.and_then(|e| e.error) {
        if !error.is_empty() && !error.ends_with('\n') {
            error.push('\n');
        }
        error.push_str(&msg);
    }
    Ok(ProcessDetail {
        pid: info.pid,
        status: info.status,
        code: info.code,
        started_at: info.started_at,
        exit_code: info.exit_code,
        ended_at: info.ended_at,
        output: String::from_utf8_lossy(&out.stdout).into_owned(),
        error,
        truncated: out.truncated,
    })
}

/// Follows a process: a `process` event, its buffered output, then live events until `exit`
/// (at once for an ended one). Holds one of the sandbox's follower slots while it lasts.
pub fn follow(
    c: &Control,
    caller: &Caller,
    id: &str,
    pid: &str,
) -> Result<EventStream, ControlError> {
    let pid = parse_pid(pid)?;
    let (p, permit) = c.follow_process(&caller.user.id, id, pid)?;
    let follow = p.process.follow();
    let source = match follow.live {
        Some(events) if follow.exit.is_none() => Source::Live {
            events,
            closing: c.closing(),
        },
        _ => Source::Ended,
    };
    Ok(Events::new(source)
        .first(StreamEvent::Process { pid: pid as u32 })
        .replay(&follow.output.stdout, &follow.output.stderr)
        .ended(follow.exit)
        .holding(permit)
        .into_stream())
}

/// Kills a process and everything it started (succeeds for one that has already ended).
pub async fn kill(
    c: &Control,
    caller: &Caller,
    id: &str,
    pid: &str,
) -> Result<KillProcessResponse, ControlError> {
    let pid = parse_pid(pid)?;
    c.kill_process(&caller.user.id, id, pid).await?;
    Ok(KillProcessResponse {
        success: true,
        pid: pid as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_pid;

    #[test]
    fn pids_are_positive_integers() {
        assert_eq!(parse_pid("1").unwrap(), 1);
        assert_eq!(parse_pid("2147483647").unwrap(), i32::MAX);
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            " 1",
            "1.0",
            "abc",
            "2147483648",
            "99999999999999999999",
            "0x10",
            "01",
            "007",
        ] {
            assert!(parse_pid(bad).is_err(), "{bad:?}");
        }
    }
}
