//! `POST /mcp`: the Model Context Protocol endpoint. Its JSON-RPC messages are defined by MCP
//! (the server speaks them through `rmcp`); what this API adds are the arguments of its tools,
//! whose JSON Schemas (`schemars`) are what `tools/list` advertises.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One JSON-RPC 2.0 message of the Model Context Protocol (Streamable HTTP transport,
/// stateless). A request (`id` and `method`) is answered with one JSON-RPC response; a
/// notification (no `id`) with 202 and no body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(examples(json!({
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "run_code", "arguments": {"sandbox_id": "0b6f7d3e-8d0c-4c55-9a3e-1f2d3c4b5a69", "code": "print(2 ** 10)"}}
})))]
pub struct McpMessage {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// The request's id, a string or a 64-bit integer (absent for notifications).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub id: Option<serde_json::Value>,
    /// `initialize`, `tools/list`, `tools/call`, `ping`, `notifications/initialized`, ...
    pub method: String,
    /// The method's parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub params: Option<serde_json::Value>,
}

/// Arguments of the `create_sandbox` tool (as `POST /sandbox`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CreateSandboxArgs {
    /// "workers" (default: fast, Python standard library) or "containers" (larger limits).
    pub engine: Option<String>,
    /// Lifetime in milliseconds (default 300000), capped by the plan's maximum.
    pub timeout_ms: Option<u64>,
    /// Environment variables every run in the sandbox sees.
    pub envs: Option<BTreeMap<String, String>>,
    /// Free-form labels kept with the sandbox.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Arguments of the tools that take only a sandbox (`list_files`, `delete_sandbox`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SandboxArgs {
    /// The sandbox_id that create_sandbox returned.
    pub sandbox_id: String,
}

/// Arguments of the `run_code` tool (as `POST /sandbox/{id}/run`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RunCodeArgs {
    /// The sandbox_id that create_sandbox returned.
    pub sandbox_id: String,
    /// Python 3 source, run as a fresh process (`python -c`) in the sandbox's workspace.
    pub code: String,
    /// Environment variables for this run only (over the sandbox's).
    pub envs: Option<BTreeMap<String, String>>,
    /// Time limit in seconds (default 30), at most the sandbox's remaining lifetime.
    pub timeout: Option<f64>,
    /// Run in this context (from create_context): variables and imports carry over.
    pub context_id: Option<String>,
}

/// Arguments of the `write_file` tool (as `POST /sandbox/{id}/files`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct WriteFileArgs {
    /// The sandbox_id that create_sandbox returned.
    pub sandbox_id: String,
    /// Path relative to the workspace /home/user; parent directories are created.
    pub path: String,
    /// The file's content: text, or base64 with encoding "base64".
    pub content: String,
    /// "utf-8" (default) or "base64" for binary content.
    pub encoding: Option<String>,
}

/// Arguments of the `read_file` tool (as `GET /sandbox/{id}/files?path=`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ReadFileArgs {
    /// The sandbox_id that create_sandbox returned.
    pub sandbox_id: String,
    /// Path relative to the workspace /home/user.
    pub path: String,
}

/// Arguments of the `install_packages` tool (as `POST /sandbox/{id}/install`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct InstallPackagesArgs {
    /// The sandbox_id that create_sandbox returned.
    pub sandbox_id: String,
    /// Space-separated PEP 508 requirements, e.g. "pandas numpy==2.1".
    pub packages: String,
}
