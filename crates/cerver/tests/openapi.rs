//! `GET /openapi.json`: the generated OpenAPI 3.1 document describes exactly the routes the
//! server has, and what the real server sends matches the documented schemas.

mod common;

use std::collections::BTreeSet;

use common::Server;
use serde_json::{Value, json};

/// What the document must say about one route.
struct Route {
    method: &'static str,
    path: &'static str,
    /// Schema of the JSON request body, if the route takes one.
    body: Option<&'static str>,
    /// Media type of the 200 response.
    ok_type: &'static str,
    /// Schema of the 200 response, when it is a component.
    ok_schema: Option<&'static str>,
    /// Error statuses the handler can return (each must reference `ErrorBody`).
    errors: &'static [u16],
}

const fn route(
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    ok_type: &'static str,
    ok_schema: Option<&'static str>,
    errors: &'static [u16],
) -> Route {
    Route {
        method,
        path,
        body,
        ok_type,
        ok_schema,
        errors,
    }
}

const JSON: &str = "application/json";

/// Every (method, path) the server routes (`crates/cerver-api/src/routes.rs`). A new route
/// must be added here *and* documented: `routes_rs_declares_exactly_these_routes` and
/// `documents_exactly_the_routed_routes` fail until both are done.
const ROUTES: &[Route] = &[
    route(
        "post",
        "/auth/signup",
        Some("EmailRequest"),
        JSON,
        Some("SignupResponse"),
        &[400, 422, 503],
    ),
    route(
        "get",
        "/auth/verify-signup",
        None,
        JSON,
        Some("VerifySignupResponse"),
        &[400],
    ),
    route(
        "post",
        "/auth/login",
        Some("EmailRequest"),
        JSON,
        Some("MessageResponse"),
        &[400, 422, 503],
    ),
    route(
        "get",
        "/auth/login/verify",
        None,
        JSON,
        Some("SessionInfo"),
        &[400],
    ),
    route(
        "get",
        "/auth/session",
        None,
        JSON,
        Some("SessionInfo"),
        &[401],
    ),
    route(
        "post",
        "/sandbox/{id}/install",
        Some("InstallRequest"),
        JSON,
        Some("InstallResponse"),
        &[400, 404, 409, 422, 429, 503],
    ),
    route(
        "get",
        "/sandbox/{id}/host",
        None,
        JSON,
        Some("HostResponse"),
        &[400, 403, 404],
    ),
    route(
        "post",
        "/auth/logout",
        None,
        JSON,
        Some("MessageResponse"),
        &[401, 403],
    ),
    route("get", "/dashboard", None, "text/html", None, &[]),
    route(
        "get",
        "/dashboard/{asset}",
        None,
        "text/javascript",
        None,
        &[404],
    ),
    route(
        "get",
        "/account",
        None,
        JSON,
        Some("AccountResponse"),
        &[401],
    ),
    route("get", "/account/keys", None, JSON, Some("KeyList"), &[401]),
    route(
        "post",
        "/account/keys",
        Some("CreateKeyRequest"),
        JSON,
        Some("CreatedKey"),
        &[400, 401, 403, 409, 422],
    ),
    route(
        "delete",
        "/account/keys/{key_id}",
        None,
        JSON,
        Some("RevokedKey"),
        &[401, 403, 404],
    ),
    route(
        "get",
        "/account/sandboxes",
        None,
        JSON,
        Some("SandboxList"),
        &[401],
    ),
    route(
        "delete",
        "/account/sandboxes/{id}",
        None,
        JSON,
        Some("DeleteResponse"),
        &[401, 403, 404],
    ),
    route("get", "/health", None, JSON, Some("Health"), &[]),
    route("get", "/llms.txt", None, "text/plain", None, &[]),
    route("get", "/openapi.json", None, JSON, None, &[]),
    route("get", "/metrics", None, "text/plain", None, &[401, 403]),
    route(
        "post",
        "/sandbox",
        Some("CreateSandboxRequest"),
        JSON,
        Some("SandboxInfo"),
        &[400, 413, 422, 429, 503],
    ),
    route("get", "/sandboxes", None, JSON, Some("SandboxList"), &[]),
    route(
        "get",
        "/sandbox/{id}",
        None,
        JSON,
        Some("SandboxInfo"),
        &[404],
    ),
    route(
        "post",
        "/sandbox/{id}/timeout",
        Some("SetTimeoutRequest"),
        JSON,
        Some("SetTimeoutResponse"),
        &[400, 404, 413, 422],
    ),
    route(
        "post",
        "/sandbox/{id}/run",
        Some("RunRequest"),
        JSON,
        Some("RunResult"),
        &[400, 404, 413, 422, 429, 503],
    ),
    route(
        "post",
        "/sandbox/{id}/run/stream",
        Some("RunRequest"),
        "text/event-stream",
        Some("ServerSentEvent"),
        &[400, 404, 413, 422, 429, 503],
    ),
    route(
        "post",
        "/sandbox/{id}/files",
        Some("WriteFileRequest"),
        JSON,
        Some("WriteFileResponse"),
        &[400, 404, 413, 422],
    ),
    route(
        "get",
        "/sandbox/{id}/files",
        None,
        JSON,
        Some("GetFilesResponse"),
        &[400, 404, 413],
    ),
    route(
        "post",
        "/mcp",
        Some("McpMessage"),
        JSON,
        None,
        &[400, 401, 406, 413, 415, 429],
    ),
    route(
        "post",
        "/sandbox/{id}/contexts",
        Some("CreateContextRequest"),
        JSON,
        Some("ContextInfo"),
        &[400, 404, 422, 429, 503],
    ),
    route(
        "get",
        "/sandbox/{id}/contexts",
        None,
        JSON,
        Some("ContextList"),
        &[404],
    ),
    route(
        "post",
        "/sandbox/{id}/contexts/{context_id}/restart",
        None,
        JSON,
        Some("ContextInfo"),
        &[404, 429, 503],
    ),
    route(
        "delete",
        "/sandbox/{id}/contexts/{context_id}",
        None,
        JSON,
        Some("DeleteContextResponse"),
        &[404],
    ),
    route(
        "get",
        "/sandbox/{id}/processes",
        None,
        JSON,
        Some("ProcessList"),
        &[404],
    ),
    route(
        "get",
        "/sandbox/{id}/processes/{pid}",
        None,
        JSON,
        Some("ProcessDetail"),
        &[400, 404],
    ),
    route(
        "get",
        "/sandbox/{id}/processes/{pid}/stream",
        None,
        "text/event-stream",
        Some("ServerSentEvent"),
        &[400, 404, 429],
    ),
    route(
        "delete",
        "/sandbox/{id}/processes/{pid}",
        None,
        JSON,
        Some("KillProcessResponse"),
        &[400, 404],
    ),
    // Last: the live-server test calls the routes in this order.
    route(
        "delete",
        "/sandbox/{id}",
        None,
        JSON,
        Some("DeleteResponse"),
        &[404],
    ),
];

