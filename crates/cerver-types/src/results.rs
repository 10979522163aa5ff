//! Rich results of a run (display outputs) and the exception it raised, on the wire.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One display output of a run, in the order produced: the value of the code's last
/// expression (`is_main_result`), objects passed to `display()`, matplotlib figures still open
/// at the end. Each carries the representations its object offers (`text` is its `repr`).
/// A run keeps at most 32 results and 8 MiB of them; a last result with `truncated: true`
/// says some were dropped.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Default, ToSchema)]
#[schema(examples(json!({"text": "   a\n0  1", "html": "<table>...</table>", "is_main_result": true})))]
pub struct RichResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markdown: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svg: Option<String>,
    /// PNG image, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub png: Option<String>,
    /// JPEG image, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jpeg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latex: Option<String>,
    /// Any JSON value (`_repr_json_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    /// The value of the code's last expression (as a notebook cell shows it).
    #[serde(default)]
    pub is_main_result: bool,
    /// Only on the marker that ends a truncated list of results.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// The exception a run's code raised (its traceback is also in `error`, as before).
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, ToSchema)]
#[schema(examples(json!({"name": "ZeroDivisionError", "value": "division by zero", "traceback": "Traceback (most recent call last):\n..."})))]
pub struct ErrorInfo {
    /// The exception's type name.
    pub name: String,
    /// `str()` of the exception.
    pub value: String,
    /// The formatted traceback (at most 64 KiB, its end kept).
    pub traceback: String,
}

/// `POST /sandbox/{id}/contexts`.
#[derive(Debug, Serialize, Deserialize, Clone, Default, ToSchema)]
#[schema(examples(json!({"cwd": "project", "envs": {"MODE": "analysis"}})))]
pub struct CreateContextRequest {
    /// Working directory, relative to the workspace (`/home/user`) or absolute; created if
    /// missing. Default: the workspace.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Environment variables on top of the sandbox's, for every run in the context.
    #[serde(default)]
    pub envs: Option<std::collections::BTreeMap<String, String>>,
}

/// A context: a persistent Python interpreter in a sandbox.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, ToSchema)]
#[schema(examples(json!({"context_id": "ctx_3f2a9c0d1e4b5a6f", "status": "running", "cwd": "", "pid": 31, "created_at": 1735689600})))]
pub struct ContextInfo {
    pub context_id: String,
    /// `running`, or `dead` (killed at a timeout, or it died): restart it with
    /// `POST /sandbox/{id}/contexts/{context_id}/restart`.
    #[schema(examples("running", "dead"))]
    pub status: String,
    /// The working directory it was created with (empty: the workspace).
    pub cwd: String,
    /// The interpreter's pid inside the sandbox.
    pub pid: i32,
    /// When it was created (or last restarted), in Unix seconds.
    pub created_at: u64,
}

/// `GET /sandbox/{id}/contexts`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContextList {
    /// At most 8, oldest first.
    pub contexts: Vec<ContextInfo>,
}

/// `DELETE /sandbox/{id}/contexts/{context_id}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeleteContextResponse {
    /// Always `true`: the interpreter and everything it started are gone.
    pub success: bool,
    pub context_id: String,
}
