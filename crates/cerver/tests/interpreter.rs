//! The code interpreter, end to end against the real binary: line-buffered stream events, rich
//! results (the last expression, `display()`, `_repr_*_` objects, bounds, a forged results
//! channel), structured errors.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use futures::StreamExt;
use serde_json::{Value, json};

/// Every event of a `/run/stream` (or `/processes/{pid}/stream`) answer, with its arrival time.
async fn stream_events(s: &Server, path: &str, body: Value) -> Vec<(Value, Instant)> {
    let resp = s.client.post(s.url(path)).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    read_sse(resp).await
}

async fn read_sse(resp: reqwest::Response) -> Vec<(Value, Instant)> {
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(pos) = buf.find("\n\n") {
            let frame = buf[..pos].to_string();
            buf.drain(..pos + 2);
            for line in frame.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    events.push((serde_json::from_str::<Value>(data).unwrap(), Instant::now()));
                }
            }
        }
        if events.last().is_some_and(|(e, _)| e["type"] == "exit") {
            break;
        }
    }
    events
}

fn of_type<'a>(events: &'a [(Value, Instant)], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .map(|(e, _)| e)
        .filter(|e| e["type"] == kind)
        .collect()
}

#[tokio::test]
async fn stream_events_are_whole_lines() {
    let s = Server::start();
    let id = s.sandbox().await;
    let path = format!("/sandbox/{id}/run/stream");
    // As in the documentation (with shorter sleeps), and a tight loop of prints.
    let code = "import time, sys\nfor i in range(3):\n    print(i)\n    time.sleep(0.2)\n\
                for i in range(200):\n    print('line', i)\n\
                for i in range(5):\n    print('err', i, file=sys.stderr)";
    let events = stream_events(&s, &path, json!({"code": code})).await;
    let out: Vec<&str> = of_type(&events, "stdout")
        .iter()
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    let mut want = vec!["0\n".to_string(), "1\n".into(), "2\n".into()];
    want.extend((0..200).map(|i| format!("line {i}\n")));
    assert_eq!(out, want, "one stdout event per line");
    let err: Vec<&str> = of_type(&events, "stderr")
        .iter()
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    assert_eq!(
        err,
        (0..5).map(|i| format!("err {i}\n")).collect::<Vec<_>>()
    );
    assert_eq!(events.last().unwrap().0["type"], "exit");

    // A partial line still goes out promptly (well before the run ends), flushed or not.
    let code = "import time, sys\nprint('prompt> ', end='')\ntime.sleep(1.5)\n\
                sys.stdout.write('x')\nsys.stdout.flush()\ntime.sleep(1.5)\nprint()";
    let t0 = Instant::now();
    let events = stream_events(&s, &path, json!({"code": code})).await;
    let out = of_type(&events, "stdout");
    assert_eq!(out.len(), 3, "{events:?}");
    assert_eq!(out[0]["data"], "prompt> ");
    assert_eq!(out[1]["data"], "x");
    assert_eq!(out[2]["data"], "\n");
    let first = events
        .iter()
        .find(|(e, _)| e["type"] == "stdout")
        .unwrap()
        .1;
    assert!(
        first.duration_since(t0) < Duration::from_millis(1200),
        "the partial line came after {:?}",
        first.duration_since(t0)
    );
    // The synchronous answer is unchanged.
    let v = s.run(&id, "for i in range(3):\n    print(i)").await;
    assert_eq!(v["output"], "0\n1\n2");
}