/// Schemas that must be components.
const SCHEMAS: &[&str] = &[
    "RunRequest",
    "RunResponse",
    "SandboxInfo",
    "ErrorBody",
    "StreamEvent",
    "ServerSentEvent",
    "ProcessInfo",
    "CreateSandboxRequest",
    "WriteFileRequest",
];

const HTTP_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(s: &Server) -> Value {
    let (status, doc) = s.get("/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    doc
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    op
}

/// Follows a local `$ref` to its component schema.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("non-local $ref {r}"));
            let target = &doc["components"]["schemas"][name];
            assert!(target.is_object(), "{r} is referenced but not defined");
            resolve(doc, target)
        }
        None => schema,
    }
}

fn component<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no component schema {name}");
    schema
}

fn ref_of(schema: &Value) -> Option<&str> {
    schema["$ref"]
        .as_str()?
        .strip_prefix("#/components/schemas/")
}

/// The first documented example of a component schema.
fn example(doc: &Value, name: &str) -> Value {
    component(doc, name)["examples"][0].clone()
}

fn kind_matches(kind: &str, v: &Value) -> bool {
    match kind {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown JSON Schema type {other}"),
    }
}

/// Checks `v` against the subset of JSON Schema that the document uses: `$ref`, `oneOf`,
/// `type`, `enum`, `required`, `properties` (no undocumented fields), `additionalProperties`,
/// `items`.
fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(branches) = schema["oneOf"].as_array() {
        let matching = branches
            .iter()
            .filter(|b| conforms(doc, b, v, at).is_ok())
            .count();
        if matching != 1 {
            return Err(format!("{at}: {v} matches {matching} branches of oneOf"));
        }
        return Ok(());
    }
    match &schema["type"] {
        Value::String(kind) if !kind_matches(kind, v) => {
            return Err(format!("{at}: {v} is not of type {kind}"));
        }
        Value::Array(kinds) if !kinds.iter().any(|k| kind_matches(k.as_str().unwrap(), v)) => {
            return Err(format!("{at}: {v} is none of {kinds:?}"));
        }
        _ => {}
    }
    if let Some(allowed) = schema["enum"].as_array().filter(|a| !a.contains(v)) {
        return Err(format!("{at}: {v} is not one of {allowed:?}"));
    }
    if let Some(obj) = v.as_object() {
        for req in schema["required"].as_array().into_iter().flatten() {
            let req = req.as_str().unwrap();
            if !obj.contains_key(req) {
                return Err(format!("{at}: required field `{req}` is missing from {v}"));
            }
        }
        let props = schema["properties"].as_object();
        for (k, field) in obj {
            let sub = format!("{at}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(s) => conforms(doc, s, field, &sub)?,
                None if schema["additionalProperties"].is_object() => {
                    conforms(doc, &schema["additionalProperties"], field, &sub)?
                }
                None if props.is_some() => {
                    return Err(format!("{sub}: the server sends an undocumented field"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            conforms(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn assert_conforms(doc: &Value, schema: &Value, v: &Value, what: &str) {
    if let Err(e) = conforms(doc, schema, v, what) {
        panic!("{e}\nschema: {schema}");
    }
}

/// The `data:` payloads of a complete Server-Sent Events body.
fn sse_events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .flat_map(|frame| frame.lines())
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

/// The routes `routes.rs` declares: `(method, path)` of every `.route("path", get(..).post(..))`.
fn declared_routes(src: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for chunk in src.split(".route(").skip(1) {
        let mut depth = 1;
        let end = chunk
            .char_indices()
            .find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i);
                        }
                    }
                    _ => {}
                }
                None
            })
            .expect("balanced parentheses in .route(...)");
        let args = &chunk[..end];
        let path = args.split('"').nth(1).expect("a path literal");
        for m in HTTP_METHODS {
            for (i, _) in args.match_indices(&format!("{m}(")) {
                let before = args[..i].chars().next_back();
                if !matches!(before, Some(c) if c.is_alphanumeric() || c == '_' || c == ':') {
                    out.insert((m.to_string(), path.to_string()));
                }
            }
        }
    }
    out
}

fn expected_routes() -> BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect()
}

