//! The sandbox's filesystem view, built inside its fresh mount namespace and entered with
//! `pivot_root`. Layout (the policy, as data):
//!
//! | path | what |
//! |---|---|
//! | `/` | small tmpfs, read-only once populated |
//! | `/usr` | read-only, nosuid, nodev bind of `<rootfs>/usr`, every submount included |
//! | `/bin /sbin /lib /lib64 ...` | symlinks when the rootfs is usr-merged, read-only binds otherwise |
//! | `/etc` | synthesized: passwd, group, hosts, hostname, nsswitch.conf; CA bundle, ld.so.cache, localtime, mime.types and fonts/ bound read-only |
//! | `/proc` | fresh procfs of the sandbox's pid namespace; host-wide files masked (`MASKED_PROC_*`) |
//! | `/dev` | tmpfs with null zero full random urandom tty bound from the host, `/dev/pts` (own instance), `/dev/shm` |
//! | `/tmp` | private tmpfs (`tmp_bytes`) |
//! | `/home/user` | the workspace: `home/` of the sandbox's disk image (`workspace_bytes`, see `disk.rs`; a tmpfs without one), owned by the sandbox user |
//! | `/opt/venv` | containers: the sandbox's virtual environment, `venv/` of the same image (same quota; a tmpfs of `venv_bytes` without one) owned by the sandbox user; an empty read-only directory otherwise |
//! | `/opt/cerver/uv`, `/opt/cerver/wheels` | containers: the installer binary and the wheel cache's selections directory (0711: not listable; one selection per install), read-only |
//! | `/etc/resolv.conf` | containers: the resolvers the host firewall lets through |
//!
//! Every bind from the host is read-only, nosuid and nodev down to its last submount
//! (`mount_setattr` with `AT_RECURSIVE`). Nothing else of the host is reachable: the old root
//! is detached after the pivot.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::JailError;
use crate::disk::{MountedDisk, attach_tree};
use crate::protocol::{
    INSTALLER, JailConfig, Network, Packages, SANDBOX_UID, VENV, WHEELHOUSE, WORKSPACE,
};

/// Host directories that are bound (or symlinked, when usr-merged) from the rootfs.
const SYSTEM_DIRS: [&str; 5] = ["bin", "sbin", "lib", "lib64", "libx32"];
/// Device nodes bound from the host's /dev (mknod is impossible in a user namespace).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Read-only files taken from `<rootfs>/etc` when present (nothing secret): the CA bundle,
/// the loader's cache, the time zone, and the media types `mimetypes` reads.
const ETC_FILES: [&str; 4] = [
    "ssl/certs/ca-certificates.crt",
    "ld.so.cache",
    "localtime",
    "mime.types",
];
/// Read-only directories taken from `<rootfs>/etc` when present: fontconfig's configuration
/// (without it every plot prints "Fontconfig error: Cannot load default config file"; its
/// links lead into `/usr/share`, and its cache goes to `XDG_CACHE_HOME`, see `layout.rs`).
const ETC_DIRS: [&str; 1] = ["fonts"];
/// Staging mount point inside the new mount namespace (exists on every Linux system).
const STAGING: &str = "/tmp";

