//! The HTTP wire format of the Cerver API, exactly as documented. Only this crate derives
//! `Serialize`/`Deserialize` for what crosses HTTP.
//!
//! Every type also derives [`utoipa::ToSchema`]: the OpenAPI document served at
//! `GET /openapi.json` is generated from these definitions and their doc comments, so keep
//! both true to what the handlers send and accept.
//!
//! [`account`] holds the dashboard's account and key types. [`mcp`] holds the arguments of the `/mcp` tools (JSON Schema via `schemars`, as MCP wants).

pub mod account;
pub mod mcp;
pub mod results;

impl From<RichResult> for StreamEvent {
    fn from(r: RichResult) -> Self {
        StreamEvent::Result {
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
}

pub use results::{
    ContextInfo, ContextList, CreateContextRequest, DeleteContextResponse, ErrorInfo, RichResult,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `POST /sandbox`. Every field is optional; an empty body means all defaults.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(examples(json!({
    "engine": "workers",
    "envs": {"API_KEY": "secret"},
    "timeout_ms": 300000,
    "metadata": {"user": "alice"}
})))]
pub struct CreateSandboxRequest {
    /// `"workers"` (default) or `"containers"`.
    #[serde(default)]
    #[schema(examples("workers", "containers"))]
    pub engine: Option<String>,
    /// Environment variables available to all code in the sandbox. Values are never echoed.
    #[serde(default)]
    pub envs: Option<BTreeMap<String, String>>,
    /// Sandbox lifetime in milliseconds (default 300000), lowered to the server's maximum.
    #[serde(default)]
    #[schema(value_type = Option<u64>, minimum = 1)]
    pub timeout_ms: Option<serde_json::Number>,
    /// Free-form string pairs for the caller's bookkeeping.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A sandbox as the API shows it. Env values are never echoed: `envs` lists names only.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, ToSchema)]
#[schema(examples(json!({
    "sandbox_id": "0b6f7d3e-8d0c-4c55-9a3e-1f2d3c4b5a69",
    "engine": "workers",
    "status": "ready",
    "timeout_ms": 300000,
    "expires_at": 1735689900,
    "time_remaining_ms": 299998,
    "created_at": 1735689600,
    "envs": ["API_KEY"],
    "metadata": {"user": "alice"}
})))]
pub struct SandboxInfo {
    /// The sandbox's id, used in every `/sandbox/{id}` path.
    pub sandbox_id: String,
    /// `"workers"` or `"containers"`.
    pub engine: String,
    /// Always `"ready"` for a sandbox the API can show.
    pub status: String,
    /// The sandbox's lifetime in milliseconds, as last set.
    pub timeout_ms: u64,
    /// When the sandbox ends, in Unix seconds.
    pub expires_at: u64,
    /// Milliseconds left before the sandbox ends.
    pub time_remaining_ms: u64,
    /// When the sandbox was created, in Unix seconds.
    pub created_at: u64,
    /// Names (never values) of the sandbox's environment variables.
    pub envs: Vec<String>,
    /// The metadata given at creation.
    pub metadata: BTreeMap<String, String>,
    /// Present when a requested timeout was lowered to the allowed maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// `GET /sandboxes`: the caller's active sandboxes, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SandboxList {
    /// Active sandboxes, oldest first.
    pub sandboxes: Vec<SandboxInfo>,
}

/// `DELETE /sandbox/{id}`: the sandbox and every process and file of it are gone.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeleteResponse {
    /// Always `true`.
    pub success: bool,
    /// The deleted sandbox's id.
    pub sandbox_id: String,
}

/// `POST /sandbox/{id}/timeout`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({"timeout_ms": 600000})))]
pub struct SetTimeoutRequest {
    /// The new remaining lifetime in milliseconds, counted from now (lowered to the maximum).
    #[schema(value_type = u64, minimum = 1)]
    pub timeout_ms: serde_json::Number,
}