#[tokio::test]
async fn process_streams_are_whole_lines() {
    let s = Server::start();
    let id = s.sandbox().await;
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/run"),
            json!({"code": "import time\ntime.sleep(0.3)\nfor i in range(50):\n    print(i)", "background": true}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let pid = v["pid"].as_u64().unwrap();
    let resp = s
        .client
        .get(s.url(&format!("/sandbox/{id}/processes/{pid}/stream")))
        .send()
        .await
        .unwrap();
    let events = read_sse(resp).await;
    let out: Vec<String> = of_type(&events, "stdout")
        .iter()
        .map(|e| e["data"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(out, (0..50).map(|i| format!("{i}\n")).collect::<Vec<_>>());
}

#[tokio::test]
async fn last_expression_display_and_reprs() {
    let s = Server::start();
    let id = s.sandbox().await;
    // A plain run: no results, output unchanged.
    let v = s.run(&id, "x = 5\nprint(x * 10)").await;
    assert_eq!(v["output"], "50");
    assert_eq!(v["results"], json!([]));
    assert!(v.get("error_info").is_none(), "{v}");

    // The last expression is the main result, not printed.
    let v = s.run(&id, "x = 6\nx * 7").await;
    assert_eq!(v["output"], "");
    assert_eq!(
        v["results"],
        json!([{"text": "42", "is_main_result": true}])
    );
    // A call returning None is no result; a statement at the end neither.
    let v = s.run(&id, "print('hi')").await;
    assert_eq!(
        (v["output"].as_str(), v["results"].clone()),
        (Some("hi"), json!([]))
    );

    let code = r#"
class Table:
    def _repr_html_(self): return "<table><tr><td>1</td></tr></table>"
    def _repr_markdown_(self): return "| a |"
    def _repr_png_(self): return b"\x89PNG fake"
    def _repr_json_(self): return {"a": [1, 2]}
    def _repr_latex_(self): return r"$x^2$"
    def __repr__(self): return "Table()"
from IPython.display import HTML, display
display(HTML("<b>first</b>"), Table())
import cerver_display
cerver_display.display(cerver_display.SVG("<svg/>"))
Table()
"#;
    let v = s.run(&id, code).await;
    assert_eq!(v["error"], "", "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{v}");
    assert_eq!(results[0]["html"], "<b>first</b>");
    assert_eq!(results[0]["is_main_result"], false);
    assert_eq!(results[1]["html"], "<table><tr><td>1</td></tr></table>");
    assert_eq!(results[1]["markdown"], "| a |");
    assert_eq!(results[1]["json"], json!({"a": [1, 2]}));
    assert_eq!(results[1]["latex"], "$x^2$");
    assert_eq!(results[1]["text"], "Table()");
    assert_eq!(
        results[1]["png"], "iVBORyBmYWtl",
        "base64 of b'\\x89PNG fake'"
    );
    assert_eq!(results[2]["svg"], "<svg/>");
    assert_eq!(results[3]["is_main_result"], true);
    assert_eq!(results[3]["html"], results[1]["html"]);

    // Streams carry them as `result` events before `exit`.
    let events = stream_events(
        &s,
        &format!("/sandbox/{id}/run/stream"),
        json!({"code": "print(1)\ndisplay(1)\n2 + 2"}),
    )
    .await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|(e, _)| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["stdout", "result", "result", "exit"], "{events:?}");
    assert_eq!(events[2].0["text"], "4");
    assert_eq!(events[2].0["is_main_result"], true);
}

#[tokio::test]
async fn errors_come_structured_and_output_is_unchanged() {
    let s = Server::start();
    let id = s.sandbox().await;
    let v = s.run(&id, "print('before')\n1 / 0").await;
    assert_eq!(v["output"], "before");
    assert_eq!(v["exit_code"], 1);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("Traceback (most recent call last):\n  File \"<string>\", line 2"),
        "{v}"
    );
    assert_eq!(v["error_info"]["name"], "ZeroDivisionError");
    assert_eq!(v["error_info"]["value"], "division by zero");
    let tb = v["error_info"]["traceback"].as_str().unwrap();
    assert!(tb.contains("ZeroDivisionError: division by zero"), "{tb}");
    assert!(
        !tb.contains("zygote"),
        "the zygote's frames are hidden: {tb}"
    );
    assert_eq!(v["results"], json!([]));

    let v = s.run(&id, "def f(:\n  pass").await;
    assert_eq!(v["error_info"]["name"], "SyntaxError", "{v}");
    // exit() is not an error.
    let v = s.run(&id, "import sys\nsys.exit(3)").await;
    assert_eq!(v["exit_code"], 3);
    assert!(v.get("error_info").is_none(), "{v}");

    let events = stream_events(
        &s,
        &format!("/sandbox/{id}/run/stream"),
        json!({"code": "raise ValueError('bad')"}),
    )
    .await;
    let exit = &events.last().unwrap().0;
    assert_eq!(exit["error_info"]["name"], "ValueError", "{exit}");
    assert_eq!(exit["error_info"]["value"], "bad");
}

#[tokio::test]
async fn results_are_bounded_and_cannot_be_forged() {
    let s = Server::start();
    let id = s.sandbox().await;
    // Count bound: 32 kept, then a marker.
    let v = s.run(&id, "for i in range(100):\n    display(i)").await;
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 33, "{v}");
    assert_eq!(results[31]["text"], "31");
    assert_eq!(results[32]["truncated"], true);
    assert!(results[32]["text"].as_str().unwrap().contains("truncated"));

    // Byte bound: 8 MiB in all.
    let code = "class Big:\n    def _repr_html_(self): return 'x' * (3 << 20)\n\
                for _ in range(5):\n    display(Big())";
    let v = s.run(&id, code).await;
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "two fit, then the marker");
    assert_eq!(results[2]["truncated"], true);

    // Printing a result line is output, not a result.
    let line = r#"{"type":"result","text":"forged","is_main_result":true}"#;
    let v = s.run(&id, &format!("print('{line}')")).await;
    assert_eq!(v["output"], line);
    assert_eq!(v["results"], json!([]));

    // Writing garbage (or an endless line) straight into the results descriptor only breaks
    // this run's own results; the server stays well.
    let code = "import os\nfor fd in range(3, 64):\n    try:\n        \
                os.write(fd, b'{\"type\":\"result\",\"text\":\"mine\"}\\n' + b'z' * 100000 + b'\\n\\xff\\xfe\\n')\n    \
                except OSError:\n        pass\n'main'";
    let v = s.run(&id, code).await;
    assert_eq!(v["exit_code"], 0, "{v}");
    let texts: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["mine", "'main'"], "{v}");
    let v = s.run(&id, "1").await;
    assert_eq!(v["results"], json!([{"text": "1", "is_main_result": true}]));
}

