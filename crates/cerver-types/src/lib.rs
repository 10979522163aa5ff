//! The HTTP wire format of the Cerver API, exactly as documented. Only this crate derives
//! `Serialize`/`Deserialize` for what crosses HTTP.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /sandbox`. Every field is optional; an empty body means all defaults.
#[derive(Debug, Default, Deserialize)]
pub struct CreateSandboxRequest {
    /// `"workers"` (default) or `"containers"`.
    #[serde(default)]
    pub engine: Option<String>,
    /// Environment variables available to all code in the sandbox.
    #[serde(default)]
    pub envs: Option<BTreeMap<String, String>>,
    /// Sandbox lifetime in milliseconds (default 300000).
    #[serde(default)]
    pub timeout_ms: Option<serde_json::Number>,
    /// Free-form string pairs for the caller's bookkeeping.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A sandbox as the API shows it. Env values are never echoed: `envs` lists names only.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct SandboxInfo {
    pub sandbox_id: String,
    pub engine: String,
    pub status: String,
    pub timeout_ms: u64,
    /// Unix seconds.
    pub expires_at: u64,
    pub time_remaining_ms: u64,
    /// Unix seconds.
    pub created_at: u64,
    pub envs: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// Present when a requested timeout was lowered to the allowed maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SandboxList {
    pub sandboxes: Vec<SandboxInfo>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeleteResponse {
    pub success: bool,
    pub sandbox_id: String,
}

/// `POST /sandbox/:id/timeout`.
#[derive(Debug, Deserialize)]
pub struct SetTimeoutRequest {
    pub timeout_ms: serde_json::Number,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SetTimeoutResponse {
    pub sandbox_id: String,
    pub timeout_ms: u64,
    pub expires_at: u64,
    pub time_remaining_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// `POST /sandbox/:id/run` and `/run/stream`.
#[derive(Debug, Deserialize)]
pub struct RunRequest {
    pub code: String,
    /// Per-run overrides of the sandbox's environment variables.
    #[serde(default)]
    pub envs: Option<BTreeMap<String, String>>,
    /// Seconds (default 30), never beyond the sandbox's remaining lifetime.
    #[serde(default)]
    pub timeout: Option<serde_json::Number>,
}

/// Result of a synchronous run. `output` and `error` carry no single trailing newline.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct RunResponse {
    pub output: String,
    pub error: String,
    pub exit_code: i32,
    /// Milliseconds.
    pub duration: u64,
}

/// One Server-Sent Event of `/run/stream` (`data: {...}`).
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StreamEvent {
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    Exit {
        code: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default)]
        duration: u64,
    },
}

/// `POST /sandbox/:id/files`.
#[derive(Debug, Deserialize)]
pub struct WriteFileRequest {
    pub path: String,
    pub content: String,
    /// `"utf-8"` (default) or `"base64"` for binary content.
    #[serde(default)]
    pub encoding: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WriteFileResponse {
    pub success: bool,
    pub path: String,
    pub size: u64,
}

/// `GET /sandbox/:id/files?path=x`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReadFileResponse {
    pub path: String,
    pub content: String,
    pub size: u64,
    /// Present (`"base64"`) when the file is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct FileInfo {
    pub path: String,
    pub size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ListFilesResponse {
    pub files: Vec<FileInfo>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

#[derive(Debug, Deserialize)]
pub struct FilesQuery {
    #[serde(default)]
    pub path: Option<String>,
}

/// Every error: a human message and a machine code.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
}
