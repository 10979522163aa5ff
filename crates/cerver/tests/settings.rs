//! The settings layers of the real binary (`--print-config`) and the log format.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn print_config(args: &[&str], env: &[(&str, &str)], file: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cerver"));
    cmd.args(["serve", "--print-config"]).args(args);
    // Variables of the environment the tests run in must not leak into the layers.
    for (k, _) in std::env::vars() {
        if k.starts_with("CERVER_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let path = std::env::temp_dir().join(format!("cerver-settings-{}.toml", common::rand_suffix()));
    if let Some(text) = file {
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(&path);
    }
    let out = cmd.output().unwrap();
    let _ = std::fs::remove_file(&path);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn parsed(text: &str) -> toml::Table {
    toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn file_then_environment_then_flags() {
    let file = "pool_size = 3\nmax_sandboxes = 10\nshutdown_grace_secs = 7\n[http]\nmax_connections = 11\n[workers]\nmemory_mb = 100\n";
    let env = [
        ("CERVER_MAX_SANDBOXES", "20"),
        ("CERVER_MAX_CONNECTIONS", "22"),
        ("CERVER_WORKERS_MEMORY_MB", "200"),
        ("CERVER_SANDBOX_DOMAIN", "env.example"),
    ];
    let (ok, out, err) = print_config(
        &["--max-connections", "33", "--workers-memory-mb", "300"],
        &env,
        Some(file),
    );
    assert!(ok, "{err}");
    let t = parsed(&out);
    assert_eq!(t["pool_size"].as_integer(), Some(3), "file only");
    assert_eq!(t["shutdown_grace_secs"].as_integer(), Some(7), "file only");
    assert_eq!(t["max_sandboxes"].as_integer(), Some(20), "env over file");
    assert_eq!(t["ports"]["domain"].as_str(), Some("env.example"), "env");
    assert_eq!(
        t["http"]["max_connections"].as_integer(),
        Some(33),
        "flag over env"
    );
    assert_eq!(
        t["workers"]["memory_mb"].as_integer(),
        Some(300),
        "flag over env"
    );
    // Defaults fill the rest.
    assert_eq!(t["http"]["header_read_timeout_secs"].as_integer(), Some(10));
    assert_eq!(t["log_format"].as_str(), Some("text"));
    // `--port-tokens` alone means true.
    let (ok, out, err) = print_config(&["--port-tokens"], &[], None);
    assert!(ok, "{err}");
    assert_eq!(parsed(&out)["ports"]["tokens"].as_bool(), Some(true));
}

#[test]
fn secrets_are_redacted() {
    let (ok, out, err) = print_config(
        &["--smtp-host", "smtp.example.com"],
        &[("CERVER_SMTP_PASSWORD", "hunter2-secret")],
        Some("[mail]\nusername = \"u\"\n"),
    );
    assert!(ok, "{err}");
    assert!(!out.contains("hunter2"), "{out}");
    let t = parsed(&out);
    assert_eq!(t["mail"]["password"].as_str(), Some("[redacted]"));
    assert_eq!(t["mail"]["host"].as_str(), Some("smtp.example.com"));
    assert_eq!(t["mail"]["username"].as_str(), Some("u"));
}

#[test]
fn max_disk_takes_a_size_and_max_disk_mb_stays_its_alias() {
    let (ok, out, err) = print_config(&["--max-disk", "20G"], &[], None);
    assert!(ok, "{err}");
    assert_eq!(parsed(&out)["max_disk"].as_str(), Some("20G"), "{out}");
    let (ok, out, err) = print_config(&[], &[("CERVER_MAX_DISK", "512M")], None);
    assert!(ok, "{err}");
    assert_eq!(parsed(&out)["max_disk"].as_str(), Some("512M"), "{out}");
    let (ok, out, err) = print_config(&["--max-disk-mb", "300"], &[], None);
    assert!(ok, "{err}");
    assert_eq!(parsed(&out)["max_disk_mb"].as_integer(), Some(300), "{out}");
    for bad in ["20X", "lots", "0"] {
        let (ok, _, err) = print_config(&["--max-disk", bad], &[], None);
        assert!(!ok, "{bad}");
        assert!(err.contains("max_disk"), "{bad}: {err}");
    }
    let (ok, _, err) = print_config(&["--max-disk", "1G", "--max-disk-mb", "5"], &[], None);
    assert!(!ok);
    assert!(err.contains("not both"), "{err}");
}

#[test]
fn unknown_keys_and_bad_values_are_clear_errors() {
    let (ok, _, err) = print_config(&[], &[], Some("[http]\nmax_connectons = 5\n"));
    assert!(!ok);
    assert!(
        err.contains("max_connectons") && err.contains("line 2"),
        "{err}"
    );
    let (ok, _, err) = print_config(&[], &[], Some("surprise = true\n"));
    assert!(!ok);
    assert!(err.contains("surprise"), "{err}");
    let (ok, _, err) = print_config(&[], &[("CERVER_POOL_SIZE", "many")], None);
    assert!(!ok);
    assert!(err.contains("CERVER_POOL_SIZE"), "{err}");
    let (ok, _, err) = print_config(&["--log-format", "xml"], &[], None);
    assert!(!ok);
    assert!(err.contains("xml") || err.contains("log_format"), "{err}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let data_dir = std::env::temp_dir().join(format!("cerver-jsonlog-{}", common::rand_suffix()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_cerver"))
        .args(["serve", "--listen", "127.0.0.1:0", "--pool-size", "0"])
        .args(["--log-format", "json", "--data-dir"])
        .arg(&data_dir)
        .env("CERVER_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Logs go to stdout, with the one plain `listening on` line scripts read.
    let stdout = child.stdout.take().unwrap();
    let mut out_lines = BufReader::new(stdout).lines();
    let mut lines = Vec::new();
    for line in out_lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("listening on ") {
            break;
        }
        lines.push(line);
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    lines.extend(out_lines.map_while(Result::ok));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut messages = Vec::new();
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        messages.push(v["fields"]["message"].as_str().unwrap_or("").to_string());
    }
    assert!(
        messages.iter().any(|m| m == "cerver listening"),
        "{lines:?}"
    );
    assert!(messages.iter().any(|m| m == "shut down"), "{lines:?}");
}
