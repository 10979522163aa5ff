//! `/mcp`: the API as Model Context Protocol tools, over the Streamable HTTP transport.
//!
//! Stateless: every POST is one JSON-RPC exchange answered with JSON, so the server keeps no
//! MCP session (nothing to bound or expire). The route sits behind
//! [`crate::auth::require_key`] like every `/sandbox*` route: the [`Caller`] it puts in the
//! request extensions reaches each tool through the HTTP request parts rmcp hands over.
//!
//! Each tool is a thin adapter over the operation of the same name in
//! [`cerver_control::ops`], which the HTTP handlers call too: validation, owner scoping,
//! limits and error messages are the same by construction. A [`ControlError`] becomes a tool
//! result with `isError: true` whose text is the HTTP error message (and whose structured
//! content is the HTTP error body), through the one mapping in [`crate::error`].

use axum::extract::Request;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use cerver_control::ops::{self, RunRequest, WriteFile};
use cerver_control::{Caller, ControlError, CreateOptions};
use cerver_types::ErrorBody;
use cerver_types::mcp::{
    CreateSandboxArgs, InstallPackagesArgs, ReadFileArgs, RunCodeArgs, SandboxArgs, WriteFileArgs,
};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use serde::Serialize;

use crate::AppState;
use crate::error::ApiError;

/// The `/mcp` service: one [`CerverMcp`] per request (stateless).
pub type McpService = StreamableHttpService<CerverMcp, NeverSessionManager>;

/// Builds the `/mcp` service. `max_body` bounds a request body like the rest of the API.
pub fn service(state: AppState, max_body: usize) -> McpService {
    let tools = CerverMcp::tool_router();
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(max_body)
        // The `Host` allow-list guards servers that trust whoever can reach them (DNS
        // rebinding); this one authenticates every request by its API key, and is meant to
        // be reached under its public name.
        .disable_allowed_hosts();
    StreamableHttpService::new(
        move || {
            Ok(CerverMcp {
                state: state.clone(),
                tool_router: tools.clone(),
            })
        },
        Default::default(),
        config,
    )
}

/// `POST /mcp` (the router wraps this in the API-key middleware).
#[utoipa::path(
    post,
    path = "/mcp",
    tag = "mcp",
    operation_id = "mcp",
    summary = "Model Context Protocol endpoint (Streamable HTTP, stateless)",
    description = "The API as MCP tools for any MCP client: `create_sandbox`, `run_code`, \
        `write_file`, `read_file`, `list_files`, `install_packages`, `list_sandboxes`, \
        `delete_sandbox`. Each POST carries one JSON-RPC message; its `Accept` must allow both \
        `application/json` and `text/event-stream` (no `Accept`, or `*/*`, does); no session is kept (GET and DELETE \
        answer 405). Authenticated and counted like every `/sandbox` route. A failed tool \
        call is a tool result with `isError: true` and the HTTP API's error message.",
    request_body(content = cerver_types::mcp::McpMessage, content_type = "application/json"),
    responses(
        (status = 200, description = "The JSON-RPC response (a tool's result is in `result`).", content_type = "application/json", body = Object),
        (status = 202, description = "A notification was accepted (no body)."),
        (status = 400, description = "Not a JSON-RPC message, or an unsupported `MCP-Protocol-Version`.", body = cerver_types::ErrorBody),
        (status = 401, description = "Missing or invalid API key.", body = cerver_types::ErrorBody),
        (status = 406, description = "`Accept` names neither `application/json` and `text/event-stream` (both) nor `*/*`; a request without `Accept` accepts anything.", body = cerver_types::ErrorBody),
        (status = 413, description = "The request body is too large.", body = cerver_types::ErrorBody),
        (status = 415, description = "`Content-Type` is not `application/json`, or the body is not a JSON-RPC 2.0 message (`jsonrpc` other than `\"2.0\"`, an `id` that is neither a string nor a 64-bit integer, `params` that is not an object).", body = cerver_types::ErrorBody),
        (status = 429, description = "The daily request budget is spent.", body = cerver_types::ErrorBody),
    )
)]
pub async fn handle(service: McpService, mut req: Request) -> Response {
    accept_anything_means_both(&mut req);
    let response = service.handle(req).await.into_response();
    transport_error_as_json(response).await
}

/// What the transport needs in `Accept` (it answers JSON here, but checks for both).
const ACCEPT_BOTH: &str = "application/json, text/event-stream";

