//! What the server enforces on its inputs, added to the generated OpenAPI document so that a
//! client (or schemathesis, run against `/openapi.json`) can tell a valid request from one
//! the server refuses: path and query formats, env names, e-mail syntax, base64 content,
//! package requirements, the `401`/`429` every keyed route can answer, and the shape of each
//! Server-Sent Event.
//!
//! Written by hand on the document's JSON, because utoipa's derives cannot express these
//! (`propertyNames` patterns, `if`/`then`, `contentSchema`, response headers on every route).
//! Each pattern is the server's rule or a subset of it whose complement the server never
//! answers with a success (e.g. a ten-digit pid names no process): a request the document
//! allows is not refused for its form, and one it forbids is not accepted. Three rules are
//! not patterns and stay in the descriptions: a file path (or a context's `cwd`) that normalizes to nothing or
//! leaves the workspace (400), a one-time link that is unknown, used or expired (400), and
//! install's requirement pattern, a common subset (the server also takes longer names and
//! versions; installs are not fuzzed: they may reach a package index). `scripts/schemathesis`
//! checks the document against the server in both directions.

use serde_json::{Map, Value, json};

/// A sandbox id: the lower-case UUID the server makes (anything else names no sandbox: 404).
const SANDBOX_ID: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
/// A background process's pid: canonical decimal below 10^9 (`ops::processes::parse_pid`
/// takes up to i32::MAX; longer ones name no process).
const PID: &str = "^[1-9][0-9]{0,8}$";
/// A TCP port, 1-65535 in canonical decimal (`Registry::host`).
const PORT: &str =
    "^([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$";
/// An env name (`env::validate_env`): no `=` or NUL, not starting with a digit.
const ENV_NAME: &str = "^[^0-9=\\u0000][^=\\u0000]*$";
/// An e-mail address `cerver_mail::parse_email` accepts: dot-atoms of ASCII `atext`, a
/// domain of letter/digit/hyphen labels; lengths bounded below its 64/254-byte limits.
const EMAIL: &str = "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}){0,2}@[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?){0,4}$";
/// Standard base64 with padding and zero trailing bits (what `base64::STANDARD` decodes).
const BASE64: &str =
    "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";
/// One requirement `packages::parse_one` accepts: a name, extras, one version specifier.
const REQUIREMENT: &str = "[A-Za-z0-9]([A-Za-z0-9._-]{0,30}[A-Za-z0-9])?(\\[[A-Za-z0-9]{1,20}\\])?((==|!=|>=|<=|>|<)[0-9]{1,4}(\\.[0-9]{1,4}){0,3}|~=[0-9]{1,4}(\\.[0-9]{1,4}){1,3})?";

/// Adds every constraint to `doc` (the document as JSON).
pub(crate) fn apply(doc: &mut Value) {
    parameters(doc);
    keyed_routes(doc);
    paused_sandboxes(doc);
    auth_retry_after(doc);
    bodies(&mut doc["components"]["schemas"]);
    event_streams(doc);
}

fn operations(doc: &mut Value) -> impl Iterator<Item = (String, &mut Map<String, Value>)> {
    doc["paths"]
        .as_object_mut()
        .expect("paths")
        .iter_mut()
        .flat_map(|(path, item)| {
            let path = path.clone();
            item.as_object_mut()
                .expect("path item")
                .values_mut()
                .filter_map(Value::as_object_mut)
                .map(move |op| (path.clone(), op))
        })
}

/// Path and query parameter formats.
fn parameters(doc: &mut Value) {
    for (path, op) in operations(doc) {
        let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
            continue;
        };
        for p in params {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            let place = p["in"].as_str().unwrap_or_default().to_string();
            let schema = match (name.as_str(), place.as_str()) {
                ("id", "path") if path.starts_with("/sandbox") => {
                    json!({"type": "string", "pattern": SANDBOX_ID})
                }
                ("pid", "path") => json!({"type": "string", "pattern": PID}),
                ("port", "query") => {
                    p["required"] = json!(true);
                    json!({"type": "string", "pattern": PORT})
                }
                ("token", "query") => {
                    p["required"] = json!(true);
                    json!({"type": "string", "minLength": 1, "maxLength": 256})
                }
                ("path", "query") => {
                    json!({"type": "string", "minLength": 1, "pattern": "^[^\\u0000]*$"})
                }
                _ => continue,
            };
            p["schema"] = schema;
        }
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    })
}

/// Every route behind the API key answers 401 without a valid key and 429 once the day's
/// request budget is spent (with `Retry-After` and `X-RateLimit-*`).
fn keyed_routes(doc: &mut Value) {
    let quota = "The daily request budget is spent (`Retry-After` says when it resets; \
                 `X-RateLimit-Limit`, `-Remaining`, `-Reset` come with it).";
    for (path, op) in operations(doc) {
        if !(path.starts_with("/sandbox") || path == "/mcp") {
            continue;
        }
        let responses = op["responses"].as_object_mut().expect("responses");
        responses
            .entry("401")
            .or_insert_with(|| error_response("Missing or invalid API key."));
        let too_many = responses
            .entry("429")
            .or_insert_with(|| error_response(quota));
        if let Some(d) = too_many["description"].as_str()
            && !d.contains("daily request budget")
        {
            too_many["description"] = json!(format!("{d} Or: {quota}"));
        }
        too_many["headers"] = json!({
            "Retry-After": {"description": "Seconds until the daily budget resets (only when it is spent).", "schema": {"type": "integer", "minimum": 1}},
        });
    }
}

