//! The dashboard against the real binary: sessions from login links (the mail spool), the
//! `/account*` JSON API, CSRF and origin checks, cross-user isolation, key revocation, the
//! sandboxes page's API, logout and expiry, the page itself; real SMTP (an `aiosmtpd` server on
//! loopback); and the whole thing in headless Chromium (`tests/python/dashboard_browser.py`).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Server, client_with_key, create_key};
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

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

/// The first `<base><path>?token=...` link in the newest mail to `to` among the `.eml` files
/// of `dir`.
fn link_in_mails(dir: &Path, base: &str, to: &str, path: &str) -> String {
    for _ in 0..100 {
        let mut mails: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .collect();
        mails.sort_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
        for mail in mails.iter().rev() {
            let text = std::fs::read_to_string(mail.path()).unwrap_or_default();
            let text = text
                .replace("=\r\n", "")
                .replace("=\n", "")
                .replace("=3D", "=");
            if !text.to_lowercase().contains(&format!("to: {to}")) {
                continue;
            }
            if let Some(start) = text.find(&format!("{base}{path}?token=")) {
                return text[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || ":/?=._-&%".contains(*c))
                    .collect();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no mail to {to} with a {path} link in {}", dir.display());
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A signed-in browser, as far as HTTP goes: the session cookie and the CSRF token.
struct Session {
    base: String,
    cookie: String,
    csrf: String,
    http: reqwest::Client,
}

impl Session {
    /// Signs `email` in through the login link from the mail spool of `s`.
    async fn login(s: &Server, email: &str) -> Session {
        let http = no_redirects();
        let r = http
            .post(s.url("/auth/login"))
            .json(&json!({ "email": email }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let link = link_in_mails(
            &s.data_dir.join("mail"),
            &s.base,
            email,
            "/auth/login/verify",
        );
        let r = http.get(&link).send().await.unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/dashboard");
        let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Lax"),
            "{set}"
        );
        assert!(!set.contains("Secure"), "plain http: {set}");
        let cookie = set.split(';').next().unwrap().to_string();
        let mut session = Session {
            base: s.base.clone(),
            cookie,
            csrf: String::new(),
            http,
        };
        let (status, account) = session.get("/account").await;
        assert_eq!(status, 200, "{account}");
        session.csrf = account["csrf_token"].as_str().unwrap().to_string();
        session
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// A state-changing request with the CSRF token.
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .request(method, path)
            .header("x-csrf-token", &self.csrf);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn keys(&self) -> Vec<Value> {
        let (status, v) = self.get("/account/keys").await;
        assert_eq!(status, 200, "{v}");
        v["keys"].as_array().unwrap().clone()
    }
}

#[tokio::test]
async fn account_overview_counts_todays_requests() {
    let s = Server::start();
    let me = Session::login(&s, "tester@example.com").await;
    for _ in 0..3 {
        assert_eq!(s.get("/sandboxes").await.0, 200);
    }
    let (status, a) = me.get("/account").await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["email"], "tester@example.com");
    assert_eq!(a["plan"], "pro");
    assert_eq!(a["limits"]["requests_per_day"], 100_000);
    assert_eq!(a["limits"]["max_sandboxes"], 100);
    assert_eq!(a["usage"]["daily_limit"], 100_000);
    assert_eq!(a["usage"]["today"], 3, "{a}");
    let days = a["usage"]["days"].as_array().unwrap();
    assert_eq!(days.len(), 14);
    assert_eq!(days[13]["requests"], 3, "today is last");
    let day = |i: usize| days[i]["date"].as_u64().unwrap();
    assert!((1..14).all(|i| day(i) == day(i - 1) + 86_400), "{days:?}");
    assert!(a["usage"]["resets_at"].as_u64().unwrap() == day(13) + 86_400);
    // Dashboard requests are not charged to the daily budget.
    assert_eq!(me.get("/account").await.1["usage"]["today"], 3);
    // The API key alone does not open the dashboard API.
    assert_eq!(s.get("/account").await.0, 401);
}

#[tokio::test]
async fn keys_are_created_once_named_masked_and_revoked_at_once() {
    let s = Server::start();
    let me = Session::login(&s, "tester@example.com").await;
    let before = me.keys().await;
    assert_eq!(before.len(), 1, "the harness's key: {before:?}");
    assert!(
        before[0]["masked"]
            .as_str()
            .unwrap()
            .starts_with("sk_live_")
    );
    assert!(
        !before[0].to_string().contains(&s.key),
        "never the key itself"
    );

    let (status, created) = me
        .send(
            reqwest::Method::POST,
            "/account/keys",
            Some(json!({"name": "laptop"})),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let key = created["api_key"].as_str().unwrap().to_string();
    let key_id = created["key"]["key_id"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk_live_"), "{key}");
    assert_eq!(created["key"]["name"], "laptop");
    assert!(created["key"]["last_used_at"].is_null());
    // An empty body works too (the name is optional).
    let (status, unnamed) = me.send(reqwest::Method::POST, "/account/keys", None).await;
    assert_eq!(status, 200, "{unnamed}");
    assert!(unnamed["key"]["name"].is_null());

    // The new key works, and its use is recorded (off the request's path).
    let new = client_with_key(&key);
    assert_eq!(
        new.get(s.url("/sandboxes")).send().await.unwrap().status(),
        200
    );
    let mut used = Value::Null;
    for _ in 0..50 {
        let keys = me.keys().await;
        let k = keys
            .iter()
            .find(|k| k["key_id"] == key_id.as_str())
            .unwrap();
        used = k["last_used_at"].clone();
        if !used.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(used.as_u64().is_some(), "last_used_at recorded: {used}");
    let listed = me.keys().await;
    assert_eq!(listed.len(), 3);
    assert!(
        !listed.iter().any(|k| k.to_string().contains(&key)),
        "shown once"
    );

    // Revoked: 401 on the very next request (the server's key cache is emptied).
    let (status, v) = me
        .send(
            reqwest::Method::DELETE,
            &format!("/account/keys/{key_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["revoked"], true);
    assert_eq!(
        new.get(s.url("/sandboxes")).send().await.unwrap().status(),
        401
    );
    assert_eq!(me.keys().await.len(), 2);
    let (status, v) = me
        .send(
            reqwest::Method::DELETE,
            &format!("/account/keys/{key_id}"),
            None,
        )
        .await;
    assert_eq!(status, 404, "already revoked: {v}");
    // The other keys still work.
    assert_eq!(s.get("/sandboxes").await.0, 200);
}

#[tokio::test]
async fn key_names_and_counts_are_bounded() {
    let s = Server::start();
    let me = Session::login(&s, "tester@example.com").await;
    let post = |body: Value| me.send(reqwest::Method::POST, "/account/keys", Some(body));
    assert_eq!(post(json!({"name": "x".repeat(65)})).await.0, 400);
    assert_eq!(post(json!({"name": "a\u{0}b"})).await.0, 400);
    assert_eq!(post(json!({"name": 5})).await.0, 422);
    let r = me
        .request(reqwest::Method::POST, "/account/keys")
        .header("x-csrf-token", &me.csrf)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The harness's key plus 19 more reach the bound of 20 active keys.
    for i in 0..19 {
        let (status, v) = post(json!({"name": format!("k{i}")})).await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, v) = post(json!({})).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(me.keys().await.len(), 20);
    // Hostile cookies are just "no session".
    let r = reqwest::Client::new()
        .get(s.url("/account"))
        .header("cookie", format!("cerver_session={}", "A".repeat(5000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn csrf_token_and_origin_are_required_for_changes() {
    let s = Server::start();
    let me = Session::login(&s, "tester@example.com").await;
    let attempts = [
        ("no token", None, None),
        ("wrong token", Some("0".repeat(64)), None),
        (
            "foreign origin",
            Some(me.csrf.clone()),
            Some("http://evil.example"),
        ),
    ];
    for (what, token, origin) in attempts {
        let mut req = me
            .request(reqwest::Method::POST, "/account/keys")
            .json(&json!({"name": "csrf"}));
        if let Some(token) = &token {
            req = req.header("x-csrf-token", token);
        }
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "{what}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], "forbidden", "{what}: {v}");
    }
    assert_eq!(me.keys().await.len(), 1, "nothing changed");
    // The same-origin `Origin` a browser sends is fine.
    let r = me
        .request(reqwest::Method::POST, "/account/keys")
        .header("x-csrf-token", &me.csrf)
        .header("origin", &s.base)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Another session's token is not this session's.
    let other = Session::login(&s, "tester@example.com").await;
    assert_ne!(other.csrf, me.csrf);
    let r = me
        .request(reqwest::Method::POST, "/auth/logout")
        .header("x-csrf-token", &other.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // API-key requests need no token (the harness's client sends none).
    let (status, v) = s.post("/sandbox", json!({})).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn users_never_see_or_touch_each_others_keys_and_sandboxes() {
    let s = Server::start();
    let other_key = create_key(&s.data_dir, "other@example.com", "free");
    let me = Session::login(&s, "tester@example.com").await;
    let them = Session::login(&s, "other@example.com").await;
    let mine = me.keys().await;
    let theirs = them.keys().await;
    assert_eq!((mine.len(), theirs.len()), (1, 1));
    assert_ne!(mine[0]["key_id"], theirs[0]["key_id"]);
    let my_key_id = mine[0]["key_id"].as_str().unwrap();
    let (status, v) = them
        .send(
            reqwest::Method::DELETE,
            &format!("/account/keys/{my_key_id}"),
            None,
        )
        .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(s.get("/sandboxes").await.0, 200, "my key still works");

    let (status, sb) = s.post("/sandbox", json!({})).await;
    assert_eq!(status, 200, "{sb}");
    let id = sb["sandbox_id"].as_str().unwrap();
    let (_, listed) = them.get("/account/sandboxes").await;
    assert_eq!(listed["sandboxes"], json!([]));
    let (status, _) = them
        .send(
            reqwest::Method::DELETE,
            &format!("/account/sandboxes/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(s.get(&format!("/sandbox/{id}")).await.0, 200, "still alive");
    let (_, a) = them.get("/account").await;
    assert_eq!(
        (a["email"].as_str(), a["plan"].as_str()),
        (Some("other@example.com"), Some("free"))
    );
    drop(other_key);
}

#[tokio::test]
async fn sandboxes_are_listed_with_their_metadata_and_killed() {
    let s = Server::start();
    let me = Session::login(&s, "tester@example.com").await;
    let hostile = "<img src=x onerror=alert(1)>\"'&";
    let (status, sb) = s
        .post(
            "/sandbox",
            json!({"metadata": {"note": hostile}, "timeout_ms": 600_000}),
        )
        .await;
    assert_eq!(status, 200, "{sb}");
    let id = sb["sandbox_id"].as_str().unwrap().to_string();
    let (status, listed) = me.get("/account/sandboxes").await;
    assert_eq!(status, 200, "{listed}");
    let row = &listed["sandboxes"][0];
    assert_eq!(row["sandbox_id"], id.as_str());
    assert_eq!(
        row["metadata"]["note"], hostile,
        "returned as data, unaltered"
    );
    assert_eq!(row["status"], "ready");
    assert!(row["time_remaining_ms"].as_u64().unwrap() > 500_000);

    let r = me
        .request(reqwest::Method::DELETE, &format!("/account/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no CSRF token");
    assert_eq!(s.get(&format!("/sandbox/{id}")).await.0, 200);
    let (status, v) = me
        .send(
            reqwest::Method::DELETE,
            &format!("/account/sandboxes/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["success"], true);
    assert_eq!(s.get(&format!("/sandbox/{id}")).await.0, 404);
    assert_eq!(me.get("/account/sandboxes").await.1["sandboxes"], json!([]));
}

#[tokio::test]
async fn logout_and_expiry_end_the_session() {
    let s = Server::start();
    let me = Session::login(&s, "tester@example.com").await;
    let (status, _) = me.send(reqwest::Method::POST, "/auth/logout", None).await;
    assert_eq!(status, 200);
    assert_eq!(me.get("/account").await.0, 401);
    assert_eq!(
        me.send(reqwest::Method::POST, "/auth/logout", None).await.0,
        401
    );

    // A session past its expiry is no session (its row is aged by hand: 7 days are long).
    let old = Session::login(&s, "tester@example.com").await;
    assert_eq!(old.get("/account").await.0, 200);
    let out = Command::new("sqlite3")
        .arg(s.data_dir.join("cerver.db"))
        .arg("PRAGMA busy_timeout = 5000; UPDATE sessions SET expires_at = 1;")
        .output()
        .expect("run sqlite3 (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(old.get("/account").await.0, 401);
    let r = old
        .request(reqwest::Method::GET, "/dashboard")
        .send()
        .await
        .unwrap();
    let html = r.text().await.unwrap();
    assert!(
        html.contains(r#"<meta name="csrf-token" content="">"#),
        "signed out page"
    );
}

#[tokio::test]
async fn the_page_carries_the_token_only_with_a_session() {
    let s = Server::start();
    let r = reqwest::get(s.url("/dashboard")).await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"<meta name="csrf-token" content="">"#));
    assert!(html.contains("id=\"login-form\"") && html.contains("id=\"signup-form\""));

    let me = Session::login(&s, "tester@example.com").await;
    let r = me
        .request(reqwest::Method::GET, "/dashboard")
        .send()
        .await
        .unwrap();
    let html = r.text().await.unwrap();
    assert!(
        html.contains(&format!(
            r#"<meta name="csrf-token" content="{}">"#,
            me.csrf
        )),
        "the session's token is embedded"
    );
    for (asset, kind) in [("app.js", "text/javascript"), ("app.css", "text/css")] {
        let r = reqwest::get(s.url(&format!("/dashboard/{asset}")))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
    }
    let r = reqwest::get(s.url("/dashboard/../cerver.db"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = reqwest::get(s.url("/dashboard/secret.txt")).await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "not_found");
}

/// `tests/python/smtp_sink.py`: an `aiosmtpd` server on 127.0.0.1 that writes each message
/// to `<dir>/<n>.eml`. Killed when dropped.
struct SmtpSink {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let dir = std::env::temp_dir().join(format!("cerver-smtp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new(venv_python())
            .arg(repo_root().join("tests/python/smtp_sink.py"))
            .arg(&dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the SMTP sink");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on 127.0.0.1:")
            .unwrap_or_else(|| panic!("SMTP sink said {line:?}"))
            .parse()
            .unwrap();
        SmtpSink { child, port, dir }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn sign_up_and_login_mails_arrive_over_real_smtp() {
    let smtp = SmtpSink::start();
    let port = smtp.port.to_string();
    let s = Server::start_with(&[
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        &port,
        "--smtp-tls",
        "none",
        "--mail-from",
        "Cerver <noreply@cerver.test>",
    ]);
    let http = no_redirects();
    let r = http
        .post(s.url("/auth/signup"))
        .json(&json!({"email": "smtp-user@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let link = link_in_mails(
        &smtp.dir,
        &s.base,
        "smtp-user@example.com",
        "/auth/verify-signup",
    );
    let r = http
        .get(&link)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let key = v["api_key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk_trial_"), "{v}");
    assert_eq!(
        client_with_key(&key)
            .get(s.url("/sandboxes"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(!s.data_dir.join("mail").exists(), "SMTP, not the spool");

    let r = http
        .post(s.url("/auth/login"))
        .json(&json!({"email": "smtp-user@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let link = link_in_mails(
        &smtp.dir,
        &s.base,
        "smtp-user@example.com",
        "/auth/login/verify",
    );
    let r = http.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let r = http
        .get(s.url("/account"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["email"], "smtp-user@example.com");
    assert_eq!(v["plan"], "trial");
}

/// The dashboard in headless Chromium, driven over WebDriver by Selenium
/// (`tests/python/dashboard_browser.py`): sign up, log in through the spooled magic link,
/// create and revoke a key, watch a sandbox made through the API appear and kill it, log out,
/// on a desktop and a phone-sized viewport. With `CERVER_SCREENSHOTS=<dir>` it also saves a
/// screenshot of each page there (`scripts/dashboard-screenshots` does, into `docs/`).
#[test]
fn the_dashboard_works_in_a_real_browser() {
    let s = Server::start();
    let mut cmd = Command::new(venv_python());
    cmd.arg(repo_root().join("tests/python/dashboard_browser.py"))
        .args([&s.base, &s.key])
        .arg(s.data_dir.join("mail"));
    if let Ok(dir) = std::env::var("CERVER_SCREENSHOTS") {
        cmd.args(["--screenshots", &dir]);
    }
    let out = cmd.output().expect("run the browser test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("dashboard browser test: ok"),
        "{stdout}\n{stderr}"
    );
}
