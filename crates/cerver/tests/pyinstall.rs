//! A containers sandbox looks like a normal Python install, against the real binary: the
//! interpreter is the venv's (`sys.prefix`, `sysconfig`, `site`, `sys.executable` and what it
//! starts), the files common packages read exist (fontconfig, media types, the user's passwd
//! entry), and the caches tools write stay out of the workspace listing.

mod common;

use common::Server;
use serde_json::{Value, json};

/// What the interpreter says about itself, as JSON.
const INTERPRETER: &str = r#"
import json, site, subprocess, sys, sysconfig
child = subprocess.run([sys.executable, "-c", "import sys; print(sys.prefix)"],
                       capture_output=True, text=True)
print(json.dumps({
    "prefix": sys.prefix, "exec_prefix": sys.exec_prefix, "base_prefix": sys.base_prefix,
    "executable": sys.executable, "paths": sysconfig.get_paths(),
    "site": site.getsitepackages(), "user_site": site.ENABLE_USER_SITE,
    "child_prefix": child.stdout.strip(), "child_err": child.stderr,
}))
"#;

async fn interpreter(s: &Server, id: &str) -> Value {
    serde_json::from_str(&s.output(id, INTERPRETER).await).unwrap()
}

#[tokio::test]
async fn the_interpreter_of_a_containers_sandbox_is_the_venv() {
    let s = Server::start();
    let id = s.sandbox_with(json!({"engine": "containers"})).await;
    let v = interpreter(&s, &id).await;
    let site_packages = format!("/opt/venv/lib/python3.{}/site-packages", minor(&v));
    assert_eq!(v["prefix"], "/opt/venv", "{v}");
    assert_eq!(v["exec_prefix"], "/opt/venv", "{v}");
    assert_eq!(
        v["base_prefix"], "/usr",
        "sys.base_prefix stays the system's: {v}"
    );
    assert_eq!(v["executable"], "/opt/venv/bin/python", "{v}");
    assert_eq!(v["paths"]["purelib"], site_packages.as_str(), "{v}");
    assert_eq!(v["paths"]["platlib"], site_packages.as_str(), "{v}");
    assert_eq!(v["paths"]["scripts"], "/opt/venv/bin", "{v}");
    assert_eq!(v["site"][0], site_packages.as_str(), "{v}");
    assert_eq!(v["user_site"], false, "{v}");
    assert_eq!(
        v["child_prefix"], "/opt/venv",
        "a process started with sys.executable is in the venv too: {v}"
    );

    // Contexts fork from the same zygote.
    let (status, c) = s.post(&format!("/sandbox/{id}/contexts"), json!({})).await;
    assert_eq!(status, 200, "{c}");
    let ctx = c["context_id"].as_str().unwrap();
    let (status, r) = s
        .post(
            &format!("/sandbox/{id}/run"),
            json!({"code": "import sys, sysconfig\nprint(sys.prefix, sysconfig.get_paths()['scripts'])",
                   "context_id": ctx}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r["output"].as_str().unwrap().trim(),
        "/opt/venv /opt/venv/bin",
        "{r}"
    );

    // Packages installed into the venv are found where tools look for them. `six` comes from
    // the shared cache when an earlier test put it there, else from the index.
    let (status, i) = s
        .post(
            &format!("/sandbox/{id}/install"),
            json!({"package": "six==1.16.0"}),
        )
        .await;
    assert_eq!((status, i["success"].as_bool()), (200, Some(true)), "{i}");
    let out = s
        .output(
            &id,
            "import importlib.metadata as m, os, sysconfig\n\
             print(m.version('six'))\n\
             print(os.path.exists(os.path.join(sysconfig.get_paths()['purelib'], 'six.py')))",
        )
        .await;
    assert_eq!(out.trim(), "1.16.0\nTrue", "{out}");

    // A workers sandbox has no venv: the system's interpreter, as before.
    let workers = s.sandbox().await;
    let w = interpreter(&s, &workers).await;
    assert_eq!(w["prefix"], "/usr", "{w}");
    assert_eq!(w["prefix"], w["base_prefix"], "{w}");
}

fn minor(v: &Value) -> String {
    let stdlib = v["paths"]["stdlib"].as_str().unwrap();
    stdlib.rsplit("python3.").next().unwrap().to_string()
}

#[tokio::test]
async fn common_files_exist_and_tool_caches_stay_out_of_the_workspace() {
    if !std::path::Path::new("/etc/fonts/fonts.conf").exists()
        || !std::path::Path::new("/usr/bin/fc-list").exists()
    {
        panic!("fontconfig is missing on this host: run scripts/setup");
    }
    let s = Server::start();
    for engine in ["workers", "containers"] {
        let id = s.sandbox_with(json!({"engine": engine})).await;
        // matplotlib lists fonts with `fc-list` (font_manager): no "Fontconfig error" and the
        // fonts of /usr/share/fonts are found.
        let out = s
            .output(
                &id,
                "import subprocess\n\
                 r = subprocess.run(['fc-list', '--format=%{file}\\n'], capture_output=True, text=True)\n\
                 print(r.returncode, len(r.stdout.splitlines()) > 0, repr(r.stderr))",
            )
            .await;
        assert_eq!(out.trim(), "0 True ''", "{engine}: {out}");
        let out = s
            .output(
                &id,
                "import getpass, mimetypes, os, pwd, socket\n\
                 print(getpass.getuser(), pwd.getpwuid(os.getuid()).pw_dir)\n\
                 print(os.path.isfile('/etc/mime.types'), mimetypes.guess_type('a.csv')[0])\n\
                 print(socket.gethostbyname('localhost'))\n\
                 print(os.path.isfile('/etc/fonts/fonts.conf'))",
            )
            .await;
        assert_eq!(
            out.trim(),
            "user /home/user\nTrue text/csv\n127.0.0.1\nTrue",
            "{engine}: {out}"
        );
        // The host's fontconfig configuration is read-only in the sandbox.
        let out = s
            .output(
                &id,
                "try:\n    open('/etc/fonts/local.conf', 'w')\n    print('written')\n\
                 except OSError as e:\n    print(type(e).__name__)",
            )
            .await;
        assert_ne!(out.trim(), "written", "{engine}");

        // What pip, uv, fontconfig and matplotlib write goes to their caches in /tmp.
        s.output(
            &id,
            "import os, pathlib\n\
             for d in ('pip', 'uv', 'fontconfig'):\n\
             \x20   p = pathlib.Path(os.environ['XDG_CACHE_HOME'], d)\n\
             \x20   p.mkdir(parents=True, exist_ok=True)\n\
             \x20   (p / 'entry').write_text('x')\n\
             pathlib.Path(os.environ['MPLCONFIGDIR']).mkdir(parents=True, exist_ok=True)\n\
             open('mine.txt', 'w').write('hello')",
        )
        .await;
        let out = s
            .output(
                &id,
                "import os\nprint(sorted(os.listdir(os.environ['XDG_CACHE_HOME'])))",
            )
            .await;
        assert!(
            out.contains("fontconfig"),
            "fc-list cached its fonts: {out}"
        );
        let (status, files) = s.get(&format!("/sandbox/{id}/files")).await;
        assert_eq!(status, 200, "{files}");
        let paths: Vec<&str> = files["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            ["mine.txt"],
            "{engine}: only the user's files: {files}"
        );
    }
}
