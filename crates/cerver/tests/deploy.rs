//! The deployment files of `deploy/` (no cluster and no systemd run here, so they are checked
//! the ways that can be done on this machine):
//! - the Kubernetes manifests pass a schema validator (`kubernetes-validate`, which ships the
//!   schemas, in the venv `scripts/setup` makes), which also rejects broken copies;
//! - they refer to what they define: Secret keys, Service selectors and ports, the headless
//!   Service, the NetworkPolicy, the database URL's host;
//! - the cerver pods' and the systemd unit's flags and variables are ones `cerver serve --help`
//!   lists, and the probes' path answers on the real server;
//! - the stop timeouts cover the server's ordered shutdown;
//! - the systemd unit passes `systemd-analyze verify`, which rejects a broken copy.
//!
//! The YAML is read with PyYAML (`tests/python/yaml_to_json.py`): the workspace has no YAML
//! crate, and the venv has PyYAML for the validator anyway.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The oldest Kubernetes the manifests are meant for, and the newest the validator knows.
const K8S_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];
/// What the server takes after `shutdown_grace_secs` to end what is left (`AFTER_GRACE` in
/// `crates/cerver/src/serve.rs`), and a margin for stopping sandboxes and flushing counters.
const AFTER_GRACE_SECS: u64 = 5;
const STOP_MARGIN_SECS: u64 = 10;
/// `shutdown_grace_secs` when not set.
const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kube_dir() -> PathBuf {
    repo_root().join("deploy/kubernetes")
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

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The documents of `files`.
fn load(files: &[PathBuf]) -> Vec<Value> {
    let out = Command::new(venv_python())
        .arg(repo_root().join("tests/python/yaml_to_json.py"))
        .args(files)
        .output()
        .expect("run yaml_to_json.py");
    assert!(out.status.success(), "yaml_to_json.py: {}", text(&out));
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    docs.into_iter().map(|d| d["doc"].clone()).collect()
}

/// The files `kubectl apply -k` applies (kustomization.yaml's resources), then the Secret's
/// example (which it does not apply, but the pods read a Secret of that shape).
fn manifest_files() -> Vec<PathBuf> {
    let kustomization = load(&[kube_dir().join("kustomization.yaml")]);
    let resources = strs(&kustomization[0]["resources"]);
    let mut files: Vec<PathBuf> = resources.iter().map(|r| kube_dir().join(r)).collect();
    files.push(kube_dir().join("secret.example.yaml"));
    files
}

fn manifests() -> Vec<Value> {
    load(&manifest_files())
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the manifests"))
}

fn workloads(docs: &[Value]) -> impl Iterator<Item = &Value> {
    docs.iter().filter(|d| {
        ["DaemonSet", "StatefulSet", "Deployment"].contains(&d["kind"].as_str().unwrap())
    })
}

fn containers(workload: &Value) -> &Vec<Value> {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
}

/// The cerver nodes' container.
fn cerver_container(docs: &[Value]) -> &Value {
    &containers(find(docs, "DaemonSet", "cerver"))[0]
}

/// Whether `labels` has every pair of `selector`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let pairs = selector.as_object().expect("selector");
    !pairs.is_empty() && pairs.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn validate(files: &[PathBuf], version: &str) -> Output {
    Command::new(venv_python())
        .args(["-m", "kubernetes_validate", "--strict", "-k", version])
        .args(files)
        .output()
        .expect("run kubernetes-validate")
}

#[test]
fn the_manifests_pass_the_kubernetes_schemas() {
    let files = manifest_files();
    let resources = load(&files).len();
    assert!(resources >= 7, "{resources} resources");
    for version in K8S_VERSIONS {
        let out = validate(&files, version);
        let report = text(&out);
        assert!(out.status.success(), "Kubernetes {version}:\n{report}");
        // A kind it has no schema for is only a warning: none may be left unchecked.
        assert!(!report.contains("WARN"), "{report}");
        assert_eq!(
            report.matches(" passed for resource ").count(),
            resources,
            "{report}"
        );
    }
}

#[test]
fn the_schema_check_rejects_broken_manifests() {
    let dir = std::env::temp_dir().join(format!("cerver-deploy-{}", common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let original = std::fs::read_to_string(kube_dir().join("cerver.yaml")).unwrap();
    let breakages = [
        // A field of the wrong type ...
        (
            "containerPort: 8080",
            "containerPort: \"8080\"",
            "is not of type 'integer'",
        ),
        // ... and a misspelt one (rejected in strict mode).
        (
            "privileged: true",
            "privilegd: true",
            "'privilegd' was unexpected",
        ),
    ];
    for (from, to, message) in breakages {
        assert_eq!(original.matches(from).count(), 1, "{from}");
        let broken = dir.join("cerver.yaml");
        std::fs::write(&broken, original.replace(from, to)).unwrap();
        let out = validate(&[broken], K8S_VERSIONS[1]);
        let report = text(&out);
        assert!(!out.status.success(), "{to} passed:\n{report}");
        assert!(report.contains(message), "{report}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_kustomization_lists_every_manifest_and_the_image() {
    let listed: BTreeSet<PathBuf> = manifest_files().into_iter().collect();
    for entry in std::fs::read_dir(kube_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") && !path.ends_with("kustomization.yaml") {
            assert!(
                listed.contains(&path),
                "{} is not in kustomization.yaml",
                path.display()
            );
        }
    }
    for path in &listed {
        assert!(path.exists(), "{} is listed but missing", path.display());
    }
    let kustomization = load(&[kube_dir().join("kustomization.yaml")]);
    let image = cerver_container(&manifests())["image"]
        .as_str()
        .unwrap()
        .to_string();
    let name = image.split(':').next().unwrap();
    assert_eq!(kustomization[0]["images"][0]["name"], name);
}

#[test]
fn the_manifests_refer_to_what_they_define() {
    let docs = manifests();
    let namespace = docs
        .iter()
        .find(|d| d["kind"] == "Namespace")
        .expect("a Namespace");
    let ns = &namespace["metadata"]["name"];
    for d in docs.iter().filter(|d| d["kind"] != "Namespace") {
        assert_eq!(&d["metadata"]["namespace"], ns, "{}", d["metadata"]["name"]);
    }
    for w in workloads(&docs) {
        let labels = &w["spec"]["template"]["metadata"]["labels"];
        assert!(
            selects(&w["spec"]["selector"]["matchLabels"], labels),
            "{}",
            w["metadata"]
        );
        for c in containers(w) {
            for e in c["env"].as_array().into_iter().flatten() {
                let r = &e["valueFrom"]["secretKeyRef"];
                if r.is_null() {
                    continue;
                }
                let secret = find(&docs, "Secret", r["name"].as_str().unwrap());
                let key = r["key"].as_str().unwrap();
                assert!(
                    secret["stringData"].get(key).is_some() || secret["data"].get(key).is_some(),
                    "Secret {} has no key {key}",
                    r["name"]
                );
            }
        }
    }
    for svc in docs.iter().filter(|d| d["kind"] == "Service") {
        let selector = &svc["spec"]["selector"];
        let w = workloads(&docs)
            .find(|w| selects(selector, &w["spec"]["template"]["metadata"]["labels"]))
            .unwrap_or_else(|| panic!("Service {} selects no pods", svc["metadata"]["name"]));
        let port_names: Vec<&Value> = containers(w)
            .iter()
            .flat_map(|c| c["ports"].as_array().unwrap())
            .collect();
        for p in svc["spec"]["ports"].as_array().unwrap() {
            let target = &p["targetPort"];
            assert!(
                port_names
                    .iter()
                    .any(|c| &c["name"] == target || &c["containerPort"] == target),
                "Service {}: no container port {target}",
                svc["metadata"]["name"]
            );
        }
    }
    for sts in docs.iter().filter(|d| d["kind"] == "StatefulSet") {
        let svc = find(
            &docs,
            "Service",
            sts["spec"]["serviceName"].as_str().unwrap(),
        );
        assert_eq!(
            svc["spec"]["clusterIP"], "None",
            "the StatefulSet's Service is headless"
        );
    }
    for policy in docs.iter().filter(|d| d["kind"] == "NetworkPolicy") {
        let mut selectors = vec![&policy["spec"]["podSelector"]["matchLabels"]];
        for rule in policy["spec"]["ingress"].as_array().unwrap() {
            for from in rule["from"].as_array().unwrap() {
                selectors.push(&from["podSelector"]["matchLabels"]);
            }
        }
        for s in selectors {
            assert!(
                workloads(&docs).any(|w| selects(s, &w["spec"]["template"]["metadata"]["labels"])),
                "NetworkPolicy {}: {s} selects no pods",
                policy["metadata"]["name"]
            );
        }
    }
}

/// The example database URL names the bundled Postgres: its first pod through the headless
/// Service, its port, user and database.
#[test]
fn the_database_url_names_the_bundled_postgres() {
    let docs = manifests();
    let url = find(&docs, "Secret", "cerver")["stringData"]["database-url"]
        .as_str()
        .unwrap()
        .to_string();
    let sts = find(&docs, "StatefulSet", "postgres");
    let c = &containers(sts)[0];
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let host = format!(
        "{}-0.{}.{}.svc:{}",
        sts["metadata"]["name"].as_str().unwrap(),
        sts["spec"]["serviceName"].as_str().unwrap(),
        sts["metadata"]["namespace"].as_str().unwrap(),
        c["ports"][0]["containerPort"]
    );
    let (user, db) = (env("POSTGRES_USER"), env("POSTGRES_DB"));
    assert!(url.starts_with(&format!("postgres://{user}:")), "{url}");
    assert!(
        url.ends_with(&format!("@{host}/{db}")),
        "{url} (expected host {host})"
    );
}

/// `cerver serve --help`: its flags and the `CERVER_*` variables it names.
fn serve_help() -> (BTreeSet<String>, BTreeSet<String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_cerver"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    (
        words(&help, "--", |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
        }),
        env_names(&help),
    )
}

/// Every maximal run of `allowed` characters starting with `prefix` in `text`.
fn words(text: &str, prefix: &str, allowed: impl Fn(char) -> bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices(prefix) {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| allowed(c) || c.is_ascii_alphanumeric()) {
            continue; // inside a longer word
        }
        let rest = &text[i + prefix.len()..];
        let end = rest.find(|c: char| !allowed(c)).unwrap_or(rest.len());
        if end > 0 {
            out.insert(format!("{prefix}{}", &rest[..end]));
        }
    }
    out
}

fn env_names(text: &str) -> BTreeSet<String> {
    words(text, "CERVER_", |c| {
        c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'
    })
}

/// The flags of an argument list (`--name=value` or `--name value`).
fn flags_of<'a>(args: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    args.into_iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap().to_string())
        .collect()
}