fn err(what: impl Into<String>) -> impl FnOnce(nix::Error) -> JailError {
    let what = what.into();
    move |e| JailError::Setup(format!("{what}: {e}"))
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> JailError {
    let what = what.into();
    move |e| JailError::Setup(format!("{what}: {e}"))
}

fn tmpfs(target: &Path, size: u64, mode: &str, extra: &str) -> Result<(), JailError> {
    let data = format!("size={size},mode={mode}{extra}");
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(err(format!("mount tmpfs on {}", target.display())))
}

/// Binds `src` (with everything mounted below it) on `target`, then makes every one of those
/// mounts read-only, nosuid and nodev (and noexec when asked).
fn bind_ro(src: &Path, target: &Path, noexec: bool) -> Result<(), JailError> {
    mount(
        Some(src),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err(format!(
        "bind {} on {}",
        src.display(),
        target.display()
    )))?;
    restrict_tree(target, noexec)
}

/// Host-wide `/proc` files that describe the host rather than the sandbox (other users' keys,
/// the host's timers and scheduler, kernel memory, sysrq): each is covered by a bind of
/// `/dev/null` when this kernel has it. Docker's list, minus what a fresh procfs of the
/// sandbox's pid namespace already confines.
const MASKED_PROC_FILES: [&str; 7] = [
    "key-users",
    "keys",
    "timer_list",
    "sched_debug",
    "latency_stats",
    "kcore",
    "sysrq-trigger",
];
/// Host-wide `/proc` directories (firmware and device tables), covered by an empty read-only tmpfs.
const MASKED_PROC_DIRS: [&str; 3] = ["acpi", "scsi", "asound"];

/// `struct mount_attr` and the `MOUNT_ATTR_*` bits of `mount_setattr(2)` (linux/mount.h):
/// neither `libc` nor `nix` define them yet, so they are written out here.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Makes `target` and every mount below it read-only, nosuid and nodev (and noexec when asked),
/// in one call: `mount_setattr(AT_RECURSIVE)` only adds these flags, so the flags the kernel
/// locked on host mounts (which a remount would have to repeat exactly) stay as they are.
fn restrict_tree(target: &Path, noexec: bool) -> Result<(), JailError> {
    let path = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| JailError::Setup(format!("NUL in {}", target.display())))?;
    let mut set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if noexec {
        set |= MOUNT_ATTR_NOEXEC;
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is a NUL-terminated string and `attr` a `struct mount_attr` whose size is
    // passed with it; both outlive the call, and the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(JailError::Setup(format!(
            "make {} read-only: {err}",
            target.display()
        )));
    }
    Ok(())
}

/// Covers [`MASKED_PROC_FILES`] and [`MASKED_PROC_DIRS`] of the freshly mounted `proc_dir`.
fn mask_proc(proc_dir: &Path) -> Result<(), JailError> {
    for name in MASKED_PROC_FILES {
        let target = proc_dir.join(name);
        if target.exists() {
            mount(
                Some("/dev/null"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(err(format!("mask /proc/{name}")))?;
        }
    }
    for name in MASKED_PROC_DIRS {
        let target = proc_dir.join(name);
        if target.is_dir() {
            mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=4k,mode=0555"),
            )
            .map_err(err(format!("mask /proc/{name}")))?;
        }
    }
    Ok(())
}

fn write(path: &Path, content: &str) -> Result<(), JailError> {
    fs::write(path, content).map_err(io_err(format!("write {}", path.display())))
}

fn mkdir(path: &Path) -> Result<(), JailError> {
    fs::create_dir_all(path).map_err(io_err(format!("mkdir {}", path.display())))
}

/// Builds the new root and pivots into it. Runs as root of the sandbox's user namespace, in
/// its own mount namespace.
/// `disk`: the root of the mounted workspace image (see [`crate::disk`]), when there is one.
pub fn enter(cfg: &JailConfig, disk: Option<&MountedDisk>) -> Result<(), JailError> {
    // Our copy of the host's mounts must never propagate back.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(err("make / private"))?;
    // Hold the rootfs open: the staging tmpfs may hide its path (e.g. a rootfs under /tmp).
    let rootfs_dir = fs::File::open(&cfg.rootfs)
        .map_err(io_err(format!("open rootfs {}", cfg.rootfs.display())))?;
    let rootfs = PathBuf::from(format!("/proc/self/fd/{}", rootfs_dir.as_raw_fd()));
    // The same for the package tooling's host paths. `O_PATH`: the wheel selections directory
    // may be entered but not read (mode 0711), and a bind needs no more.
    let held = |path: &Path| -> Result<(fs::File, PathBuf), JailError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(path)
            .map_err(io_err(format!("open {}", path.display())))?;
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        Ok((file, fd_path))
    };
    let mut packages = cfg.packages.clone();
    let mut _held = Vec::new();
    if let Some(p) = packages.as_mut() {
        if let Some(installer) = p.installer.as_mut() {
            let (file, path) = held(installer)?;
            _held.push(file);
            *installer = path;
        }
        let (file, path) = held(&p.wheelhouse)?;
        _held.push(file);
        p.wheelhouse = path;
    }
    let root = Path::new(STAGING);
    tmpfs(root, 16 << 20, "0755", "")?;
    populate(cfg, packages.as_ref(), disk, &rootfs, root)?;
    drop(rootfs_dir);
    drop(_held);

    let old = root.join(".old");
    mkdir(&old)?;
    nix::unistd::pivot_root(root, &old).map_err(err("pivot_root"))?;
    nix::unistd::chdir("/").map_err(err("chdir /"))?;
    umount2("/.old", MntFlags::MNT_DETACH).map_err(err("detach old root"))?;
    fs::remove_dir("/.old").map_err(io_err("remove /.old"))?;
    // The root tmpfs itself is read-only from here on; only the tmpfs mounts below stay writable.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(err("remount / read-only"))?;
    nix::unistd::chdir(WORKSPACE).map_err(err("chdir workspace"))?;
    Ok(())
}

