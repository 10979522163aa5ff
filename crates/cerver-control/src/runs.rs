//! Runs: starting one (its timeout checked once, here, and never past the sandbox's remaining
//! lifetime) and shaping what it wrote into the documented result (bounded output, the
//! truncation notice, the trailing-newline rule).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cerver_runtime::{RunExit, RunHandle, RunOutput};
use cerver_types::{ErrorInfo, RichResult, RunResponse, RunStatus};

use crate::env::{run_env, validate_code};
use crate::{Control, ControlError, Entry};

/// Default run timeout in seconds (documented: 30).
pub const DEFAULT_RUN_TIMEOUT_S: f64 = 30.0;

const TRUNCATED: &str = "\n[output truncated: the run wrote more than the limit of";

/// What a run or background process executes: code and environment overrides.
#[derive(Debug, Clone, Default)]
pub struct RunParams {
    pub code: String,
    pub envs: BTreeMap<String, String>,
}

/// The run timeout asked for: positive and finite, [`DEFAULT_RUN_TIMEOUT_S`] when absent.
pub(crate) fn requested_timeout(timeout_s: Option<f64>) -> Result<Duration, ControlError> {
    let timeout_s = timeout_s.unwrap_or(DEFAULT_RUN_TIMEOUT_S);
    if !(timeout_s.is_finite() && timeout_s > 0.0) {
        return Err(ControlError::invalid(
            "timeout must be a positive number of seconds",
        ));
    }
    Ok(Duration::from_secs_f64(timeout_s.min(1e9)))
}

impl Control {
    /// Starts a run in `entry` with the `requested` timeout (see [`requested_timeout`]),
    /// which never goes past the sandbox's remaining lifetime.
    pub(crate) async fn start_run(
        &self,
        entry: &Arc<Entry>,
        params: RunParams,
        requested: Duration,
    ) -> Result<RunHandle, ControlError> {
        validate_code(&params.code, &params.envs)?;
        let remaining = Duration::from_millis(entry.lifetime().remaining_ms);
        let timeout = requested.min(remaining);
        let permit = entry.run_permit()?;
        let env = run_env(entry, &params.envs);
        let spec = cerver_runtime::run::code_spec(params.code, env);
        let handle = entry.sandbox.start(&spec, None, timeout).await?;
        Ok(handle.with_permit(permit))
    }

    /// Runs `params.code` in the sandbox's context `context_id`, after the runs before it.
    pub(crate) async fn start_in_context(
        &self,
        entry: &Arc<Entry>,
        context_id: &str,
        params: RunParams,
        requested: Duration,
    ) -> Result<RunHandle, ControlError> {
        validate_code(&params.code, &params.envs)?;
        let context = crate::ops::contexts::context_of(entry, context_id)?;
        let remaining = Duration::from_millis(entry.lifetime().remaining_ms);
        let permit = entry.run_permit()?;
        let handle = context.run(&params.code, requested.min(remaining)).await?;
        Ok(handle.with_permit(permit))
    }

    /// Most bytes of stdout (and of stderr) a synchronous result keeps.
    pub(crate) fn max_output_bytes(&self) -> usize {
        self.runtime.config().max_output_bytes
    }
}

/// As in the documented examples: one trailing newline is not part of the value.
fn trim_one_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

/// How a run ended, from how its process ended (never from what it wrote).
pub(crate) fn status(exit: &RunExit) -> RunStatus {
    if exit.timed_out {
        RunStatus::Timeout
    } else if exit.out_of_memory {
        RunStatus::Oom
    } else if exit.signal.is_some() {
        RunStatus::Killed
    } else if exit.exit_code == 0 && exit.error.is_none() {
        RunStatus::Ok
    } else {
        RunStatus::Error
    }
}

/// The documented result of a run collected with at most `max` bytes per stream.
pub(crate) fn response(out: RunOutput, max: usize) -> RunResponse {
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.stdout_truncated {
        output.push_str(&format!("{TRUNCATED} {max} bytes]"));
    }
    let mut error = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.stderr_truncated {
        error.push_str(&format!("{TRUNCATED} {max} bytes]"));
    }
    let mut error = trim_one_newline(error);
    if let Some(msg) = out.exit.error.as_deref() {
        if !error.is_empty() {
            error.push('\n');
        }
        error.push_str(msg);
    }
    RunResponse {
        status: status(&out.exit),
        output: trim_one_newline(output),
        error,
        exit_code: out.exit.exit_code,
        duration: out.exit.duration.as_millis() as u64,
        results: out.results.into_iter().map(wire_result).collect(),
        error_info: out.error_info.map(wire_error),
    }
}

/// A rich result as documented (the runtime has validated and bounded it).
pub(crate) fn wire_result(r: cerver_runtime::RichResult) -> RichResult {
    RichResult {
        text: r.text,
        html: r.html,
        markdown: r.markdown,
        svg: r.svg,
        png: r.png,
        jpeg: r.jpeg,
        latex: r.latex,
        json: r.json,
        is_main_result: r.is_main_result,
        truncated: r.truncated,
    }
}

pub(crate) fn wire_error(e: cerver_runtime::ErrorInfo) -> ErrorInfo {
    ErrorInfo {
        name: e.name,
        value: e.value,
        traceback: e.traceback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_exactly_one_newline() {
        assert_eq!(trim_one_newline("50\n".into()), "50");
        assert_eq!(trim_one_newline("a\n\n".into()), "a\n");
        assert_eq!(trim_one_newline("a\r\n".into()), "a");
        assert_eq!(trim_one_newline("".into()), "");
    }

    #[test]
    fn status_comes_from_how_the_process_ended() {
        let exit = |f: fn(&mut RunExit)| {
            let mut e = RunExit::default();
            f(&mut e);
            status(&e)
        };
        assert_eq!(exit(|_| {}), RunStatus::Ok);
        assert_eq!(exit(|e| e.exit_code = 137), RunStatus::Error);
        assert_eq!(
            exit(|e| {
                e.exit_code = -1;
                e.timed_out = true;
            }),
            RunStatus::Timeout
        );
        assert_eq!(
            exit(|e| {
                e.signal = Some(9);
                e.out_of_memory = true;
            }),
            RunStatus::Oom
        );
        assert_eq!(exit(|e| e.signal = Some(15)), RunStatus::Killed);
        assert_eq!(
            exit(|e| e.error = Some("could not start".into())),
            RunStatus::Error
        );
    }

    #[test]
    fn timeouts_must_be_positive_and_finite() {
        assert_eq!(requested_timeout(None).unwrap(), Duration::from_secs(30));
        assert_eq!(
            requested_timeout(Some(0.5)).unwrap(),
            Duration::from_millis(500)
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = requested_timeout(Some(bad)).unwrap_err();
            assert!(
                matches!(
                    &e,
                    ControlError::Invalid {
                        code: "invalid_request",
                        ..
                    }
                ),
                "{bad}: {e:?}"
            );
        }
    }
}
