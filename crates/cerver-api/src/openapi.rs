//! `GET /openapi.json`: the OpenAPI 3.1 document of this API, generated with `utoipa` from the
//! wire types of `cerver-types` and the `#[utoipa::path]` attributes on the handlers. Nothing
//! here is written by hand but the list of operations and a few words of description.
//!
//! Adding a route: give its handler a `#[utoipa::path]` attribute, list it in [`ApiDoc`]'s
//! `paths(...)`, and add it to the expected routes of `crates/cerver/tests/openapi.rs`.

use std::sync::LazyLock;

use axum::http::{HeaderName, header};
use utoipa::openapi::Required;
use utoipa::{Modify, OpenApi};

use crate::{account, auth, contexts, dashboard, files, mcp, processes, runs, sandboxes, session};

/// The generated API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cerver",
        version = env!("CARGO_PKG_VERSION"),
        description = "Run untrusted Python in secure, isolated sandboxes over HTTP. Each sandbox \
            has a persistent workspace (`/home/user`); each run is a fresh Python 3 process. \
            Every error is a JSON `ErrorBody` (`{\"error\", \"code\"}`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        auth::signup,
        auth::verify_signup,
        auth::login,
        auth::verify_login,
        auth::session,
        session::logout,
        dashboard::page,
        dashboard::asset,
        account::account,
        account::list_keys,
        account::create_key,
        account::revoke_key,
        account::sandboxes,
        account::kill_sandbox,
        health,
        llms_txt,
        openapi_json,
        crate::metrics::scrape,
        sandboxes::create,
        sandboxes::list,
        sandboxes::info,
        sandboxes::delete,
        sandboxes::set_timeout,
        sandboxes::install,
        sandboxes::host,
        runs::run,
        runs::run_stream,
        contexts::create,
        contexts::list,
        contexts::delete,
        contexts::restart,
        processes::list,
        processes::get,
        processes::stream,
        processes::kill,
        files::write,
        files::get,
        mcp::handle,
    ),
    components(schemas(
        cerver_types::CreateSandboxRequest,
        cerver_types::SandboxInfo,
        cerver_types::SandboxList,
        cerver_types::DeleteResponse,
        cerver_types::SetTimeoutRequest,
        cerver_types::SetTimeoutResponse,
        cerver_types::RunRequest,
        cerver_types::RunResponse,
        cerver_types::RichResult,
        cerver_types::ErrorInfo,
        cerver_types::CreateContextRequest,
        cerver_types::ContextInfo,
        cerver_types::ContextList,
        cerver_types::DeleteContextResponse,
        cerver_types::RunStatus,
        cerver_types::StreamEvent,
        cerver_types::RunResult,
        cerver_types::ProcessInfo,
        cerver_types::ProcessList,
        cerver_types::ProcessDetail,
        cerver_types::KillProcessResponse,
        cerver_types::WriteFileRequest,
        cerver_types::WriteFileResponse,
        cerver_types::ReadFileResponse,
        cerver_types::FileInfo,
        cerver_types::ListFilesResponse,
        cerver_types::GetFilesResponse,
        cerver_types::ErrorBody,
        cerver_types::Health,
        cerver_types::account::AccountResponse,
        cerver_types::account::KeyList,
        cerver_types::account::CreateKeyRequest,
        cerver_types::account::CreatedKey,
        cerver_types::account::RevokedKey,
        cerver_types::mcp::McpMessage,
    )),
    tags(
        (name = "sandboxes", description = "Sandbox lifecycle: create, inspect, list, extend, delete."),
        (name = "runs", description = "Running Python code, synchronously or as Server-Sent Events."),
        (name = "contexts", description = "Persistent Python interpreters: state carries over between runs with `\"context_id\"`."),
        (name = "processes", description = "Background processes (started with `\"background\": true`): list, inspect, follow, kill."),
        (name = "files", description = "The sandbox's workspace (`/home/user`): write, read, list."),
        (name = "mcp", description = "The same operations as Model Context Protocol tools, for MCP clients."),
        (name = "dashboard", description = "The web dashboard and its session-authenticated JSON API (`cerver_session` cookie; `X-CSRF-Token` on every change)."),
        (name = "meta", description = "The server itself: health, metrics and API descriptions."),
    ),
    modifiers(&OptionalCreateBody),
)]
pub struct ApiDoc;

/// `POST /sandbox` accepts an empty body (all defaults): its body is documented as the
/// `CreateSandboxRequest` schema, not required. (`Option<T>` in `request_body` would instead
/// document a JSON `null`, which the handler refuses.)
struct OptionalCreateBody;

impl Modify for OptionalCreateBody {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let body = doc
            .paths
            .paths
            .get_mut("/sandbox")
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.request_body.as_mut())
            .expect("POST /sandbox documents a body");
        body.required = Some(Required::False);
    }
}

/// The document, built once.
pub static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

/// The document as served, with what the server enforces on its inputs
/// ([`crate::openapi_constraints`]), serialized once.
static JSON: LazyLock<String> = LazyLock::new(|| {
    let mut doc = serde_json::to_value(&*DOCUMENT).expect("the OpenAPI document serializes");
    crate::openapi_constraints::apply(&mut doc);
    doc.to_string()
});

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    summary = "This API's OpenAPI 3.1 document",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document.", content_type = "application/json", body = Object),
    )
)]
pub async fn openapi_json() -> ([(HeaderName, &'static str); 1], &'static str) {
    ([(header::CONTENT_TYPE, "application/json")], JSON.as_str())
}

// The two handlers below live in `routes.rs`; these bodiless twins carry their documentation.

/// `GET /health`.
#[utoipa::path(
    get,
    path = "/health",
    tag = "meta",
    operation_id = "health",
    summary = "Liveness and version",
    responses((status = 200, description = "The server is up.", body = cerver_types::Health))
)]
#[allow(dead_code)]
fn health() {}

/// `GET /llms.txt`.
#[utoipa::path(
    get,
    path = "/llms.txt",
    tag = "meta",
    operation_id = "llms_txt",
    summary = "The API's quick reference, for people and language models",
    responses(
        (status = 200, description = "A Markdown quick reference of the API.", content_type = "text/plain", body = String),
    )
)]
#[allow(dead_code)]
fn llms_txt() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_is_openapi_3_1_json() {
        let v: serde_json::Value = serde_json::from_str(&JSON).unwrap();
        assert!(v["openapi"].as_str().unwrap().starts_with("3.1"), "{v}");
        assert_eq!(v["info"]["title"], "Cerver");
        assert_eq!(v["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn every_error_response_is_an_error_body() {
        let v: serde_json::Value = serde_json::from_str(&JSON).unwrap();
        for (path, item) in v["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, resp) in op["responses"].as_object().unwrap() {
                    // Successes and redirects (the login link's 303) carry no error body.
                    if status.starts_with('2') || status.starts_with('3') {
                        continue;
                    }
                    assert_eq!(
                        resp["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_referenced_schema_is_defined() {
        let v: serde_json::Value = serde_json::from_str(&JSON).unwrap();
        let schemas = v["components"]["schemas"].as_object().unwrap();
        let text = v.to_string();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(
                schemas.contains_key(name),
                "{name} is referenced, not defined"
            );
        }
    }
}