/// `POST /sandbox/{id}/timeout`: the sandbox's new lifetime.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SetTimeoutResponse {
    /// The sandbox's id.
    pub sandbox_id: String,
    /// The lifetime now in force, in milliseconds.
    pub timeout_ms: u64,
    /// When the sandbox ends, in Unix seconds.
    pub expires_at: u64,
    /// Milliseconds left before the sandbox ends.
    pub time_remaining_ms: u64,
    /// Present when the requested timeout was lowered to the allowed maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// `POST /sandbox/{id}/run` and `/run/stream`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({
    "code": "x = 5\nprint(x * 10)",
    "envs": {"DEBUG": "true"},
    "timeout": 30
})))]
pub struct RunRequest {
    /// Python 3 source, run as a fresh process in the sandbox's workspace.
    pub code: String,
    /// Per-run overrides of the sandbox's environment variables.
    #[serde(default)]
    pub envs: Option<BTreeMap<String, String>>,
    /// Seconds (default 30), never beyond the sandbox's remaining lifetime. Ignored with
    /// `background`.
    #[serde(default)]
    #[schema(value_type = Option<f64>, exclusive_minimum = 0)]
    pub timeout: Option<serde_json::Number>,
    /// Start the code as a background process and answer at once (`/run`: the process
    /// object; `/run/stream`: a `process` event, then its output). It runs until it ends, is
    /// killed (`DELETE /sandbox/{id}/processes/{pid}`) or the sandbox ends; no timeout applies.
    #[serde(default)]
    pub background: Option<bool>,
    /// Run in this context (`POST /sandbox/{id}/contexts`): a persistent interpreter whose
    /// variables, imports and open files carry over between runs. Not with `background` or
    /// `envs` (a context's environment is set when it is created).
    #[serde(default)]
    pub context_id: Option<String>,
}

/// How a run ended, decided by the server from how the process ended (never from what it
/// wrote): code that prints "timed out" or exits with 137 does not make its run a timeout or
/// a kill.
#[derive(Debug, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Exited with code 0.
    Ok,
    /// Exited with a non-zero code (e.g. an uncaught exception), or could not start.
    Error,
    /// Stopped by the server at its timeout.
    Timeout,
    /// Ended by a signal (e.g. killed).
    Killed,
    /// Killed for using more memory than the sandbox allows.
    Oom,
}

/// Result of a synchronous run. `output` and `error` carry no single trailing newline.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, ToSchema)]
#[schema(examples(json!({"output": "50", "error": "", "exit_code": 0, "duration": 12, "status": "ok"})))]
pub struct RunResponse {
    /// Standard output (at most 1 MiB, then a truncation notice).
    pub output: String,
    /// Standard error (at most 1 MiB), followed by the reason the run was stopped, if any
    /// (e.g. "timed out").
    pub error: String,
    /// The process's exit code, as `python -c` would give it (1 for an uncaught exception).
    pub exit_code: i32,
    /// Milliseconds.
    pub duration: u64,
    /// How the run ended: `ok`, `error` (non-zero exit), `timeout`, `killed` or `oom`. Use
    /// this, not the text of `error`, to tell a timeout from code that printed "timed out".
    pub status: RunStatus,
    /// Rich results (display outputs), in the order produced.
    #[serde(default)]
    pub results: Vec<RichResult>,
    /// The exception the code raised, when it raised one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_info: Option<ErrorInfo>,
}

/// `POST /sandbox/{id}/run`: the result of a run, or (with `"background": true`) the process
/// just started.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, ToSchema)]
#[serde(untagged)]
pub enum RunResult {
    /// The run ended.
    Finished(RunResponse),
    /// With `background`: the process, running.
    Background(ProcessInfo),
}

/// A background process of a sandbox.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, ToSchema)]
#[schema(examples(json!({
    "pid": 42,
    "status": "running",
    "code": "import http.server ...",
    "started_at": 1735689600,
    "exit_code": null
})))]
pub struct ProcessInfo {
    /// The process's pid inside the sandbox (what `os.getpid()` prints in it).
    pub pid: u32,
    /// `"running"`, `"exited"` (it ended by itself) or `"killed"` (by a signal, e.g. through
    /// `DELETE`).
    #[schema(examples("running", "exited", "killed"))]
    pub status: String,
    /// The first 200 characters of its code.
    pub code: String,
    /// When it started, in Unix seconds.
    pub started_at: u64,
    /// Its exit code once ended (`128 + signal` when killed), `null` while running.
    pub exit_code: Option<i32>,
    /// When it ended, in Unix seconds (absent while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
}