/// A request without `Accept`, or whose `Accept` has `*/*`, accepts any media type (RFC 9110
/// §12.5.1), so both that the transport insists on; only an `Accept` that names neither
/// JSON nor a wildcard is refused with 406.
fn accept_anything_means_both(req: &mut Request) {
    use axum::http::{HeaderValue, header};
    let headers = req.headers();
    let any = match headers.get_all(header::ACCEPT).iter().next() {
        None => true,
        Some(_) => headers.get_all(header::ACCEPT).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.split(';').next().map(str::trim) == Some("*/*"))
            })
        }),
    };
    if any {
        req.headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static(ACCEPT_BOTH));
    }
}

/// The transport answers its own refusals (406, 413, 415, ...) in plain text; they become the
/// API's `{"error", "code"}` like every other error. JSON answers pass unchanged.
async fn transport_error_as_json(response: Response) -> Response {
    use axum::http::{StatusCode, header};
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.is_success() || is_json {
        return response;
    }
    let code = match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "mcp_transport_error",
    };
    // The transport's messages are one short line; a longer body gives way to the reason.
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&body).trim().to_string();
    let message = if status.is_server_error() {
        tracing::error!("MCP transport error {status}: {message}");
        "internal server error".to_string()
    } else if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        message
    };
    ApiError::new(status, code, message).into_response()
}

/// The MCP server: the tools, over the server's [`AppState`].
#[derive(Clone)]
pub struct CerverMcp {
    state: AppState,
    tool_router: ToolRouter<Self>,
}

/// The caller the API-key middleware authenticated.
fn caller(parts: &Parts) -> Result<Caller, ApiError> {
    parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
        // The route is always behind `require_key`; reaching this is a routing bug.
        tracing::error!("an MCP request reached a tool without an authenticated caller");
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    })
}

/// A successful tool result: the response as JSON text and as structured content.
fn ok<T: Serialize>(value: &T) -> CallToolResult {
    match serde_json::to_value(value) {
        Ok(v) => CallToolResult::structured(v),
        Err(e) => {
            tracing::error!("could not serialize an MCP tool result: {e}");
            failed(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal server error",
            ))
        }
    }
}

/// A failed tool call: the HTTP API's message as text, its error body as structured content.
fn failed(e: ApiError) -> CallToolResult {
    let body = ErrorBody {
        error: e.message,
        code: e.code.to_string(),
    };
    let mut result = CallToolResult::structured_error(
        serde_json::to_value(&body).unwrap_or(serde_json::Value::Null),
    );
    result.content = vec![ContentBlock::text(body.error)];
    result
}

impl CerverMcp {
    /// Runs `op` as the caller the API-key middleware authenticated (the one place a tool
    /// looks the caller up) and turns its answer into a tool result.
    async fn call<T, F>(
        &self,
        parts: &Parts,
        op: impl FnOnce(AppState, Caller) -> F,
    ) -> CallToolResult
    where
        T: Serialize,
        F: std::future::Future<Output = Result<T, ControlError>>,
    {
        self.call_then(parts, op, |_, _| {}).await
    }

    /// [`Self::call`], then `finish` may adjust a successful result (e.g. mark it an error).
    async fn call_then<T, F>(
        &self,
        parts: &Parts,
        op: impl FnOnce(AppState, Caller) -> F,
        finish: impl FnOnce(&T, &mut CallToolResult),
    ) -> CallToolResult
    where
        T: Serialize,
        F: std::future::Future<Output = Result<T, ControlError>>,
    {
        let caller = match caller(parts) {
            Ok(c) => c,
            Err(e) => return failed(e),
        };
        match op(self.state.clone(), caller).await {
            Ok(v) => {
                let mut r = ok(&v);
                finish(&v, &mut r);
                r
            }
            Err(e) => failed(e.into()),
        }
    }
}