async fn create_context(s: &Server, id: &str, body: Value) -> String {
    let (status, v) = s.post(&format!("/sandbox/{id}/contexts"), body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "running", "{v}");
    v["context_id"].as_str().unwrap().to_string()
}

async fn run_in(s: &Server, id: &str, ctx: &str, code: &str, timeout: f64) -> Value {
    s.run_with(
        id,
        json!({"code": code, "context_id": ctx, "timeout": timeout}),
    )
    .await
}

#[tokio::test]
async fn contexts_keep_state_and_are_managed() {
    let s = Server::start();
    let id = s.sandbox_with(json!({"envs": {"BASE": "b"}})).await;
    let ctx = create_context(&s, &id, json!({"cwd": "proj", "envs": {"MODE": "m"}})).await;
    let v = run_in(
        &s,
        &id,
        &ctx,
        "x = 5\nimport json\nf = open('kept.txt', 'w')",
        10.0,
    )
    .await;
    assert_eq!(
        (v["exit_code"].as_i64(), v["error"].as_str()),
        (Some(0), Some("")),
        "{v}"
    );
    let code = "f.write('hi'); f.flush()\nimport os\nprint(x * 10, os.getcwd(), os.environ['MODE'], os.environ['BASE'], os.getuid())\njson.dumps([x])";
    let v = run_in(&s, &id, &ctx, code, 10.0).await;
    assert_eq!(v["output"], "50 /home/user/proj m b 1000", "{v}");
    assert_eq!(
        v["results"],
        json!([{"text": "'[5]'", "is_main_result": true}])
    );
    // Errors keep the context alive; exit() too.
    let v = run_in(&s, &id, &ctx, "1 / 0", 10.0).await;
    assert_eq!(v["error_info"]["name"], "ZeroDivisionError", "{v}");
    assert_eq!(v["exit_code"], 1);
    let v = run_in(&s, &id, &ctx, "exit(4)", 10.0).await;
    assert_eq!(v["exit_code"], 4, "{v}");
    let v = run_in(&s, &id, &ctx, "print(x)", 10.0).await;
    assert_eq!(v["output"], "5");
    // A stateless run does not see it, and streams work in contexts too.
    assert!(
        s.run(&id, "print(x)").await["error"]
            .as_str()
            .unwrap()
            .contains("NameError")
    );
    let events = stream_events(
        &s,
        &format!("/sandbox/{id}/run/stream"),
        json!({"code": "for i in range(3):\n    print(i + x)\nx", "context_id": ctx}),
    )
    .await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|(e, _)| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["stdout", "stdout", "stdout", "result", "exit"],
        "{events:?}"
    );
    assert_eq!(events[0].0["data"], "5\n");

    // Listing, bad requests, the bound of 8, unknown ids.
    let (status, v) = s.get(&format!("/sandbox/{id}/contexts")).await;
    assert_eq!(status, 200);
    assert_eq!(v["contexts"][0]["context_id"], ctx.as_str());
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/run"),
            json!({"code": "1", "context_id": ctx, "background": true}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/run"),
            json!({"code": "1", "context_id": "ctx_nope"}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    for _ in 1..8 {
        create_context(&s, &id, json!({})).await;
    }
    let (status, v) = s.post(&format!("/sandbox/{id}/contexts"), json!({})).await;
    assert_eq!(status, 429, "{v}");
    assert!(v["error"].as_str().unwrap().contains("8 contexts"), "{v}");

    // Restart: same id, fresh state.
    let (status, v) = s
        .post(&format!("/sandbox/{id}/contexts/{ctx}/restart"), json!({}))
        .await;
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("running")),
        "{v}"
    );
    let v = run_in(&s, &id, &ctx, "print('x' in globals())", 10.0).await;
    assert_eq!(v["output"], "False");
    // Delete frees a slot; a deleted context is unknown.
    let (status, _) = s.delete(&format!("/sandbox/{id}/contexts/{ctx}")).await;
    assert_eq!(status, 200);
    let (status, _) = s.delete(&format!("/sandbox/{id}/contexts/{ctx}")).await;
    assert_eq!(status, 404);
    create_context(&s, &id, json!({})).await;
    // Deleting the sandbox ends every interpreter (no process of it is left).
    let (status, _) = s.delete(&format!("/sandbox/{id}")).await;
    assert_eq!(status, 200);
    let (status, _) = s.get(&format!("/sandbox/{id}/contexts")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn context_timeouts_interrupt_then_kill() {
    let s = Server::start();
    let id = s.sandbox().await;
    let ctx = create_context(&s, &id, json!({})).await;
    run_in(&s, &id, &ctx, "state = 'kept'", 10.0).await;
    // An interruptible run: KeyboardInterrupt, the state survives.
    let t = Instant::now();
    let v = run_in(&s, &id, &ctx, "import time\ntime.sleep(30)", 1.0).await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(v["status"], "timeout", "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("KeyboardInterrupt") && error.contains("timed out"),
        "{v}"
    );
    assert!(error.contains("keeps its state"), "{v}");
    let v = run_in(&s, &id, &ctx, "print(state)", 10.0).await;
    assert_eq!(v["output"], "kept", "{v}");

    // Code that swallows the interrupt: the interpreter is killed and says how to go on.
    let code = "import time\nwhile True:\n    try:\n        time.sleep(10)\n    except KeyboardInterrupt:\n        pass";
    let t = Instant::now();
    let v = run_in(&s, &id, &ctx, code, 1.0).await;
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert_eq!(v["status"], "timeout", "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("restart the context"),
        "{v}"
    );
    let (_, list) = s.get(&format!("/sandbox/{id}/contexts")).await;
    assert_eq!(list["contexts"][0]["status"], "dead", "{list}");
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/run"),
            json!({"code": "1", "context_id": ctx}),
        )
        .await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("restart"), "{v}");
    let (status, _) = s
        .post(&format!("/sandbox/{id}/contexts/{ctx}/restart"), json!({}))
        .await;
    assert_eq!(status, 200);
    let v = run_in(&s, &id, &ctx, "print('back')", 10.0).await;
    assert_eq!(v["output"], "back", "{v}");
}

