//! `/mcp`: the API as Model Context Protocol tools. Driven by the official MCP Python SDK
//! (`tests/python/mcp_client.py`, run with the venv `scripts/setup` makes in `target/pyvenv`),
//! and with plain HTTP for authentication and the transport's edges.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Server, client_with_key, create_key};
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's Python, with the `mcp` package of `tests/python-requirements.txt`.
fn venv_python() -> PathBuf {
    let python = repo_root().join("target/pyvenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup (it creates target/pyvenv from \
         tests/python-requirements.txt)",
        python.display()
    );
    python
}

/// Runs the MCP client script against `s` as `key`; returns the JSON it printed.
fn run_client(s: &Server, key: &str, other_sandbox: &str) -> Value {
    let out = Command::new(venv_python())
        .arg(repo_root().join("tests/python/mcp_client.py"))
        .args([&s.url("/mcp"), key, other_sandbox])
        .output()
        .expect("run the MCP client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the MCP client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

/// The single text block of a tool result.
fn text(result: &Value) -> &str {
    let texts = result["text"].as_array().expect("text blocks");
    assert_eq!(texts.len(), 1, "{result}");
    texts[0].as_str().unwrap()
}

fn assert_ok(result: &Value, what: &str) {
    assert_eq!(result["is_error"], false, "{what}: {result}");
}

fn assert_tool_error(result: &Value, message: &str, what: &str) {
    assert_eq!(result["is_error"], true, "{what}: {result}");
    assert!(text(result).contains(message), "{what}: {result}");
}

#[tokio::test]
async fn an_mcp_client_uses_every_tool() {
    let s = Server::start();
    // Another user, with a sandbox of their own.
    let other_key = create_key(&s.data_dir, "other@example.com", "pro");
    let other = client_with_key(&other_key);
    let resp = other.post(s.url("/sandbox")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let other_sandbox = resp.json::<Value>().await.unwrap()["sandbox_id"]
        .as_str()
        .unwrap()
        .to_string();

    let r = run_client(&s, &s.key, &other_sandbox);

    // A session with the initialize handshake (the newest revision that has one) ...
    assert_eq!(r["server"]["name"], "cerver", "{r}");
    assert_eq!(r["server"]["protocol_version"], "2025-11-25");
    assert_eq!(r["server"]["has_tools"], true);
    assert!(r["server"]["instructions"].is_string());

    // A context made with create_context keeps state between run_code calls.
    assert_ok(&r["context_run"], "context_run");
    assert_eq!(
        r["context_run"]["structured"]["results"][0]["text"], "42",
        "{}",
        r["context_run"]
    );

    // Image results come back as MCP image content (base64 of b"\x89PNG-ish").
    let run_image = &r["run_image"];
    assert_ok(run_image, "run_image");
    assert_eq!(
        run_image["images"],
        json!([{"data": "iVBORy1pc2g=", "mime_type": "image/png"}]),
        "{run_image}"
    );
    assert_eq!(
        run_image["structured"]["results"][1]["text"], "42",
        "{run_image}"
    );

    // The tools, each described, with the arguments its schema requires.
    let tools = r["tools"].as_object().expect("tools");
    let expected: &[(&str, &[&str])] = &[
        ("create_sandbox", &[]),
        ("run_code", &["sandbox_id", "code"]),
        ("write_file", &["sandbox_id", "path", "content"]),
        ("read_file", &["sandbox_id", "path"]),
        ("list_files", &["sandbox_id"]),
        ("install_packages", &["sandbox_id", "packages"]),
        ("list_sandboxes", &[]),
        ("delete_sandbox", &["sandbox_id"]),
        ("create_context", &["sandbox_id"]),
    ];
    let mut names: Vec<&str> = tools.keys().map(String::as_str).collect();
    names.sort();
    let mut want: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
    want.sort();
    assert_eq!(names, want);
    for (name, required) in expected {
        let tool = &tools[*name];
        let description = tool["description"].as_str().unwrap_or_default();
        assert!(description.len() > 20, "{name}: {tool}");
        let schema = &tool["input_schema"];
        assert_eq!(schema["type"], "object", "{name}: {schema}");
        let mut got: Vec<&str> = schema["required"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
            .unwrap_or_default();
        got.sort();
        let mut want = required.to_vec();
        want.sort();
        assert_eq!(got, want, "{name}: {schema}");
        for field in *required {
            assert!(
                schema["properties"][field]["description"].is_string(),
                "{name}.{field}: {schema}"
            );
        }
    }
    let run_props = &tools["run_code"]["input_schema"]["properties"];
    assert!(run_props["timeout"].is_object() && run_props["envs"].is_object());
    let create_props = &tools["create_sandbox"]["input_schema"]["properties"];
    for field in ["engine", "timeout_ms", "envs"] {
        assert!(create_props[field].is_object(), "{create_props}");
    }

    // Create, run, files.
    assert_ok(&r["create"], "create");
    let sid = r["sid"].as_str().unwrap();
    assert_eq!(r["create"]["structured"]["engine"], "workers");
    assert_eq!(r["create"]["structured"]["timeout_ms"], 120000);
    assert_eq!(r["create"]["structured"]["envs"], json!(["GREETING"]));

    assert_ok(&r["run"], "run");
    assert_eq!(r["run"]["structured"]["output"], "1024 hi", "{}", r["run"]);
    assert_eq!(r["run"]["structured"]["exit_code"], 0);
    // The text block is the same result as JSON, for clients that read only text.
    let as_text: Value = serde_json::from_str(text(&r["run"])).unwrap();
    assert_eq!(as_text, r["run"]["structured"]);

    assert_ok(&r["write"], "write");
    assert_eq!(r["write"]["structured"]["size"], 15);
    assert_ok(&r["read"], "read");
    assert_eq!(r["read"]["structured"]["content"], "hello from mcp\n");
    assert_ok(&r["list_files"], "list_files");
    let files = r["list_files"]["structured"]["files"].as_array().unwrap();
    assert!(
        files.iter().any(|f| f["path"] == "notes/hello.txt"),
        "{files:?}"
    );
    assert_eq!(
        r["run_reads_file"]["structured"]["output"],
        "HELLO FROM MCP"
    );

    // A run that fails is a tool error that still carries the run's result.
    let fails = &r["run_fails"];
    assert_eq!(fails["is_error"], true, "{fails}");
    assert_eq!(fails["structured"]["exit_code"], 1);
    assert!(
        fails["structured"]["error"]
            .as_str()
            .unwrap()
            .contains("ValueError: boom"),
        "{fails}"
    );
    assert_eq!(r["run_exit_3"]["is_error"], true);
    assert_eq!(r["run_exit_3"]["structured"]["exit_code"], 3);
    assert_eq!(r["run_timeout"]["is_error"], true);
    assert_eq!(r["run_timeout"]["structured"]["exit_code"], -1);
    assert!(
        r["run_timeout"]["structured"]["error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{}",
        r["run_timeout"]
    );

    // Errors carry the HTTP API's messages and codes.
    assert_tool_error(
        &r["bad_timeout"],
        "timeout must be a positive number of seconds",
        "bad timeout",
    );
    assert_eq!(r["bad_timeout"]["structured"]["code"], "invalid_request");
    assert_tool_error(&r["read_missing"], "", "read a missing file");
    assert_eq!(r["read_missing"]["structured"]["code"], "file_not_found");
    assert_eq!(r["escape_path"]["is_error"], true, "{}", r["escape_path"]);
    assert_eq!(r["escape_path"]["structured"]["code"], "invalid_path");
    // Install answers whatever `POST /sandbox/{id}/install` answers.
    let fresh = s.sandbox().await;
    let (status, http_install) = s
        .post(
            &format!("/sandbox/{fresh}/install"),
            json!({"packages": "--index-url http://x six"}),
        )
        .await;
    assert_eq!(status, 400, "{http_install}");
    assert_eq!(r["install_bad"]["is_error"], true, "{}", r["install_bad"]);
    assert_eq!(r["install_bad"]["structured"], http_install);
    assert!(r["install"]["is_error"].is_boolean(), "{}", r["install"]);

    assert_ok(&r["list_sandboxes"], "list_sandboxes");
    let listed = r["list_sandboxes"]["structured"]["sandboxes"]
        .as_array()
        .unwrap();
    let ids: Vec<&str> = listed
        .iter()
        .map(|e| e["sandbox_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [sid], "only the caller's sandboxes");

    // Another user's sandbox does not exist for this caller, and is left alone.
    for what in ["other_run", "other_read", "other_delete"] {
        assert_tool_error(&r[what], "sandbox not found", what);
        assert_eq!(r[what]["structured"]["code"], "not_found");
    }
    let resp = other
        .post(s.url(&format!("/sandbox/{other_sandbox}/run")))
        .json(&json!({"code": "print('still here')"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["output"], "still here");

    assert_ok(&r["delete"], "delete");
    assert_eq!(r["delete"]["structured"]["success"], true);
    assert_tool_error(&r["run_after_delete"], "not found", "run after delete");
    let (status, _) = s.get(&format!("/sandbox/{sid}")).await;
    assert_eq!(status, 404);

    // ... and the same through the newest revision, which has none.
    let modern = &r["modern"];
    assert_eq!(modern["protocol_version"], "2026-07-28", "{modern}");
    assert_ok(&modern["run"], "modern run");
    assert_eq!(modern["run"]["structured"]["output"], "42");
    assert_tool_error(
        &modern["other_run"],
        "sandbox not found",
        "modern other_run",
    );
    assert_ok(&modern["delete"], "modern delete");
}

const MCP_ACCEPT: &str = "application/json, text/event-stream";

fn rpc(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
}

#[tokio::test]
async fn mcp_needs_a_key_and_counts_requests() {
    let s = Server::start();
    let plain = reqwest::Client::new();
    let list = rpc("tools/list", json!({}));

    // No key, a malformed key, an unknown key: 401 with the API's error body.
    for auth in [None, Some("Bearer nope"), Some("Bearer sk_live_0000000000")] {
        let mut req = plain
            .post(s.url("/mcp"))
            .header("accept", MCP_ACCEPT)
            .json(&list);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized", "{body}");
    }

    // With the key: a JSON answer, counted against the daily budget like any request.
    let mut remaining = Vec::new();
    for _ in 0..2 {
        let resp = s
            .client
            .post(s.url("/mcp"))
            .header("accept", MCP_ACCEPT)
            .json(&list)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("application/json"), "{ct}");
        remaining.push(
            resp.headers()["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
        let body: Value = resp.json().await.unwrap();
        let tools = body["result"]["tools"].as_array().expect("tools");
        assert_eq!(tools.len(), 9, "{body}");
    }
    assert_eq!(remaining[0], remaining[1] + 1, "{remaining:?}");

    // A tool call over plain HTTP; the caller's identity reaches the tool.
    let resp = s
        .client
        .post(s.url("/mcp"))
        .header("accept", MCP_ACCEPT)
        .json(&rpc(
            "tools/call",
            json!({"name": "list_sandboxes", "arguments": {}}),
        ))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["result"]["isError"], false, "{body}");
    assert_eq!(
        body["result"]["structuredContent"],
        json!({"sandboxes": []})
    );

    // Arguments that do not fit the tool's schema: a tool error that says why.
    let resp = s
        .client
        .post(s.url("/mcp"))
        .header("accept", MCP_ACCEPT)
        .json(&rpc(
            "tools/call",
            json!({"name": "run_code", "arguments": {"sandbox_id": 5}}),
        ))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["result"]["isError"], true, "{body}");
    let message = body["result"]["content"][0]["text"].as_str().unwrap();
    assert!(message.contains("expected a string"), "{body}");

    // No session: GET (a server stream) and DELETE (end a session) are not offered.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let resp = s
            .client
            .request(method.clone(), s.url("/mcp"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "method_not_allowed");
    }

    // No `Accept` (or `*/*`) accepts anything (RFC 9110), so the JSON answer too.
    for accept in [None, Some("*/*"), Some("text/html, */*;q=0.8")] {
        let mut req = s.client.post(s.url("/mcp")).json(&list);
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "Accept {accept:?}");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["result"]["tools"].is_array(),
            "Accept {accept:?}: {body}"
        );
    }
    // The transport's own refusals come as the API's JSON errors.
    let resp = s
        .client
        .post(s.url("/mcp"))
        .header("accept", "text/html")
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 406);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "not_acceptable", "{body}");

    // The quick reference describes the endpoint and every tool.
    let llms = s
        .client
        .get(s.url("/llms.txt"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "POST /mcp",
        "create_sandbox",
        "run_code",
        "write_file",
        "read_file",
        "list_files",
        "install_packages",
        "list_sandboxes",
        "delete_sandbox",
    ] {
        assert!(llms.contains(needle), "llms.txt does not mention {needle}");
    }

    // Bodies are bounded like every request body.
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"x":"{}"}}}}"#,
        "a".repeat(25 << 20)
    );
    let resp = s
        .client
        .post(s.url("/mcp"))
        .header("accept", MCP_ACCEPT)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large", "{body}");
}