#[tool_router]
impl CerverMcp {
    #[tool(
        description = "Create a sandbox: an isolated Linux environment with a persistent \
                       workspace (/home/user) where Python code runs. Returns its sandbox_id, \
                       which every other tool takes. Sandboxes end after timeout_ms.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn create_sandbox(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<CreateSandboxArgs>,
    ) -> CallToolResult {
        let opts = CreateOptions {
            engine: args.engine,
            envs: args.envs.unwrap_or_default(),
            timeout_ms: args.timeout_ms,
            metadata: args.metadata.unwrap_or_default(),
        };
        self.call(&parts, |st, caller| async move {
            ops::sandboxes::create(&st.control, &caller, opts).await
        })
        .await
    }

    #[tool(
        description = "Run Python 3 code in a sandbox as a fresh process and wait for it. \
                       Returns output (stdout), error (stderr, or why the run ended), exit_code \
                       and duration (ms). The tool result is an error when exit_code is not 0. \
                       Files in /home/user persist between runs; with a context_id (create_context) \
                       the code runs in that persistent interpreter instead. Images among the \
                       results (charts, display()) come back as image content.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            open_world_hint = false
        )
    )]
    async fn run_code(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<RunCodeArgs>,
    ) -> CallToolResult {
        let req = RunRequest {
            code: args.code,
            envs: args.envs.unwrap_or_default(),
            timeout_s: args.timeout,
            background: false,
            context_id: args.context_id,
        };
        let id = args.sandbox_id;
        let run = |st: AppState, caller: Caller| async move {
            ops::runs::run(&st.control, &caller, &id, req).await
        };
        self.call_then(&parts, run, |out, r| {
            if let cerver_types::RunResult::Finished(done) = out {
                r.is_error = Some(done.exit_code != 0);
                // Images among the rich results, as MCP image content a model can see.
                for res in &done.results {
                    if let Some(png) = &res.png {
                        r.content
                            .push(ContentBlock::image(png.clone(), "image/png"));
                    } else if let Some(jpeg) = &res.jpeg {
                        r.content
                            .push(ContentBlock::image(jpeg.clone(), "image/jpeg"));
                    }
                }
            }
        })
        .await
    }

    #[tool(
        description = "Write a file in a sandbox's workspace (/home/user), creating parent \
                       directories. Use encoding \"base64\" for binary content.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            open_world_hint = false
        )
    )]
    async fn write_file(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<WriteFileArgs>,
    ) -> CallToolResult {
        let file = WriteFile {
            path: args.path,
            content: args.content,
            encoding: args.encoding,
        };
        let id = args.sandbox_id;
        self.call(&parts, |st, caller| async move {
            ops::files::write(&st.control, &caller, &id, file).await
        })
        .await
    }

    #[tool(
        description = "Read a file from a sandbox's workspace (/home/user). Returns path, \
                       content and size; content is base64 (with encoding \"base64\") when the \
                       file is not UTF-8 text.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn read_file(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<ReadFileArgs>,
    ) -> CallToolResult {
        let (id, path) = (args.sandbox_id, args.path);
        self.call(&parts, |st, caller| async move {
            ops::files::read(&st.control, &caller, &id, path).await
        })
        .await
    }

    #[tool(
        description = "List every file of a sandbox's workspace (/home/user) with its size.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_files(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<SandboxArgs>,
    ) -> CallToolResult {
        let id = args.sandbox_id;
        self.call(&parts, |st, caller| async move {
            ops::files::list(&st.control, &caller, &id).await
        })
        .await
    }

    #[tool(
        description = "Install pip packages into a sandbox (containers engine). packages is a \
                       space-separated list of plain PEP 508 requirements; options, URLs and \
                       paths are refused.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = true
        )
    )]
    async fn install_packages(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<InstallPackagesArgs>,
    ) -> CallToolResult {
        let (id, packages) = (args.sandbox_id, args.packages);
        self.call(&parts, |st, caller| async move {
            ops::sandboxes::install(&st.control, &caller, &id, Some(&packages), None).await
        })
        .await
    }

    #[tool(
        description = "List your active sandboxes with their engine and remaining lifetime.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_sandboxes(&self, Extension(parts): Extension<Parts>) -> CallToolResult {
        self.call(&parts, |st, caller| async move {
            Ok(ops::sandboxes::list(&st.control, &caller))
        })
        .await
    }

    #[tool(
        description = "Delete a sandbox: every process and file of it is gone.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn delete_sandbox(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<SandboxArgs>,
    ) -> CallToolResult {
        let id = args.sandbox_id;
        self.call(&parts, |st, caller| async move {
            ops::sandboxes::delete(&st.control, &caller, &id).await
        })
        .await
    }

    #[tool(
        description = "Start a persistent Python interpreter (a context) in a sandbox and return \
                       its context_id: run_code with that context_id keeps variables and imports \
                       between calls, like notebook cells. At most 8 per sandbox.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn create_context(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<SandboxArgs>,
    ) -> CallToolResult {
        let id = args.sandbox_id;
        self.call(&parts, |st, caller| async move {
            let req = ops::CreateContext::default();
            ops::contexts::create(&st.control, &caller, &id, req).await
        })
        .await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for CerverMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("cerver", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Run untrusted Python in isolated sandboxes. create_sandbox first, then \
                 run_code, write_file, read_file, list_files with its sandbox_id; \
                 delete_sandbox when done (sandboxes also end after their timeout). Each run \
                 is a fresh Python 3 process; files in /home/user persist for the sandbox's \
                 life.",
            )
    }
}