#[tokio::test]
async fn a_dying_interpreter_is_reported() {
    let s = Server::start();
    let id = s.sandbox().await;
    let ctx = create_context(&s, &id, json!({})).await;
    let v = run_in(
        &s,
        &id,
        &ctx,
        "print('bye', flush=True)\nimport os\nos._exit(3)",
        10.0,
    )
    .await;
    assert_eq!(v["output"], "bye", "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("died") && error.contains("code 3") && error.contains("restart"),
        "{v}"
    );
    assert_eq!(v["status"], "error");
    let (status, _) = s
        .post(&format!("/sandbox/{id}/contexts/{ctx}/restart"), json!({}))
        .await;
    assert_eq!(status, 200);
    let v = run_in(&s, &id, &ctx, "import ctypes\nctypes.string_at(0)", 10.0).await;
    assert_eq!(v["status"], "killed", "{v}");
    assert!(v["error"].as_str().unwrap().contains("signal 11"), "{v}");
    // Out of memory: the kernel kills the interpreter, the run says so.
    let (status, _) = s
        .post(&format!("/sandbox/{id}/contexts/{ctx}/restart"), json!({}))
        .await;
    assert_eq!(status, 200);
    let v = run_in(
        &s,
        &id,
        &ctx,
        "hog = []\nwhile True:\n    hog.append(b'x' * (32 << 20))",
        60.0,
    )
    .await;
    assert_eq!(v["status"], "oom", "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("out of memory"),
        "{v}"
    );
    // The sandbox is fine.
    assert_eq!(s.output(&id, "print(1)").await, "1");
}