/// The strings of a YAML list.
fn strs(list: &Value) -> Vec<&str> {
    let items = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"));
    items.iter().map(|a| a.as_str().unwrap()).collect()
}

/// The names of a container's `env`.
fn env_of(c: &Value) -> BTreeSet<&str> {
    let env = c["env"].as_array().expect("env");
    env.iter().map(|e| e["name"].as_str().unwrap()).collect()
}

#[test]
fn the_nodes_args_use_only_variables_of_the_pod() {
    let docs = manifests();
    let c = cerver_container(&docs);
    let env = env_of(c);
    // Kubernetes leaves a $(VAR) of an undefined variable as it is.
    let mut used = 0;
    for arg in strs(&c["args"]) {
        for (i, _) in arg.match_indices("$(") {
            let var = &arg[i + 2..i + arg[i..].find(')').unwrap()];
            assert!(env.contains(var), "{arg}: {var} is not in the pod's env");
            used += 1;
        }
    }
    assert!(used >= 2, "the node name and address come from the pod");
}

#[test]
fn the_nodes_use_flags_and_variables_the_binary_has() {
    let (flags, envs) = serve_help();
    assert!(flags.contains("--listen") && envs.contains("CERVER_LISTEN"));
    let docs = manifests();
    let c = cerver_container(&docs);
    let args = strs(&c["args"]);
    assert_eq!(args[0], "serve");
    for f in flags_of(args) {
        assert!(
            flags.contains(&f),
            "the pods pass {f}: not a flag of `cerver serve`"
        );
    }
    for name in env_of(c).into_iter().filter(|n| n.starts_with("CERVER_")) {
        assert!(
            envs.contains(name),
            "the pods set {name}: `cerver serve` does not read it"
        );
    }
}

