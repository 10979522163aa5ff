//! Running code: to the end (`run`), or as a stream of events (`run_stream`); either may
//! start a background process instead.

use std::collections::BTreeMap;
use std::time::Duration;

use cerver_types::{RunResult, StreamEvent};

use crate::ops::processes::info_of;
use crate::runs::{RunParams, requested_timeout, response};
use crate::stream::{EventStream, Events, Source};
use crate::{Caller, Control, ControlError};

/// A run as a caller asks for it.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub code: String,
    pub envs: BTreeMap<String, String>,
    /// Seconds; [`crate::DEFAULT_RUN_TIMEOUT_S`] when absent. Not applied to a background
    /// process, but checked all the same.
    pub timeout_s: Option<f64>,
    /// Start a background process and answer at once.
    pub background: bool,
    /// Run in this context (a persistent interpreter) instead of a fresh process.
    pub context_id: Option<String>,
}

/// The request's parts, its timeout checked (before the sandbox is looked up, as always).
fn split(req: RunRequest) -> Result<(RunParams, Duration, bool), ControlError> {
    let timeout = requested_timeout(req.timeout_s)?;
    if req.context_id.is_some() && (req.background || !req.envs.is_empty()) {
        return Err(ControlError::invalid(
            "a run in a context takes neither background nor envs (set envs when creating the context)",
        ));
    }
    let params = RunParams {
        code: req.code,
        envs: req.envs,
    };
    Ok((params, timeout, req.background))
}

/// Runs code and waits for the result, or starts it in the background.
pub async fn run(
    c: &Control,
    caller: &Caller,
    id: &str,
    req: RunRequest,
) -> Result<RunResult, ControlError> {
    let context_id = req.context_id.clone();
    let (params, timeout, background) = split(req)?;
    c.wake(caller, id).await?;
    let entry = c.get(&caller.user.id, id)?;
    if background {
        let (process, _live) = c.start_process(&entry, params).await?;
        return Ok(RunResult::Background(info_of(&process)));
    }
    let handle = start(c, &entry, params, timeout, context_id.as_deref()).await?;
    let max = c.max_output_bytes();
    Ok(RunResult::Finished(response(
        handle.collect(max).await,
        max,
    )))
}

/// Runs code as a stream of events: output chunks, then `exit`; dropping the stream kills the
/// run. A background process starts with a `process` event, and dropping the stream leaves it
/// running.
pub async fn run_stream(
    c: &Control,
    caller: &Caller,
    id: &str,
    req: RunRequest,
) -> Result<EventStream, ControlError> {
    let context_id = req.context_id.clone();
    let (params, timeout, background) = split(req)?;
    c.wake(caller, id).await?;
    let entry = c.get(&caller.user.id, id)?;
    if background {
        let (process, live) = c.start_process(&entry, params).await?;
        let pid = process.process.pid() as u32;
        let source = Source::Live {
            events: live,
            closing: c.closing(),
        };
        return Ok(Events::new(source)
            .first(StreamEvent::Process { pid })
            .into_stream());
    }
    let handle = start(c, &entry, params, timeout, context_id.as_deref()).await?;
    Ok(Events::new(Source::Run(handle)).into_stream())
}

/// A run in a fresh process, or in the context `context_id`.
async fn start(
    c: &Control,
    entry: &std::sync::Arc<crate::Entry>,
    params: RunParams,
    timeout: Duration,
    context_id: Option<&str>,
) -> Result<cerver_runtime::RunHandle, ControlError> {
    match context_id {
        None => c.start_run(entry, params, timeout).await,
        Some(cid) => c.start_in_context(entry, cid, params, timeout).await,
    }
}