fn populate(
    cfg: &JailConfig,
    packages: Option<&Packages>,
    disk: Option<&MountedDisk>,
    rootfs: &Path,
    root: &Path,
) -> Result<(), JailError> {
    let limits = &cfg.limits;

    mkdir(&root.join("usr"))?;
    bind_ro(&rootfs.join("usr"), &root.join("usr"), false)?;
    for dir in SYSTEM_DIRS {
        let src = rootfs.join(dir);
        let Ok(meta) = fs::symlink_metadata(&src) else {
            continue;
        };
        let dst = root.join(dir);
        if meta.file_type().is_symlink() {
            let target =
                fs::read_link(&src).map_err(io_err(format!("readlink {}", src.display())))?;
            symlink(&target, &dst).map_err(io_err(format!("symlink {}", dst.display())))?;
        } else if meta.is_dir() {
            mkdir(&dst)?;
            bind_ro(&src, &dst, false)?;
        }
    }

    etc(cfg, rootfs, root)?;

    let proc_dir = root.join("proc");
    mkdir(&proc_dir)?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(err("mount /proc"))?;
    mask_proc(&proc_dir)?;

    dev(root, limits.shm_bytes)?;

    let tmp = root.join("tmp");
    mkdir(&tmp)?;
    tmpfs(&tmp, limits.tmp_bytes, "1777", "")?;

    let home = root.join(WORKSPACE.trim_start_matches('/'));
    mkdir(&home)?;
    match disk {
        Some(disk) => attach_tree(&disk.home, &home)?,
        None => tmpfs(
            &home,
            limits.workspace_bytes,
            "0755",
            &format!(",uid={SANDBOX_UID},gid={SANDBOX_UID}"),
        )?,
    }
    venv(cfg, packages, disk, rootfs, root)
}