#[test]
fn routes_rs_declares_exactly_these_routes() {
    let declared = declared_routes(include_str!("../../cerver-api/src/routes.rs"));
    assert_eq!(
        declared,
        expected_routes(),
        "routes.rs and this test's ROUTES differ: document the new route and list it here"
    );
}

#[tokio::test]
async fn serves_an_openapi_3_1_document() {
    let s = Server::start();
    let resp = s.client.get(s.url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let first = resp.text().await.unwrap();
    let doc: Value = serde_json::from_str(&first).expect("the document is JSON");

    let version = doc["openapi"].as_str().expect("an `openapi` field");
    assert!(version.starts_with("3.1"), "openapi {version}");
    assert_eq!(doc["info"]["title"], "Cerver");
    let (_, health) = s.get("/health").await;
    assert_eq!(doc["info"]["version"], health["version"]);
    assert!(!doc["info"]["description"].as_str().unwrap().is_empty());

    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in SCHEMAS {
        assert!(
            schemas.contains_key(*name),
            "components.schemas lacks {name}"
        );
    }
    // Every reference resolves.
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"").skip(1) {
        let r = &part[..part.find('"').unwrap()];
        resolve(&doc, &json!({ "$ref": r }));
    }

    // Built once: the same bytes every time.
    let again = s.client.get(s.url("/openapi.json")).send().await.unwrap();
    assert_eq!(again.text().await.unwrap(), first);
}

