//! Runtime settings: where things live and the per-engine sandbox policy (limits as data).

use std::path::PathBuf;

use cerver_jail::protocol::Limits;

/// The two sandbox engines of the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Engine {
    /// Fast, Python standard library only, loopback-only network.
    Workers,
    /// Full environment: larger limits, egress to the internet through the host firewall,
    /// a virtual environment that packages are installed into.
    Containers,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Workers => "workers",
            Engine::Containers => "containers",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Server data directory (the runtime keeps its instance id there).
    pub data_dir: PathBuf,
    /// The `cerver` binary, run as `cerver __jail` for each sandbox.
    pub helper: PathBuf,
    /// Root filesystem whose `/usr` sandboxes see (default `/`, the host's, read-only).
    pub rootfs: PathBuf,
    /// Interpreter path inside the sandbox.
    pub python: String,
    /// Fork every sandbox's helper (and so its zygote) from one warm template interpreter
    /// (`template`), when the host allows; otherwise each zygote execs `python`.
    pub template_interpreter: bool,
    /// Warm sandboxes kept ready per engine (0 disables the pool).
    pub pool_size: usize,
    /// First host uid of the ranges that sandbox user namespaces map to.
    pub uid_base: u32,
    /// Directory for the uid-range lock files shared by every server on the host.
    pub uid_lock_dir: PathBuf,
    pub workers: Limits,
    pub containers: Limits,
    /// Largest stdout or stderr kept for a synchronous run (bytes); the rest is dropped and
    /// a truncation marker added.
    pub max_output_bytes: usize,
    /// Largest file the files API reads or writes.
    pub max_file_bytes: u64,
    /// Most entries a file listing returns.
    pub max_list_entries: u64,
    /// How long creating a sandbox (outside the pool) may take.
    pub create_timeout: std::time::Duration,
    /// First address of the /18 that containers sandboxes' veth pairs are numbered from (a
    /// /30 per uid-range slot).
    pub egress_subnet: std::net::Ipv4Addr,
    /// Which destinations containers sandboxes reach (blocked list, allow-list, re-reads).
    pub egress: crate::network::EgressSettings,
    /// Egress bounds of a containers sandbox from its creation on (a plan's replace them when
    /// the sandbox is claimed).
    pub egress_rates: crate::rates::EgressRates,
    /// The installer binary (`uv`) bound into containers sandboxes; `None` = look it up on
    /// `PATH` at start.
    pub installer: Option<PathBuf>,
    /// Shared wheel cache: filled by the host only (by every server on it), read-only in
    /// sandboxes. Outside the data dir on purpose: a sandbox's init binds it after leaving
    /// host root, so every directory above it must be traversable (a data dir may be private).
    pub wheelhouse: PathBuf,
    /// Size of a containers sandbox's virtual environment when it has no disk image (a tmpfs,
    /// counted against the memory limit); with one, the venv shares the workspace's quota.
    pub venv_bytes: u64,
    /// Largest total size of the wheel cache; past it, the least recently used wheels are
    /// evicted.
    pub max_wheelhouse_bytes: u64,
    /// Most bytes one host fetch may download (measured while it downloads).
    pub max_wheel_fetch_bytes: u64,
    /// Largest single file a host fetch may download.
    pub max_wheel_bytes: u64,
    /// The package index host fetches use (`pip download --index-url`); `None`: pip's.
    pub wheel_index_url: Option<String>,
    /// How long one package installation may take.
    pub install_timeout: std::time::Duration,
    /// Memory cap of all this server's sandboxes together (their parent cgroup; no swap on
    /// top). `None`: the host's memory minus a reserve
    /// (`cerver_jail::cgroup::default_parent_memory`).
    pub sandboxes_memory_bytes: Option<u64>,
    /// How long filling the wheel cache on the host (one `pip download`) may take.
    pub wheel_fetch_timeout: std::time::Duration,
    /// Bytes of output a background process keeps per stream (its last ones, in a ring).
    pub output_ring_bytes: usize,
    /// How much of the data dir's disk the sandboxes' images may take.
    pub disk_budget: crate::disk::DiskBudget,
}

const MIB: u64 = 1 << 20;

impl RuntimeConfig {
    pub fn new(data_dir: PathBuf, helper: PathBuf) -> Self {
        RuntimeConfig {
            wheelhouse: PathBuf::from("/var/cache/cerver/wheels"),
            data_dir,
            helper,
            rootfs: PathBuf::from("/"),
            python: "/usr/bin/python3".into(),
            template_interpreter: true,
            pool_size: 2,
            uid_base: 1 << 20,
            uid_lock_dir: PathBuf::from("/run/cerver/uid-ranges"),
            workers: Limits {
                memory_bytes: 512 * MIB,
                pids: 128,
                cpu_shares: 1024,
                cpu_cores: 0.0,
                open_files: 1024,
                workspace_bytes: 1024 * MIB,
                tmp_bytes: 64 * MIB,
                shm_bytes: 16 * MIB,
                file_bytes: 256 * MIB,
            },
            containers: Limits {
                memory_bytes: 2048 * MIB,
                pids: 512,
                cpu_shares: 1024,
                cpu_cores: 0.0,
                open_files: 4096,
                workspace_bytes: 10240 * MIB,
                tmp_bytes: 512 * MIB,
                shm_bytes: 64 * MIB,
                file_bytes: 2048 * MIB,
            },
            max_output_bytes: MIB as usize,
            max_file_bytes: 10 * MIB,
            max_list_entries: 10_000,
            create_timeout: std::time::Duration::from_secs(20),
            egress_subnet: std::net::Ipv4Addr::new(10, 213, 0, 0),
            egress: Default::default(),
            egress_rates: Default::default(),
            installer: None,
            venv_bytes: 2048 * MIB,
            max_wheelhouse_bytes: 8192 * MIB,
            max_wheel_fetch_bytes: 2048 * MIB,
            max_wheel_bytes: 1024 * MIB,
            wheel_index_url: None,
            install_timeout: std::time::Duration::from_secs(600),
            sandboxes_memory_bytes: None,
            wheel_fetch_timeout: std::time::Duration::from_secs(300),
            output_ring_bytes: MIB as usize,
            disk_budget: Default::default(),
        }
    }

    pub fn limits(&self, engine: Engine) -> &Limits {
        match engine {
            Engine::Workers => &self.workers,
            Engine::Containers => &self.containers,
        }
    }
}