/// `GET /sandbox/{id}/processes`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProcessList {
    /// Running background processes and the most recently ended ones (at most 32), oldest
    /// first.
    pub processes: Vec<ProcessInfo>,
}

/// `GET /sandbox/{id}/processes/{pid}`: the process with its recent output.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, ToSchema)]
pub struct ProcessDetail {
    /// The process's pid inside the sandbox.
    pub pid: u32,
    /// `"running"`, `"exited"` or `"killed"`.
    pub status: String,
    /// The first 200 characters of its code.
    pub code: String,
    /// When it started, in Unix seconds.
    pub started_at: u64,
    /// Its exit code once ended, `null` while running.
    pub exit_code: Option<i32>,
    /// When it ended, in Unix seconds (absent while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    /// Its most recent standard output (the last 1 MiB).
    pub output: String,
    /// Its most recent standard error (the last 1 MiB), then why it was stopped, if it was.
    pub error: String,
    /// `true` when older output was dropped from `output` or `error`.
    pub truncated: bool,
}

/// `DELETE /sandbox/{id}/processes/{pid}`: the process and everything it started are gone.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KillProcessResponse {
    /// Always `true` (also for a process that had already ended).
    pub success: bool,
    /// The process's pid.
    pub pid: u32,
}

/// One Server-Sent Event of `/run/stream` (`data: {...}`): output chunks in order, then one
/// `exit` event. A background run (and `/processes/{pid}/stream`) starts with a `process` event.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StreamEvent {
    /// First event of a background run: the process that was started.
    Process {
        /// The process's pid inside the sandbox.
        pid: u32,
    },
    /// A chunk of standard output.
    Stdout {
        /// The text written (UTF-8; invalid bytes become U+FFFD).
        data: String,
    },
    /// A chunk of standard error.
    Stderr {
        /// The text written (UTF-8; invalid bytes become U+FFFD).
        data: String,
    },
    /// A rich result (display output) of the run, before `exit`: the fields of a
    /// `RichResult` (the representations present, `is_main_result`, `truncated`).
    Result {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        html: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        markdown: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        svg: Option<String>,
        /// Base64.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        png: Option<String>,
        /// Base64.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jpeg: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        latex: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        json: Option<serde_json::Value>,
        /// The value of the code's last expression.
        #[serde(default)]
        is_main_result: bool,
        /// Only on the marker that ends a truncated list of results.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
    /// The last event: how the run ended.
    Exit {
        /// The process's exit code.
        code: i32,
        /// Why the run was stopped (e.g. "timed out"), if it was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Milliseconds.
        #[serde(default)]
        duration: u64,
        /// How the run ended: `ok`, `error` (non-zero exit), `timeout`, `killed` or `oom`.
        status: RunStatus,
        /// The exception the code raised, when it raised one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_info: Option<ErrorInfo>,
    },
}

/// `POST /sandbox/{id}/files`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({"path": "data.txt", "content": "hello"})))]
pub struct WriteFileRequest {
    /// Path relative to the workspace (`/home/user`); parent directories are created.
    pub path: String,
    /// The file's content, as text or base64 (see `encoding`).
    pub content: String,
    /// `"utf-8"` (default) or `"base64"` for binary content.
    #[serde(default)]
    #[schema(examples("utf-8", "base64"))]
    pub encoding: Option<String>,
}

/// `POST /sandbox/{id}/files`: the file was written.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WriteFileResponse {
    /// Always `true`.
    pub success: bool,
    /// The path as given.
    pub path: String,
    /// Bytes written.
    pub size: u64,
}