#[test]
fn the_systemd_unit_uses_flags_and_variables_the_binary_has() {
    let (flags, envs) = serve_help();
    let unit = std::fs::read_to_string(repo_root().join("deploy/systemd/cerver.service")).unwrap();
    let exec = unit_value(&unit, "ExecStart");
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(args[..2], ["/usr/local/bin/cerver", "serve"], "{exec}");
    let data_dir = format!(
        "--data-dir=/var/lib/{}",
        unit_value(&unit, "StateDirectory")
    );
    assert!(
        args.contains(&data_dir.as_str()),
        "{exec}: not the StateDirectory"
    );
    for f in flags_of(args) {
        assert!(
            flags.contains(&f),
            "the unit passes {f}: not a flag of `cerver serve`"
        );
    }
    // Every variable the env file names, set or commented out.
    let env_file = std::fs::read_to_string(repo_root().join("deploy/systemd/cerver.env")).unwrap();
    let named = env_names(&env_file);
    assert!(named.len() >= 5, "{named:?}");
    for name in named {
        assert!(
            envs.contains(&name),
            "cerver.env names {name}: `cerver serve` does not read it"
        );
    }
}

/// The value of `key=` in a unit file (the last one wins, as in systemd).
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .trim()
        .to_string()
}

/// The value of `--flag=VALUE` in `args`.
fn flag_value<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
}