#[tokio::test]
async fn documents_exactly_the_routed_routes() {
    let s = Server::start();
    let doc = document(&s).await;
    let paths = doc["paths"].as_object().expect("paths");

    // Snapshot: exactly these paths, exactly these operations.
    let documented_paths: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let expected_paths: BTreeSet<&str> = ROUTES.iter().map(|r| r.path).collect();
    assert_eq!(documented_paths, expected_paths);
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| HTTP_METHODS.contains(&k.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    assert_eq!(documented, expected_routes());

    let mut operation_ids = BTreeSet::new();
    for r in ROUTES {
        let what = format!("{} {}", r.method, r.path);
        let op = operation(&doc, r.method, r.path);
        assert!(
            operation_ids.insert(op["operationId"].as_str().unwrap().to_string()),
            "{what}: duplicate operationId"
        );
        let params = op["parameters"].as_array().cloned().unwrap_or_default();

        // Path parameters.
        let in_path: Vec<&str> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for name in &in_path {
            let p = params
                .iter()
                .find(|p| p["name"] == *name && p["in"] == "path")
                .unwrap_or_else(|| panic!("{what}: path parameter {name} is not documented"));
            assert_eq!(p["required"], true, "{what}: {name}");
            assert_eq!(p["schema"]["type"], "string", "{what}: {name}");
        }
        let documented_in_path = params.iter().filter(|p| p["in"] == "path").count();
        assert_eq!(documented_in_path, in_path.len(), "{what}: path parameters");

        // Request body.
        match r.body {
            Some(schema) => {
                let content = &op["requestBody"]["content"][JSON];
                assert_eq!(ref_of(&content["schema"]), Some(schema), "{what}: body");
                assert!(
                    example(&doc, schema).is_object(),
                    "{what}: {schema} has no documented example"
                );
            }
            None => assert!(op["requestBody"].is_null(), "{what}: unexpected body"),
        }

        // Responses.
        let responses = op["responses"].as_object().unwrap();
        let ok = &responses
            .get("200")
            .unwrap_or_else(|| panic!("{what}: no 200 response"))["content"];
        let media = &ok[r.ok_type];
        assert!(media.is_object(), "{what}: 200 is not {}: {ok}", r.ok_type);
        match r.ok_schema {
            Some(schema) => assert_eq!(ref_of(&media["schema"]), Some(schema), "{what}"),
            None => assert!(media["schema"]["type"].is_string(), "{what}: {media}"),
        }
        for status in r.errors {
            let resp = responses
                .get(&status.to_string())
                .unwrap_or_else(|| panic!("{what}: status {status} is not documented"));
            assert!(resp["description"].is_string(), "{what} {status}");
        }
        for (status, resp) in responses {
            // A redirect (the login link's 303 to the dashboard) has no body.
            if !status.starts_with('2') && !status.starts_with('3') {
                assert_eq!(
                    ref_of(&resp["content"][JSON]["schema"]),
                    Some("ErrorBody"),
                    "{what}: {status} does not reference ErrorBody"
                );
            }
        }
    }

    // The files query.
    let op = operation(&doc, "get", "/sandbox/{id}/files");
    let path_param = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "path")
        .expect("the `path` query parameter");
    assert_eq!(path_param["in"], "query");
    assert_ne!(path_param["required"], true);
    // Creating a sandbox takes an optional body.
    assert_ne!(
        operation(&doc, "post", "/sandbox")["requestBody"]["required"],
        true
    );
}

#[tokio::test]
async fn documented_run_request_example_round_trips() {
    let s = Server::start();
    let doc = document(&s).await;
    let id = s.sandbox().await;

    let request = example(&doc, "RunRequest");
    assert!(request["code"].is_string(), "RunRequest example: {request}");
    let (status, response) = s.post(&format!("/sandbox/{id}/run"), request).await;
    assert_eq!(status, 200, "{response}");

    let schema = component(&doc, "RunResponse");
    let required = schema["required"].as_array().expect("required fields");
    assert!(!required.is_empty());
    for field in required {
        let field = field.as_str().unwrap();
        assert!(
            response.get(field).is_some(),
            "RunResponse requires `{field}`, the server sent {response}"
        );
    }
    assert_conforms(&doc, schema, &response, "RunResponse");
    assert_eq!(response["exit_code"], 0, "{response}");
    assert_eq!(response["output"], "50");
}

