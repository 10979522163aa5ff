//! The sandbox's disk: its workspace image (a sparse ext4 file made by the runtime) attached to a
//! loop device and mounted by the helper, as host root, in a mount namespace of its own.
//!
//! The mount is never visible on the host: the helper first leaves the host's mount namespace
//! (`unshare(CLONE_NEWNS)`, everything private), mounts the image there, and the sandbox init is
//! cloned from that namespace. When the helper and the init are gone, nothing refers to the
//! mount any more: the kernel unmounts the filesystem and, because the loop device is attached
//! with `LO_FLAGS_AUTOCLEAR`, detaches the loop device too. A crash of anything leaves neither a
//! mount nor a loop device behind; only the image file stays, for the runtime to keep or delete.
//!
//! The quota is the image's size: ext4 answers `ENOSPC` when it is full. The image's root holds
//! [`HOME_DIR`] (bound on `/home/user`) and [`VENV_DIR`] (bound on `/opt/venv` for the
//! containers engine), so both share one quota.
//!
//! Hand-rolled loop ioctls: neither `nix` nor `libc` wraps `LOOP_CONFIGURE`, and the loop-device
//! crates (`loopdev`) generate their bindings with bindgen at build time (libclang), which the
//! jail's dependency allow-list does not take in for three ioctls.

use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::unistd::{Gid, Uid};

use crate::JailError;
use crate::protocol::{MAPPED_IDS, SANDBOX_UID};

/// Directory of the image's root bound on `/home/user`.
pub const HOME_DIR: &str = "home";
/// Directory of the image's root bound on `/opt/venv` (containers engine).
pub const VENV_DIR: &str = "venv";

// linux/loop.h
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// How often a free loop device is looked for when another process takes it first.
const ATTACH_ATTEMPTS: usize = 16;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn setup(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> JailError {
    let what = what.into();
    move |e| JailError::Setup(format!("{what}: {e}"))
}

/// The image's two directories as detached mount trees (`open_tree(OPEN_TREE_CLONE)`), which
/// the init attaches in its own mount namespace ([`attach_tree`]): a bind from a path would
/// need the data dir to be traversable by the sandbox's ids, and a mount of the helper's
/// namespace cannot be bound from another one.
pub struct MountedDisk {
    pub home: OwnedFd,
    pub venv: OwnedFd,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// A detached copy of the mount at `path` (a bind mount that belongs to no namespace yet).
fn open_tree(path: &Path) -> Result<OwnedFd, JailError> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| JailError::Setup(format!("NUL in {}", path.display())))?;
    // SAFETY: `c_path` is NUL-terminated and outlives the call; the kernel returns a new
    // descriptor (or -1) that nothing else owns.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(setup(format!("open_tree {}", path.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attaches the detached tree `tree` (from [`MountedDisk`]) on `target`.
pub fn attach_tree(tree: &OwnedFd, target: &Path) -> Result<(), JailError> {
    let c_target = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| JailError::Setup(format!("NUL in {}", target.display())))?;
    // SAFETY: both strings are NUL-terminated and outlive the call; `tree` is an open
    // descriptor of a detached mount.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c_target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(setup(format!(
            "attach the workspace on {}",
            target.display()
        ))(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Leaves the host's mount namespace, attaches `image` to a free loop device and mounts it
/// (nosuid, nodev) next to the image; prepares [`HOME_DIR`] and [`VENV_DIR`] for the sandbox
/// user whose host uid is `uid_base + SANDBOX_UID`.
pub fn mount_image(image: &Path, uid_base: u32) -> Result<MountedDisk, JailError> {
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| JailError::Setup(format!("unshare mount namespace: {e}")))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| JailError::Setup(format!("make mounts private: {e}")))?;
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)
        .map_err(setup(format!("open {}", image.display())))?;
    // The device stays open until the mount holds it: auto-clear acts on the last close.
    let (device, _device_fd) = attach(&backing)?;
    let target = image.with_file_name("mnt");
    fs::create_dir_all(&target).map_err(setup("create the mount point"))?;
    // `noinit_itable`: the template is a sparse file whose inode tables read as zeros already;
    // zeroing them again would allocate them on the host's disk.
    let mounted = mount(
        Some(device.as_path()),
        &target,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("noinit_itable,errors=remount-ro"),
    );
    // From here the mount holds the loop device; dropping our descriptor lets it auto-clear.
    if let Err(e) = mounted {
        return Err(JailError::Setup(format!("mount the workspace image: {e}")));
    }
    let owner = uid_base + SANDBOX_UID;
    for dir in [HOME_DIR, VENV_DIR] {
        prepare_dir(&target.join(dir), uid_base, owner)?;
    }
    let disk = MountedDisk {
        home: open_tree(&target.join(HOME_DIR))?,
        venv: open_tree(&target.join(VENV_DIR))?,
    };
    // The detached trees hold the filesystem now; the mount point is no longer needed.
    umount2(&target, MntFlags::MNT_DETACH)
        .map_err(|e| JailError::Setup(format!("unmount the staging mount: {e}")))?;
    Ok(disk)
}