#[tokio::test]
async fn the_probes_and_ports_line_up_with_the_server() {
    let docs = manifests();
    let c = cerver_container(&docs);
    let args = strs(&c["args"]);
    let listen = flag_value(&args, "--listen").expect("--listen");
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(c["ports"][0]["name"], "http");
    assert_eq!(c["ports"][0]["containerPort"], port);
    let advertise = flag_value(&args, "--advertise-url");
    assert_eq!(advertise, Some(format!("http://$(POD_IP):{port}").as_str()));
    // Exposed ports' URLs carry the listen port unless --sandbox-public-port says otherwise.
    let svc = find(&docs, "Service", "cerver");
    assert_eq!(svc["spec"]["ports"][0]["port"], port);

    let s = common::Server::start();
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["port"], "http", "{probe}");
        let path = get["path"].as_str().unwrap();
        let resp = reqwest::get(s.url(path)).await.unwrap();
        assert_eq!(resp.status(), 200, "{probe} {path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "ok", "{probe}: {body}");
    }
    s.stop();
}

/// The seconds of `--shutdown-grace-secs=N` in `args`, or the default.
fn shutdown_grace(args: &[&str]) -> u64 {
    flag_value(args, "--shutdown-grace-secs")
        .map_or(DEFAULT_SHUTDOWN_GRACE_SECS, |s| s.parse().unwrap())
}

