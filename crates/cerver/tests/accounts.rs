//! Accounts, keys, plans and quotas against the real binary: sign-up by email (the embedded
//! mail spool), keys, the admin CLI, plan limits, cross-tenant isolation.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, client_with_key, create_key};
use futures::StreamExt;
use serde_json::{Value, json};

/// The link of the newest spooled mail to `to`.
fn link_in_mail(s: &Server, to: &str, path: &str) -> String {
    let dir = s.data_dir.join("mail");
    for _ in 0..50 {
        let mut mails: Vec<_> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .collect();
        mails.sort_by_key(|e| e.file_name());
        for mail in mails.iter().rev() {
            let text = std::fs::read_to_string(mail.path()).unwrap();
            let text = text
                .replace("=\r\n", "")
                .replace("=\n", "")
                .replace("=3D", "=");
            if !text.to_lowercase().contains(&format!("to: {to}")) {
                continue;
            }
            if let Some(start) = text.find(&format!("{}{path}?token=", s.base)) {
                let link: String = text[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || ":/?=._-&%".contains(*c))
                    .collect();
                return link;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no mail to {to} with a {path} link in {}", dir.display());
}

async fn get_json(url: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn sign_up_by_email_then_use_the_key() {
    let s = Server::start();
    let anon = reqwest::Client::new();
    let r = anon
        .post(s.url("/auth/signup"))
        .json(&json!({"email": "You@Example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"], "Verification email sent!");

    let link = link_in_mail(&s, "you@example.com", "/auth/verify-signup");
    let (status, v) = get_json(&link).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["plan"], "trial");
    let key = v["api_key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk_trial_") && key.len() > 30, "{key}");
    // The link works once: no second key.
    let (status, v) = get_json(&link).await;
    assert_eq!(status, 400, "{v}");

    // The key works as documented.
    let client = client_with_key(&key);
    let r = client.post(s.url("/sandbox")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-limit"], "100");
    let id = r.json::<Value>().await.unwrap()["sandbox_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r: Value = client
        .post(s.url(&format!("/sandbox/{id}/run")))
        .json(&json!({"code": "print(2 ** 100)"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["output"], "1267650600228229401496703205376");

    // A browser gets a page showing a key; the same address signing up again gets the same answer.
    anon.post(s.url("/auth/signup"))
        .json(&json!({"email": "you@example.com"}))
        .send()
        .await
        .unwrap();
    let link = link_in_mail(&s, "you@example.com", "/auth/verify-signup");
    let page = anon.get(&link).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("sk_trial_"), "{page}");

    // Bad addresses.
    for bad in ["not-an-email", "a@b\r\nBcc: x@y", ""] {
        let r = anon
            .post(s.url("/auth/signup"))
            .json(&json!({"email": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad:?}");
    }
    let r = anon
        .post(s.url("/auth/signup"))
        .json(&json!({"mail": "x@y.z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let (status, _) = get_json(&s.url("/auth/verify-signup?token=nope")).await;
    assert_eq!(status, 400);

    // Nobody can use the server to flood an inbox: a few mails per address and hour.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = anon
            .post(s.url("/auth/signup"))
            .json(&json!({"email": "victim@example.com"}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
}

#[tokio::test]
async fn login_link_opens_a_session() {
    let s = Server::start();
    let anon = reqwest::Client::new();
    let r = anon
        .post(s.url("/auth/login"))
        .json(&json!({"email": "tester@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let link = link_in_mail(&s, "tester@example.com", "/auth/login/verify");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303, "the link leads to the dashboard");
    assert_eq!(r.headers()["location"], "/dashboard");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let v: Value = anon
        .get(s.url("/auth/session"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["email"], "tester@example.com");
    assert_eq!(
        anon.get(&link).send().await.unwrap().status(),
        400,
        "a login link works once"
    );
    let r = anon.get(s.url("/auth/session")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Unknown addresses get the same answer and no mail.
    let r = anon
        .post(s.url("/auth/login"))
        .json(&json!({"email": "nobody@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn keys_are_required_and_sandboxes_are_private() {
    let s = Server::start();
    let id = s.sandbox().await;
    let anon = reqwest::Client::new();
    for (method, path) in [
        ("POST", "/sandbox".to_string()),
        ("GET", "/sandboxes".to_string()),
        ("GET", format!("/sandbox/{id}")),
        ("POST", format!("/sandbox/{id}/run")),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = anon
            .request(m.clone(), s.url(&path))
            .json(&json!({"code": "1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} without a key");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "unauthorized");
        let r = client_with_key("sk_live_doesnotexist0000000000000000000")
            .request(m, s.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path} with a bad key");
    }

    // Another user's key: every endpoint of A's sandbox answers 404, as if it did not exist.
    let other = client_with_key(&create_key(&s.data_dir, "other@example.com", "pro"));
    let calls: Vec<(reqwest::Method, String, Option<Value>)> = vec![
        (reqwest::Method::GET, format!("/sandbox/{id}"), None),
        (reqwest::Method::DELETE, format!("/sandbox/{id}"), None),
        (
            reqwest::Method::POST,
            format!("/sandbox/{id}/timeout"),
            Some(json!({"timeout_ms": 1000})),
        ),
        (
            reqwest::Method::POST,
            format!("/sandbox/{id}/run"),
            Some(json!({"code": "print(1)"})),
        ),
        (
            reqwest::Method::POST,
            format!("/sandbox/{id}/run/stream"),
            Some(json!({"code": "print(1)"})),
        ),
        (
            reqwest::Method::POST,
            format!("/sandbox/{id}/files"),
            Some(json!({"path": "x", "content": "y"})),
        ),
        (reqwest::Method::GET, format!("/sandbox/{id}/files"), None),
        (
            reqwest::Method::GET,
            format!("/sandbox/{id}/files?path=x"),
            None,
        ),
    ];
    for (m, path, body) in calls {
        let mut req = other.request(m.clone(), s.url(&path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 404, "{m} {path} with another user's key");
    }
    let v: Value = other
        .get(s.url("/sandboxes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["sandboxes"], json!([]));
    // A's sandbox is untouched.
    assert_eq!(s.output(&id, "print('still mine')").await, "still mine");
}

#[tokio::test]
async fn trial_plan_limits_hold_exactly() {
    let s = Server::start();
    let trial = client_with_key(&create_key(&s.data_dir, "trial@example.com", "trial"));

    // One sandbox at a time, lifetime capped at 5 minutes.
    let r = trial
        .post(s.url("/sandbox"))
        .json(&json!({"timeout_ms": 600000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["timeout_ms"], 300000, "{v}");
    assert!(v["notice"].as_str().unwrap().contains("capped"), "{v}");
    let r = trial.post(s.url("/sandbox")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "limit_exceeded");

    // 100 requests a day, exactly, even when 150 arrive at once (2 were used above).
    let mut tasks = Vec::new();
    for _ in 0..150 {
        let c = trial.clone();
        let url = s.url("/sandboxes");
        tasks.push(tokio::spawn(
            async move { c.get(url).send().await.unwrap() },
        ));
    }
    let mut ok = 0;
    let mut limited = None;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => limited = Some(r),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 98, "exactly the remaining budget succeeds");
    let r = limited.expect("some requests are limited");
    let h = r.headers();
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 0);
    assert_eq!(h["x-ratelimit-limit"], "100");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert!(h.contains_key("x-ratelimit-reset"));
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "rate_limited");
}

#[tokio::test]
async fn admin_cli_manages_users_and_keys_while_the_server_runs() {
    let s = Server::start();
    let admin = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cerver"))
            .arg("admin")
            .args(args)
            .arg("--data-dir")
            .arg(&s.data_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let key = admin(&["create-key", "--email", "up@example.com", "--plan", "trial"]);
    let key = key.lines().last().unwrap().trim().to_string();
    assert!(key.starts_with("sk_trial_"));
    let c = client_with_key(&key);
    assert_eq!(
        c.post(s.url("/sandbox")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.post(s.url("/sandbox")).send().await.unwrap().status(),
        429
    );

    // Upgrading takes effect at once: free allows 5 sandboxes and longer lifetimes.
    admin(&["set-plan", "--email", "up@example.com", "--plan", "free"]);
    let r = c
        .post(s.url("/sandbox"))
        .json(&json!({"timeout_ms": 600000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["timeout_ms"], 600000);

    let live = admin(&["create-key", "--email", "up@example.com", "--plan", "free"]);
    assert!(live.lines().last().unwrap().starts_with("sk_live_"));
    let users = admin(&["list-users"]);
    assert!(
        users.contains("up@example.com") && users.contains("free"),
        "{users}"
    );

    admin(&["revoke-key", "--key", &key]);
    assert_eq!(
        c.get(s.url("/sandboxes")).send().await.unwrap().status(),
        401
    );
}

#[tokio::test]
async fn a_fresh_trial_key_gets_exactly_100_of_150_parallel_requests() {
    let s = Server::start();
    let trial = client_with_key(&create_key(&s.data_dir, "fresh@example.com", "trial"));
    let tasks: Vec<_> = (0..150)
        .map(|_| {
            let (c, url) = (trial.clone(), s.url("/sandboxes"));
            tokio::spawn(async move { c.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 100);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 50);
}

#[tokio::test]
async fn install_and_host_are_checked_before_the_engine() {
    let s = Server::start();
    let id = s.sandbox().await;
    let install = format!("/sandbox/{id}/install");
    for bad in [
        "--index-url=http://x y",
        "pkg;id",
        "git+https://example.com/x",
        "../x",
        "a@http://x",
    ] {
        let (status, v) = s.post(&install, json!({"packages": bad})).await;
        assert_eq!(status, 400, "{bad}: {v}");
    }
    let (status, v) = s.post(&install, json!({})).await;
    assert_eq!(status, 400, "{v}");
    let other = client_with_key(&create_key(&s.data_dir, "o2@example.com", "pro"));
    let r = other
        .post(s.url(&install))
        .json(&json!({"package": "six"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Ports: the plan first, then the sandbox, the port and the engine.
    let trial = client_with_key(&create_key(&s.data_dir, "t2@example.com", "trial"));
    let r = trial
        .get(s.url(&format!("/sandbox/{id}/host?port=8080")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (status, v) = s.get(&format!("/sandbox/{id}/host?port=8080")).await;
    assert_eq!(status, 400, "workers sandbox: {v}");
    assert!(v["error"].as_str().unwrap().contains("containers"));
    let (status, _) = s.get(&format!("/sandbox/{id}/host?port=99999")).await;
    assert_eq!(status, 400);
    let c = s.sandbox_with(json!({"engine": "containers"})).await;
    let (status, v) = s.get(&format!("/sandbox/{c}/host?port=8080")).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn request_counts_survive_a_restart() {
    let s = Server::start();
    let key = create_key(&s.data_dir, "counted@example.com", "trial");
    let c = client_with_key(&key);
    for _ in 0..5 {
        assert_eq!(
            c.get(s.url("/sandboxes")).send().await.unwrap().status(),
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // counts are persisted off the request path
    let dir = s.data_dir.clone();
    let s = {
        let data = s.crash();
        assert_eq!(data, dir);
        Server::start_in(data, &[])
    };
    let r = c.get(s.url("/sandboxes")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-ratelimit-remaining"],
        "94",
        "5 before the restart, 1 now"
    );
}

/// Bytes of the database, its WAL included.
fn db_bytes(s: &Server) -> u64 {
    ["cerver.db", "cerver.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(s.data_dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test]
async fn sign_ups_refused_by_the_mail_budget_leave_the_database_flat() {
    // The per-client limit raised so that every request reaches the mail budget.
    let s = Server::start_with(&["--auth-mails-per-hour", "1000000"]);
    let anon = reqwest::Client::new();
    let signup = |anon: reqwest::Client, url: String| async move {
        anon.post(url)
            .json(&json!({"email": "victim@example.com"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    for expected in [200, 200, 200, 200, 200, 429] {
        assert_eq!(signup(anon.clone(), s.url("/auth/signup")).await, expected);
    }
    let before = db_bytes(&s);
    let started = std::time::Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(0..20_000)
        .map(|_| signup(anon.clone(), s.url("/auth/signup")))
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 429));
    assert!(started.elapsed() < Duration::from_secs(120));
    // Before the fix each refused sign-up still wrote a token row (about 3 MB here).
    let after = db_bytes(&s);
    assert!(
        after <= before + 64 * 1024,
        "database grew from {before} to {after} bytes"
    );
}

#[tokio::test]
async fn unauthenticated_routes_are_limited_per_client_address() {
    let s = Server::start_with(&[
        "--auth-mails-per-hour",
        "8",
        "--auth-lookups-per-minute",
        "5",
    ]);
    let anon = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..9 {
        let r = anon
            .post(s.url(if i % 2 == 0 {
                "/auth/signup"
            } else {
                "/auth/login"
            }))
            .json(&json!({"email": format!("u{i}@example.com")}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            let wait: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=450).contains(&wait), "{wait}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["code"], "rate_limited", "{v}");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 200, 429]);
    // Verification links and sessions have their own budget, limited the same way.
    let mut statuses = Vec::new();
    for path in [
        "/auth/verify-signup?token=x",
        "/auth/login/verify?token=x",
        "/auth/session",
        "/auth/session",
        "/auth/verify-signup?token=x",
        "/auth/session",
    ] {
        statuses.push(get_json(&s.url(path)).await.0);
    }
    assert_eq!(statuses, [400, 400, 401, 401, 400, 429]);
    // Routes with a key are not charged to the address.
    let (status, _) = s.get("/sandboxes").await;
    assert_eq!(status, 200);
}