/// Calls every documented route on the real server with its documented examples and checks
/// each 200 answer against its documented schema; every other method on a documented path
/// is refused with 405.
#[tokio::test]
async fn every_route_answers_as_documented() {
    let s = Server::start();
    let doc = document(&s).await;
    let id = s.sandbox().await;
    // A background process for the `{pid}` routes (short: its stream ends with `exit`).
    let (status, process) = s
        .post(
            &format!("/sandbox/{id}/run"),
            json!({"code": "print('hi')", "background": true}),
        )
        .await;
    assert_eq!(status, 200, "{process}");
    assert_conforms(
        &doc,
        component(&doc, "ProcessInfo"),
        &process,
        "ProcessInfo",
    );
    let pid = process["pid"].to_string();
    let (status, context) = s.post(&format!("/sandbox/{id}/contexts"), json!({})).await;
    assert_eq!(status, 200, "{context}");
    let context_id = context["context_id"].as_str().unwrap().to_string();

    for r in ROUTES {
        // These need a secret that only arrives by email (the session routes are called
        // and checked against these schemas by tests/dashboard.rs), real package installs (covered by
        // tests/containers.rs and tests/accounts.rs) or a containers sandbox (host:
        // tests/ports.rs). `/mcp` needs an MCP client's headers; tests/mcp.rs drives it with
        // the official MCP SDK.
        if matches!(
            r.path,
            "/auth/verify-signup"
                | "/auth/login/verify"
                | "/auth/session"
                | "/auth/logout"
                | "/dashboard/{asset}"
                | "/account"
                | "/account/keys"
                | "/account/keys/{key_id}"
                | "/account/sandboxes"
                | "/account/sandboxes/{id}"
                | "/sandbox/{id}/install"
                | "/sandbox/{id}/host"
                | "/mcp"
        ) {
            continue;
        }
        let what = format!("{} {}", r.method, r.path);
        let op = operation(&doc, r.method, r.path);
        let path = r
            .path
            .replace("{id}", &id)
            .replace("{pid}", &pid)
            .replace("{context_id}", &context_id);
        let query: Vec<(String, String)> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .map(|p| {
                let example = p["example"].as_str().unwrap_or_else(|| {
                    panic!("{what}: query parameter {} has no example", p["name"])
                });
                (p["name"].as_str().unwrap().to_string(), example.to_string())
            })
            .collect();
        // With the documented query parameters, and (when all are optional) without.
        let mut queries = vec![query.clone()];
        if !query.is_empty()
            && op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["in"] != "query" || p["required"] != true)
        {
            queries.push(Vec::new());
        }
        for query in queries {
            let method = reqwest::Method::from_bytes(r.method.to_uppercase().as_bytes()).unwrap();
            let mut req = s.client.request(method, s.url(&path)).query(&query);
            if let Some(schema) = r.body {
                req = req.json(&example(&doc, schema));
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
            let body = resp.text().await.unwrap();
            assert_eq!(status, 200, "{what} {query:?}: {body}");
            assert!(ct.starts_with(r.ok_type), "{what}: content-type {ct}");
            let schema = &op["responses"]["200"]["content"][r.ok_type]["schema"];
            match r.ok_type {
                "text/event-stream" => {
                    // Each event's `data` is a JSON `StreamEvent` (the event's own schema).
                    let data = &resolve(&doc, schema)["properties"]["data"];
                    assert_eq!(data["contentMediaType"], JSON, "{what}");
                    let events = sse_events(&body);
                    assert_eq!(events.last().unwrap()["type"], "exit", "{body}");
                    for ev in &events {
                        assert_conforms(&doc, &data["contentSchema"], ev, &what);
                    }
                }
                JSON => {
                    let v: Value = serde_json::from_str(&body).unwrap();
                    assert_conforms(&doc, schema, &v, &what);
                }
                _ => assert!(!body.is_empty(), "{what}: empty body"),
            }
        }
    }

    // Methods that are not documented are not routed.
    let documented = expected_routes();
    for path in ROUTES.iter().map(|r| r.path).collect::<BTreeSet<_>>() {
        for m in ["get", "post", "put", "patch", "delete"] {
            if documented.contains(&(m.to_string(), path.to_string())) {
                continue;
            }
            let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let url = s.url(&path.replace("{id}", &id).replace("{pid}", &pid));
            let resp = s.client.request(method, url).send().await.unwrap();
            assert_eq!(
                resp.status(),
                405,
                "{m} {path} is routed but not documented"
            );
            let v: Value = resp.json().await.unwrap();
            assert_conforms(&doc, component(&doc, "ErrorBody"), &v, "405");
        }
    }

    // A documented error answers with an ErrorBody.
    let (status, v) = s.get(&format!("/sandbox/{id}")).await;
    assert_eq!(status, 404, "the sandbox was deleted: {v}");
    let op = operation(&doc, "get", "/sandbox/{id}");
    assert_conforms(
        &doc,
        &op["responses"]["404"]["content"][JSON]["schema"],
        &v,
        "404",
    );
}