/// `/opt`: the virtual environment and, for the containers engine, the installer and the
/// shared wheel cache. The venv is built by hand (a `pyvenv.cfg` and two symlinks are all a
/// venv is): `python -m venv` would cost an interpreter start per sandbox.
fn venv(
    cfg: &JailConfig,
    packages: Option<&Packages>,
    disk: Option<&MountedDisk>,
    rootfs: &Path,
    root: &Path,
) -> Result<(), JailError> {
    let venv = root.join(VENV.trim_start_matches('/'));
    mkdir(&venv)?;
    let installer = root.join(INSTALLER.trim_start_matches('/'));
    mkdir(installer.parent().expect("installer has a parent"))?;
    let Some(packages) = packages else {
        return Ok(());
    };
    match disk {
        // Kept from an earlier life of the sandbox, if any: what was installed stays.
        Some(disk) => attach_tree(&disk.venv, &venv)?,
        None => tmpfs(
            &venv,
            packages.venv_bytes,
            "0755",
            &format!(",uid={SANDBOX_UID},gid={SANDBOX_UID}"),
        )?,
    }
    let python = Path::new(&cfg.python);
    let home = python.parent().unwrap_or(Path::new("/usr/bin"));
    let version = python_version(&rootfs.join(cfg.python.trim_start_matches('/')));
    write(
        &venv.join("pyvenv.cfg"),
        &format!(
            "home = {}\ninclude-system-site-packages = false\nversion = {version}\n",
            home.display()
        ),
    )?;
    let site = venv.join(format!(
        "lib/python{}/site-packages",
        short_version(&version)
    ));
    fs::create_dir_all(&site).map_err(io_err("create venv site-packages"))?;
    mkdir(&venv.join("bin"))?;
    for name in ["python", "python3"] {
        let link = venv.join("bin").join(name);
        let _ = fs::remove_file(&link); // a rebuilt sandbox's venv already has it
        symlink(python, &link).map_err(io_err(format!("venv bin/{name}")))?;
    }
    // Everything in the venv belongs to the sandbox user, who installs into it.
    for path in [
        venv.join("pyvenv.cfg"),
        venv.join("lib"),
        venv.join(format!("lib/python{}", short_version(&version))),
        site,
        venv.join("bin"),
        venv.join("bin/python"),
        venv.join("bin/python3"),
    ] {
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &path,
            Some(nix::unistd::Uid::from_raw(SANDBOX_UID)),
            Some(nix::unistd::Gid::from_raw(SANDBOX_UID)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(err(format!("chown {}", path.display())))?;
    }

    if let Some(host_installer) = &packages.installer {
        fs::File::create(&installer).map_err(io_err("create installer mount point"))?;
        bind_ro(host_installer, &installer, false)?;
    }
    let wheels = root.join(WHEELHOUSE.trim_start_matches('/'));
    mkdir(&wheels)?;
    bind_ro(&packages.wheelhouse, &wheels, true)?;
    Ok(())
}

/// The interpreter's version as `pyvenv.cfg` wants it, read from the versioned name its
/// symlinks lead to (`python3` → `python3.11`); the full version is not needed by anything
/// that reads the file in this layout.
fn python_version(python: &Path) -> String {
    let resolved = fs::read_link(python).unwrap_or_else(|_| python.to_path_buf());
    let name = resolved
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("python3");
    name.trim_start_matches("python").to_string()
}

fn short_version(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

fn etc(cfg: &JailConfig, rootfs: &Path, root: &Path) -> Result<(), JailError> {
    let etc = root.join("etc");
    mkdir(&etc)?;
    write(
        &etc.join("passwd"),
        &format!(
            "root:x:0:0:root:/root:/usr/sbin/nologin\n\
             user:x:{SANDBOX_UID}:{SANDBOX_UID}:Sandbox user:{WORKSPACE}:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
    )?;
    write(
        &etc.join("group"),
        &format!("root:x:0:\ntty:x:5:\nuser:x:{SANDBOX_UID}:\nnogroup:x:65534:\n"),
    )?;
    write(&etc.join("hostname"), &format!("{}\n", cfg.hostname))?;
    write(
        &etc.join("hosts"),
        &format!(
            "127.0.0.1\tlocalhost {0}\n::1\tlocalhost ip6-localhost {0}\n",
            cfg.hostname
        ),
    )?;
    if let Network::Egress(net) = &cfg.network {
        let servers: String = net
            .nameservers
            .iter()
            .map(|ns| format!("nameserver {ns}\n"))
            .collect();
        write(
            &etc.join("resolv.conf"),
            &format!("{servers}options timeout:2 attempts:2\n"),
        )?;
    }
    write(
        &etc.join("nsswitch.conf"),
        "passwd: files\ngroup: files\nhosts: files dns\n",
    )?;
    for rel in ETC_FILES {
        let src = rootfs.join("etc").join(rel);
        if !src.is_file() {
            continue;
        }
        let dst = etc.join(rel);
        if let Some(parent) = dst.parent() {
            mkdir(parent)?;
        }
        fs::File::create(&dst).map_err(io_err(format!("create {}", dst.display())))?;
        bind_ro(&src, &dst, true)?;
    }
    for rel in ETC_DIRS {
        let src = rootfs.join("etc").join(rel);
        if src.is_dir() {
            let dst = etc.join(rel);
            mkdir(&dst)?;
            bind_ro(&src, &dst, true)?;
        }
    }
    Ok(())
}

fn dev(root: &Path, shm_bytes: u64) -> Result<(), JailError> {
    let dev = root.join("dev");
    mkdir(&dev)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("size=64k,mode=0755"),
    )
    .map_err(err("mount /dev"))?;
    for name in DEVICES {
        let dst = dev.join(name);
        fs::File::create(&dst).map_err(io_err(format!("create {}", dst.display())))?;
        mount(
            Some(&PathBuf::from("/dev").join(name)),
            &dst,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(err(format!("bind /dev/{name}")))?;
    }
    let pts = dev.join("pts");
    mkdir(&pts)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(err("mount /dev/pts"))?;
    symlink("pts/ptmx", dev.join("ptmx")).map_err(io_err("symlink /dev/ptmx"))?;
    let shm = dev.join("shm");
    mkdir(&shm)?;
    tmpfs(&shm, shm_bytes, "1777", "")?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name)).map_err(io_err(format!("symlink /dev/{name}")))?;
    }
    fs::set_permissions(&dev, fs::Permissions::from_mode(0o755)).map_err(io_err("chmod /dev"))?;
    Ok(())
}