/// Attaches `backing` to a free loop device (auto-clearing) and returns its path and an open
/// descriptor: the loop device detaches itself when its last user (that descriptor, then the
/// mount made next) is gone.
fn attach(backing: &File) -> Result<(PathBuf, File), JailError> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")
        .map_err(setup("open /dev/loop-control"))?;
    let mut last = None;
    for _ in 0..ATTACH_ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(setup("find a free loop device")(
                std::io::Error::last_os_error(),
            ));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(setup(format!("open {}", path.display())))?;
        // SAFETY: an all-zero `loop_config` is valid (no offset, no size limit, no name).
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = backing.as_raw_fd() as u32;
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: `config` is a `struct loop_config` that outlives the call; the kernel reads it.
        let rc = unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        };
        if rc == 0 {
            return Ok((path, device));
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(setup(format!("attach {}", path.display()))(err));
        }
        last = Some(err); // another process took it between the two calls: try the next
    }
    Err(setup("attach a loop device")(last.unwrap_or_else(|| {
        std::io::Error::other("no free loop device")
    })))
}

/// Creates `dir` owned by `owner`, or, when it was left by a sandbox whose ids mapped to another
/// host range (a rebuild after a restart), moves every file in it to this sandbox's range.
fn prepare_dir(dir: &Path, uid_base: u32, owner: u32) -> Result<(), JailError> {
    match fs::symlink_metadata(dir) {
        Err(_) => {
            fs::create_dir(dir).map_err(setup(format!("create {}", dir.display())))?;
            chown(dir, owner, owner)
        }
        Ok(meta) if meta.uid() == owner => Ok(()),
        Ok(meta) => {
            let old_base = meta.uid().saturating_sub(SANDBOX_UID);
            remap_tree(dir, old_base, uid_base)
        }
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), JailError> {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| JailError::Setup(format!("chown {}: {e}", path.display())))
}

/// Shifts the owner of every file under `top` from the range at `old_base` to the one at
/// `new_base` (ids outside the old range become the new range's root). Never follows symlinks.
fn remap_tree(top: &Path, old_base: u32, new_base: u32) -> Result<(), JailError> {
    let shift = |id: u32| match id.checked_sub(old_base) {
        Some(offset) if offset < MAPPED_IDS => new_base + offset,
        _ => new_base,
    };
    let mut pending = vec![top.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta =
            fs::symlink_metadata(&path).map_err(setup(format!("stat {}", path.display())))?;
        chown(&path, shift(meta.uid()), shift(meta.gid()))?;
        if meta.is_dir() {
            let entries = fs::read_dir(&path).map_err(setup(format!("list {}", path.display())))?;
            pending.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
        }
    }
    Ok(())
}