#[tokio::test]
async fn contexts_run_concurrently_and_each_serializes() {
    let s = Server::start();
    let id = s.sandbox().await;
    let a = create_context(&s, &id, json!({})).await;
    let b = create_context(&s, &id, json!({})).await;
    let sleep = "import time\ntime.sleep(1)\nprint('done')";
    let t = Instant::now();
    let (va, vb) = tokio::join!(
        run_in(&s, &id, &a, sleep, 10.0),
        run_in(&s, &id, &b, sleep, 10.0)
    );
    let both = t.elapsed();
    assert_eq!(
        (va["output"].as_str(), vb["output"].as_str()),
        (Some("done"), Some("done"))
    );
    assert!(
        both < Duration::from_millis(1800),
        "two contexts ran one after the other: {both:?}"
    );
    // Two runs in one context: one after the other, in order.
    let t = Instant::now();
    let (v1, v2) = tokio::join!(
        run_in(&s, &id, &a, "import time\ntime.sleep(0.6)\nn = 1", 10.0),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            run_in(&s, &id, &a, "print(n)", 10.0).await
        }
    );
    assert_eq!(v1["exit_code"], 0, "{v1}");
    assert_eq!(v2["output"], "1", "{v2}");
    assert!(t.elapsed() >= Duration::from_millis(600));
}

/// The containers engine with a real package: a pandas DataFrame as the last expression gives
/// its HTML table. (The wheels come from the host's cache or the index; matplotlib is not
/// exercised here: its wheel is not in this host's cache and it is large to fetch per test.)
#[tokio::test]
async fn containers_pandas_dataframe_is_html() {
    let s = Server::start();
    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/install"),
            json!({"packages": "pandas"}),
        )
        .await;
    assert_eq!((status, v["success"].as_bool()), (200, Some(true)), "{v}");
    let ctx = create_context(&s, &id, json!({})).await;
    run_in(
        &s,
        &id,
        &ctx,
        "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})",
        60.0,
    )
    .await;
    let v = run_in(&s, &id, &ctx, "df.describe()\ndf", 60.0).await;
    assert_eq!(v["exit_code"], 0, "{v}");
    let main = &v["results"][0];
    assert_eq!(main["is_main_result"], true, "{v}");
    let html = main["html"].as_str().unwrap();
    assert!(
        html.contains("<table") && html.contains("<td>x</td>"),
        "{html}"
    );
    assert!(main["text"].as_str().unwrap().contains("a  b"), "{main}");
}

/// A matplotlib figure left open at the end of a run becomes a `png` result that decodes to a
/// real PNG of (about) the figure's size, without the user saving anything; `plt.show()` in a context
/// gives one too. matplotlib comes from the index (or the host's wheel cache).
#[tokio::test]
async fn containers_matplotlib_figures_are_png_results() {
    use base64::Engine as _;
    let s = Server::start();
    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    let (status, v) = s
        .post(
            &format!("/sandbox/{id}/install"),
            json!({"packages": "matplotlib"}),
        )
        .await;
    assert_eq!((status, v["success"].as_bool()), (200, Some(true)), "{v}");
    let code = "import matplotlib.pyplot as plt\n\
                plt.figure(figsize=(4, 3), dpi=50)\n\
                plt.plot([1, 3, 2])\n\
                print('plotted')";
    let v = s.run_with(&id, json!({"code": code, "timeout": 120})).await;
    assert_eq!(v["exit_code"], 0, "{v}");
    assert_eq!(v["output"], "plotted", "{v}");
    // A normal Python install: fontconfig finds its configuration, nothing on stderr.
    assert_eq!(v["error"], "", "{v}");
    let pngs: Vec<&Value> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.get("png").is_some())
        .collect();
    assert_eq!(pngs.len(), 1, "{v}");
    let png = base64::engine::general_purpose::STANDARD
        .decode(pngs[0]["png"].as_str().unwrap())
        .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    // The figure is 200x150 px; the capture trims it to its drawn area ("tight" bounding box).
    assert!(
        (100..=200).contains(&width) && (75..=150).contains(&height),
        "{width}x{height}"
    );

    let ctx = create_context(&s, &id, json!({})).await;
    let v = run_in(
        &s,
        &id,
        &ctx,
        "import matplotlib.pyplot as plt\nplt.bar([1, 2], [3, 4])\nplt.show()",
        120.0,
    )
    .await;
    assert_eq!(v["exit_code"], 0, "{v}");
    let n = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.get("png").is_some())
        .count();
    assert_eq!(n, 1, "{v}");
}