/// The document states what the server enforces (`openapi_constraints.rs`), and the server
/// does what it states: the edges schemathesis found (`scripts/schemathesis` runs it).
#[tokio::test]
async fn documents_what_the_server_enforces() {
    let s = Server::start();
    let doc = document(&s).await;
    let param = |method: &str, path: &str, name: &str| -> Value {
        operation(&doc, method, path)["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path}: no parameter {name}"))
            .clone()
    };
    // Path formats: a sandbox id is a lower-case UUID, a pid canonical decimal.
    let id = param("get", "/sandbox/{id}", "id");
    assert!(
        id["schema"]["pattern"]
            .as_str()
            .unwrap()
            .contains("[0-9a-f]{8}")
    );
    let pid = param("get", "/sandbox/{id}/processes/{pid}", "pid");
    assert_eq!(pid["schema"]["pattern"], "^[1-9][0-9]{0,8}$");
    let sandbox = s.sandbox().await;
    for (bad, status) in [("01", 400), ("0", 400), ("1x", 400), ("999999999", 404)] {
        let (got, v) = s.get(&format!("/sandbox/{sandbox}/processes/{bad}")).await;
        assert_eq!(got, status, "pid {bad}: {v}");
    }
    // The port is required and 1-65535; the one-time links need a token.
    let port = param("get", "/sandbox/{id}/host", "port");
    assert_eq!(port["required"], true);
    assert!(port["schema"]["pattern"].is_string());
    assert_eq!(
        param("get", "/auth/verify-signup", "token")["required"],
        true
    );

    // Bodies: env names, engines, e-mail syntax, base64 content, requirements.
    let schemas = &doc["components"]["schemas"];
    let envs = &schemas["RunRequest"]["properties"]["envs"];
    assert!(envs["propertyNames"]["pattern"].is_string(), "{envs}");
    assert_eq!(
        schemas["CreateSandboxRequest"]["properties"]["engine"]["enum"],
        json!(["workers", "containers", null])
    );
    assert!(schemas["EmailRequest"]["properties"]["email"]["pattern"].is_string());
    assert!(schemas["WriteFileRequest"]["then"]["properties"]["content"]["pattern"].is_string());
    assert!(schemas["InstallRequest"]["properties"]["packages"]["pattern"].is_string());
    // A body that is a JSON array is not an object, whatever serde would make of it.
    let (status, v) = s.post_raw("/sandbox", "[]").await;
    assert_eq!(status, 422, "{v}");
    let run = format!("/sandbox/{sandbox}/run");
    let (status, v) = s.post_raw(&run, "[\"print(1)\"]").await;
    assert_eq!(status, 422, "{v}");
    // timeout_ms above the documented int64 is refused, not capped.
    let max = &schemas["CreateSandboxRequest"]["properties"]["timeout_ms"]["maximum"];
    assert_eq!(max, &json!(i64::MAX));
    let (status, v) = s
        .post_raw("/sandbox", "{\"timeout_ms\": 9223372036854775808}")
        .await;
    assert_eq!(status, 400, "{v}");

    // Every keyed route documents 401 and the daily budget's 429 with Retry-After; the
    // `/auth/*` 429s always carry it.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = &op["responses"];
            if path.starts_with("/sandbox") {
                assert!(responses["401"].is_object(), "{method} {path}: no 401");
                assert!(
                    responses["429"]["headers"]["Retry-After"].is_object(),
                    "{method} {path}: no 429 with Retry-After"
                );
            }
            if path.starts_with("/auth/") && responses["429"].is_object() {
                assert_eq!(
                    responses["429"]["headers"]["Retry-After"]["required"], true,
                    "{method} {path}"
                );
            }
        }
    }
    s.stop();
}