/// `GET /sandbox/{id}/files?path=x`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadFileResponse {
    /// The path as given.
    pub path: String,
    /// The file's content: text, or base64 when `encoding` is `"base64"`.
    pub content: String,
    /// The file's size in bytes.
    pub size: u64,
    /// Present (`"base64"`) when the file is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

/// One entry of a workspace listing.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, ToSchema)]
pub struct FileInfo {
    /// Path relative to the workspace.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// `GET /sandbox/{id}/files` (no `path`): the workspace's files.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListFilesResponse {
    /// Every file of the workspace, recursively.
    pub files: Vec<FileInfo>,
    /// Present (`true`) when the listing stopped at the server's maximum number of entries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// `GET /sandbox/{id}/files`: a file's content with `?path=`, else the workspace listing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum GetFilesResponse {
    /// With `?path=`: that file.
    File(ReadFileResponse),
    /// Without `path`: the listing.
    List(ListFilesResponse),
}

/// Query of `GET /sandbox/{id}/files`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilesQuery {
    /// A file to read, relative to the workspace; without it the workspace is listed.
    #[serde(default)]
    #[param(example = "data.txt")]
    pub path: Option<String>,
}

/// Every error: a human message and a machine code.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, ToSchema)]
#[schema(examples(json!({"error": "sandbox not found", "code": "not_found"})))]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// What went wrong, for a program (e.g. `not_found`, `invalid_json`, `invalid_request`,
    /// `payload_too_large`, `limit_exceeded`, `sandbox_unavailable`).
    pub code: String,
}

/// `GET /health`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `"ok"`.
    pub status: String,
    /// The server's version.
    pub version: String,
}

/// `POST /auth/signup` and `POST /auth/login`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({"email": "you@example.com"})))]
pub struct EmailRequest {
    /// The account's email address.
    pub email: String,
}

/// Answer of `POST /auth/signup` (the same whether or not the address is already known).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SignupResponse {
    /// `"Verification email sent!"`.
    pub message: String,
    /// The address the link was sent to.
    pub email: String,
    /// What to do next.
    pub next: String,
}

/// Answer of `GET /auth/verify-signup` when JSON is asked for (`Accept: application/json`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifySignupResponse {
    /// The new key (`sk_trial_...`), shown once.
    pub api_key: String,
    /// `trial`, `free` or `pro`.
    pub plan: String,
    pub email: String,
    pub message: String,
}

/// A short confirmation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageResponse {
    pub message: String,
}

/// `GET /auth/session`: the dashboard session's user.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    pub email: String,
    pub plan: String,
}

/// `POST /sandbox/:id/install`: `packages` (space-separated) and/or `package`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(examples(json!({"packages": "pandas numpy"})))]
pub struct InstallRequest {
    /// Space-separated PEP 508 requirements, e.g. `"pandas numpy==1.26.4"`.
    #[serde(default)]
    pub packages: Option<String>,
    /// One requirement (what the published 0.1.0 client sends).
    #[serde(default)]
    pub package: Option<String>,
}

/// Answer of a successful install.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InstallResponse {
    pub success: bool,
    /// Whether a `workers` sandbox was upgraded to `containers` in place.
    pub upgraded: bool,
    /// The installer's log (bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /sandbox/:id/host?port=N`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HostQuery {
    /// The port a server in the sandbox listens on (1-65535).
    #[param(example = "8080")]
    #[serde(default)]
    pub port: Option<String>,
}

/// The external address of a port.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({
    "sandbox_id": "9f83e711-5b1c-4f43-9d1e-2a7c0b8e4d21",
    "port": 8080,
    "url": "http://9f83e711-8080.sandbox.localhost:8080/",
    "host": "9f83e711-8080.sandbox.localhost"
})))]
pub struct HostResponse {
    pub sandbox_id: String,
    pub port: u16,
    /// The public URL of the port; with `?cerver_token=...` when the server requires port
    /// tokens.
    pub url: String,
    /// `<first 8 hex characters of sandbox_id>-<port>.<sandbox domain>`: requests whose `Host`
    /// is this name are forwarded to the port.
    pub host: String,
}