/// A request about a paused sandbox that does not resume it (processes, `/host`) answers 409
/// naming `POST /sandbox/{id}/resume`; the routes that resume first never do, but the document
/// states it on every route of one sandbox rather than track which is which.
fn paused_sandboxes(doc: &mut Value) {
    let paused = "The sandbox is paused: resume it first (`POST /sandbox/{id}/resume`).";
    for (path, op) in operations(doc) {
        if !path.starts_with("/sandbox/{id}/")
            || path.ends_with("/pause")
            || path.ends_with("/resume")
        {
            continue;
        }
        let responses = op["responses"].as_object_mut().expect("responses");
        let conflict = responses
            .entry("409")
            .or_insert_with(|| error_response(paused));
        if let Some(d) = conflict["description"].as_str()
            && !d.contains("is paused")
        {
            conflict["description"] = json!(format!("{d} Or: {paused}"));
        }
    }
}

/// The `/auth/*` 429s (per client address, per mailed address) always carry `Retry-After`.
fn auth_retry_after(doc: &mut Value) {
    for (path, op) in operations(doc) {
        if !path.starts_with("/auth/") {
            continue;
        }
        if let Some(r) = op["responses"].get_mut("429") {
            r["headers"] = json!({
                "Retry-After": {"description": "Seconds until a retry can succeed.", "required": true, "schema": {"type": "integer", "minimum": 1}},
            });
        }
    }
}

/// Request body constraints.
fn bodies(schemas: &mut Value) {
    let envs = json!({
        "type": ["object", "null"],
        "maxProperties": 256,
        "propertyNames": {"type": "string", "pattern": ENV_NAME, "maxLength": 256},
        "additionalProperties": {"type": "string", "pattern": "^[^\\u0000]*$"},
    });
    for (schema, field) in [
        ("CreateSandboxRequest", "envs"),
        ("RunRequest", "envs"),
        ("CreateContextRequest", "envs"),
    ] {
        let f = &mut schemas[schema]["properties"][field];
        let description = f["description"].take();
        *f = envs.clone();
        f["description"] = description;
    }
    // A run in a context takes neither `background` nor `envs` (`ops::runs::split`).
    schemas["RunRequest"]["if"] = json!({
        "required": ["context_id"],
        "properties": {"context_id": {"type": "string"}},
    });
    schemas["RunRequest"]["then"] = json!({
        "properties": {"background": {"enum": [false, null]}, "envs": {"maxProperties": 0}},
    });
    let create = &mut schemas["CreateSandboxRequest"]["properties"];
    create["engine"]["enum"] = json!(["workers", "containers", null]);
    create["timeout_ms"]["maximum"] = json!(i64::MAX);
    create["metadata"]["maxProperties"] = json!(64);
    schemas["SetTimeoutRequest"]["properties"]["timeout_ms"]["maximum"] = json!(i64::MAX);

    let write = &mut schemas["WriteFileRequest"];
    write["properties"]["path"]["minLength"] = json!(1);
    write["properties"]["path"]["pattern"] = json!("^[^\\u0000]*$");
    write["properties"]["encoding"]["enum"] = json!(["utf-8", "utf8", "text", "base64", null]);
    write["if"] =
        json!({"properties": {"encoding": {"const": "base64"}}, "required": ["encoding"]});
    write["then"] = json!({"properties": {"content": {"pattern": BASE64}}});

    let install = &mut schemas["InstallRequest"];
    install["properties"]["packages"]["pattern"] =
        json!(format!("^ *{REQUIREMENT}( +{REQUIREMENT}){{0,9}} *$"));
    install["properties"]["package"]["pattern"] = json!(format!("^{REQUIREMENT}$"));
    install["anyOf"] = json!([
        {"required": ["packages"], "properties": {"packages": {"type": "string"}}},
        {"required": ["package"], "properties": {"package": {"type": "string"}}},
    ]);

    // The JSON-RPC envelope the transport parses (a method or params it does not know is a
    // JSON-RPC error in a 200 answer; a malformed envelope is refused with 415).
    let mcp = &mut schemas["McpMessage"]["properties"];
    mcp["jsonrpc"]["const"] = json!("2.0");
    mcp["id"]["type"] = json!(["string", "integer"]);
    mcp["id"]["minimum"] = json!(i64::MIN);
    mcp["id"]["maximum"] = json!(i64::MAX);

    let email = &mut schemas["EmailRequest"]["properties"]["email"];
    email["pattern"] = json!(EMAIL);
    email["maxLength"] = json!(254);
}

/// A `text/event-stream` answer is a sequence of events whose `data` is one JSON
/// `StreamEvent` (the OpenAPI 3.2 convention: the schema describes one event).
fn event_streams(doc: &mut Value) {
    doc["components"]["schemas"]["ServerSentEvent"] = json!({
        "type": "object",
        "description": "One Server-Sent Event: a `data:` line holding a JSON `StreamEvent` (no `event:` name, so `message`). Keep-alive comments carry no event.",
        "required": ["data"],
        "properties": {
            "event": {"type": "string", "const": "message"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": "#/components/schemas/StreamEvent"},
            },
        },
    });
    for (_, op) in operations(doc) {
        if let Some(media) = op["responses"]["200"]["content"].get_mut("text/event-stream") {
            media["schema"] = json!({"$ref": "#/components/schemas/ServerSentEvent"});
        }
    }
}
