//! A throw-away Postgres cluster for tests: `initdb` + `pg_ctl start` as the `postgres` user
//! in a temporary directory, listening only on a unix socket inside it (no TCP port, so
//! parallel tests and other engineers' clusters never collide), stopped and removed on drop —
//! also when the test panics.
//!
//! Shared by `cerver-store`'s tests and `crates/cerver/tests/` (included by `#[path]`). Needs
//! root (to run as `postgres`) and the Postgres server binaries (`scripts/setup` installs
//! Debian's `postgresql`); without them it panics saying so: the tests are never skipped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where Debian installs the server binaries; `CERVER_PG_BIN` overrides.
const PG_BIN_ROOT: &str = "/usr/lib/postgresql";

/// A running cluster with one database, `cerver`.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl PgCluster {
    /// Creates and starts a cluster (about a second) with an empty database `cerver`.
    pub fn start() -> PgCluster {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("cerver-pg-")
            .tempdir()
            .expect("temp dir for the Postgres cluster");
        run(Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path()));
        let cluster = PgCluster { dir, bin };
        let data = cluster.data_dir();
        cluster.as_postgres(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        // Unix socket only (`listen_addresses=''`), in the cluster's own directory; fsync off:
        // a test database need not survive a power cut.
        let server_opts = format!(
            "-c listen_addresses='' -k {} -c fsync=off -c max_connections=200",
            path_str(cluster.dir.path())
        );
        let log = cluster.dir.path().join("server.log");
        cluster.as_postgres(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-o",
                &server_opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        let socket = path_str(cluster.dir.path()).to_owned();
        cluster.as_postgres("createdb", &["-h", &socket, "-U", "postgres", "cerver"]);
        cluster
    }

    /// The URL of the `cerver` database, over the unix socket.
    pub fn url(&self) -> String {
        self.url_of("cerver")
    }

    /// The URL of database `name` (see [`create_database`](Self::create_database)).
    pub fn url_of(&self, name: &str) -> String {
        format!(
            "postgres://postgres@localhost/{name}?host={}",
            path_str(self.dir.path())
        )
    }

    /// Creates another empty database.
    pub fn create_database(&self, name: &str) {
        let socket = path_str(self.dir.path()).to_owned();
        self.as_postgres("createdb", &["-h", &socket, "-U", "postgres", name]);
    }

    /// Runs one SQL statement on the `cerver` database; its output, unaligned, tuples only.
    pub fn psql(&self, sql: &str) -> String {
        let socket = path_str(self.dir.path()).to_owned();
        let out = self.as_postgres(
            "psql",
            &[
                "-h", &socket, "-U", "postgres", "-d", "cerver", "-At", "-c", sql,
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) -> Output {
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .current_dir(self.dir.path()))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // `immediate`: nothing to keep. Errors are ignored (the test may be failing already);
        // the temporary directory goes with `self.dir`.
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                path_str(&self.data_dir()),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}

/// The newest installed server's `bin` directory.
fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("CERVER_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(PG_BIN_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no Postgres server binaries under {PG_BIN_ROOT}/*/bin (initdb, pg_ctl): \
             run scripts/setup, which installs Debian's postgresql package"
        ),
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}