#[test]
fn the_stop_timeouts_cover_the_servers_shutdown() {
    let docs = manifests();
    let pod = &find(&docs, "DaemonSet", "cerver")["spec"]["template"]["spec"];
    let c = cerver_container(&docs);
    let pre_stop = strs(&c["lifecycle"]["preStop"]["exec"]["command"]);
    assert_eq!(pre_stop[0], "sleep");
    let needed = pre_stop[1].parse::<u64>().unwrap()
        + shutdown_grace(&strs(&c["args"]))
        + AFTER_GRACE_SECS
        + STOP_MARGIN_SECS;
    let given = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        given >= needed,
        "terminationGracePeriodSeconds {given} < {needed}"
    );

    let unit = std::fs::read_to_string(repo_root().join("deploy/systemd/cerver.service")).unwrap();
    let env_file = std::fs::read_to_string(repo_root().join("deploy/systemd/cerver.env")).unwrap();
    let grace = env_file
        .lines()
        .find_map(|l| l.strip_prefix("CERVER_SHUTDOWN_GRACE_SECS="))
        .map_or(DEFAULT_SHUTDOWN_GRACE_SECS, |s| s.trim().parse().unwrap());
    let exec = unit_value(&unit, "ExecStart");
    let exec_args: Vec<&str> = exec.split_whitespace().collect();
    let grace = grace.max(shutdown_grace(&exec_args));
    let timeout: u64 = unit_value(&unit, "TimeoutStopSec").parse().unwrap();
    assert!(
        timeout >= grace + AFTER_GRACE_SECS + STOP_MARGIN_SECS,
        "TimeoutStopSec {timeout}"
    );
    // The server alone gets SIGTERM (its helpers would end the sandboxes early).
    assert_eq!(unit_value(&unit, "KillMode"), "mixed");
    assert_eq!(unit_value(&unit, "KillSignal"), "SIGTERM");
}

/// `systemd-analyze verify` of the unit in `dir`, its binary replaced by the one built here
/// (verify checks that ExecStart's program exists).
fn verify_unit(dir: &Path, unit: &str) -> Output {
    std::fs::create_dir_all(dir).unwrap();
    let unit = unit.replace("/usr/local/bin/cerver", env!("CARGO_BIN_EXE_cerver"));
    let path = dir.join("cerver.service");
    std::fs::write(&path, unit).unwrap();
    Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (the `systemd` package; scripts/setup installs it)")
}

#[test]
fn the_systemd_unit_verifies() {
    let dir = std::env::temp_dir().join(format!("cerver-unit-{}", common::rand_suffix()));
    let unit = std::fs::read_to_string(repo_root().join("deploy/systemd/cerver.service")).unwrap();
    let out = verify_unit(&dir, &unit);
    // Unknown keys and bad values are only warnings: there must be none.
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "{}",
        text(&out)
    );

    // ... and it can fail: a bad value and a misspelt key are reported.
    let breakages = [
        (
            "KillMode=mixed",
            "KillMode=mixd",
            "Failed to parse kill mode",
        ),
        ("LimitNOFILE=", "LimitNOFLE=", "Unknown key 'LimitNOFLE'"),
    ];
    for (from, to, message) in breakages {
        assert!(unit.contains(from), "{from}");
        let out = verify_unit(&dir, &unit.replace(from, to));
        assert!(text(&out).contains(message), "{to}: {}", text(&out));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The image installs the uv `scripts/setup` pins and builds with the workspace's Rust, and
/// its entrypoint is what the pods' arguments follow (`serve ...`).
#[test]
fn the_image_follows_the_bare_host_setup() {
    let read = |p: &str| std::fs::read_to_string(repo_root().join(p)).unwrap();
    let dockerfile = read("deploy/kubernetes/Dockerfile");
    let setup = read("scripts/setup");
    let uv = setup
        .lines()
        .find_map(|l| l.strip_prefix("UV_VERSION="))
        .expect("UV_VERSION");
    assert!(dockerfile.contains(&format!("\"uv=={uv}\"")), "uv {uv}");
    let cargo = read("Cargo.toml");
    let rust = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version")
        .trim_matches('"');
    assert!(
        dockerfile.contains(&format!("FROM rust:{rust}-bookworm ")),
        "Rust {rust}"
    );
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/cerver"]"#));
}
