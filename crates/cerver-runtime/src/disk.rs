//! Sandbox disks on the host: one sparse ext4 image per sandbox under
//! `<data-dir>/sandboxes/<label>/workspace.img`, the server-wide disk budget, and removal.
//!
//! An image is a copy of a template made once per size with `mkfs.ext4` (under
//! `<data-dir>/disk-templates/`); the copy keeps the template's holes (`SEEK_DATA`/`SEEK_HOLE`
//! and `copy_file_range`), so a 10 GiB image costs a few MiB of writes and grows only with what
//! the sandbox stores. The helper attaches and mounts it (`cerver_jail::disk`). Works on any
//! filesystem that has sparse files (ext4, xfs, btrfs, tmpfs), unlike project quotas.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::Whence;

use crate::RuntimeError;

/// The image's file name in its sandbox directory.
pub const IMAGE: &str = "workspace.img";

/// From this size on, templates get an 8 MiB journal (below, mke2fs picks a smaller one).
const SMALL_JOURNAL_FROM: u64 = 256 << 20;
/// The smallest image made (ext4 needs room for its own metadata).
const MIN_IMAGE: u64 = 4 << 20;

/// Bytes per inode of the templates: 8 KiB, so 131,072 files per GiB of quota (a dataset or a
/// `node_modules` of many small files fits; tmpfs had no such limit). The inode tables cost 3 %
/// of the quota's capacity and, being lazily initialised, almost no host disk.
const BYTES_PER_INODE: &str = "8192";

/// How much of the data dir's filesystem new sandboxes may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskBudget {
    /// Refuse a new sandbox unless 10% of the filesystem would stay free with every image of
    /// this server grown to its full size (the default).
    #[default]
    KeepTenPercentFree,
    /// Also refuse it once this server's images' sizes would exceed this many bytes together.
    Bytes(u64),
}

pub struct Disks {
    sandboxes: PathBuf,
    templates: PathBuf,
    budget: DiskBudget,
    /// Template creation, one at a time (a template is made once per size).
    making: tokio::sync::Mutex<()>,
    /// Held from a budget check until the image it allowed exists.
    budget_lock: tokio::sync::Mutex<()>,
    /// Labels whose directory belongs to a sandbox of this server (never reaped).
    live: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Disks {
    pub fn new(data_dir: &Path, budget: DiskBudget) -> Result<Disks, RuntimeError> {
        let disks = Disks {
            sandboxes: data_dir.join("sandboxes"),
            templates: data_dir.join("disk-templates"),
            budget,
            making: tokio::sync::Mutex::new(()),
            live: Default::default(),
            budget_lock: tokio::sync::Mutex::new(()),
        };
        for dir in [&disks.sandboxes, &disks.templates] {
            std::fs::create_dir_all(dir)
                .map_err(|e| RuntimeError::Create(format!("{}: {e}", dir.display())))?;
        }
        Ok(disks)
    }

    /// The directory of the sandbox labelled `label` (its image and the helper's mount point).
    pub fn dir(&self, label: &str) -> PathBuf {
        self.sandboxes.join(label)
    }

    /// The existing image of the sandbox labelled `label` (a rebuild after a restart).
    pub fn adopt(&self, label: &str) -> Result<PathBuf, RuntimeError> {
        let valid = label.len() <= 64
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let image = self.dir(label).join(IMAGE);
        if !valid || !image.is_file() {
            return Err(RuntimeError::Create(format!("no disk image for {label:?}")));
        }
        if in_use(&image) {
            return Err(RuntimeError::Create(format!(
                "the disk image of {label:?} is still attached"
            )));
        }
        self.live.lock().unwrap().insert(label.to_string());
        Ok(image)
    }

    /// A fresh image of `bytes` for the sandbox labelled `label`, after checking the budget.
    pub async fn create(&self, label: &str, bytes: u64) -> Result<PathBuf, RuntimeError> {
        let bytes = bytes.max(MIN_IMAGE);
        // Checked and taken in one step: concurrent creates cannot all pass the same check.
        let _budget = self.budget_lock.lock().await;
        self.check_budget(bytes).await?;
        self.live.lock().unwrap().insert(label.to_string());
        let template = self.template(bytes).await?;
        let dir = self.dir(label);
        let image = dir.join(IMAGE);
        let target = image.clone();
        let copied = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            copy_sparse(&template, &target)
        })
        .await
        .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        if let Err(e) = copied {
            self.remove(label).await;
            return Err(RuntimeError::Create(format!("workspace image: {e}")));
        }
        Ok(image)
    }

    /// Deletes the sandbox's directory (its image; the helper's mount is gone with it).
    pub async fn remove(&self, label: &str) {
        self.live.lock().unwrap().remove(label);
        let dir = self.dir(label);
        let _ = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(dir = %dir.display(), "could not delete a sandbox disk: {e}");
            }
            _ => {}
        })
        .await;
    }

    /// Forgets the sandbox labelled `label` without deleting its image (kept for a rebuild).
    pub fn release(&self, label: &str) {
        self.live.lock().unwrap().remove(label);
    }

    /// Deletes every sandbox directory that is neither live nor kept by `keep`; returns how many.
    pub fn reap(&self, keep: impl Fn(&str) -> bool) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.sandboxes) else {
            return 0;
        };
        let mut reaped = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep(&name) || self.live.lock().unwrap().contains(&name) {
                continue;
            }
            if std::fs::remove_dir_all(entry.path()).is_ok() {
                reaped += 1;
            }
        }
        reaped
    }

    /// Refuses a new image when the host's disk or this server's share of it is spent.
    async fn check_budget(&self, bytes: u64) -> Result<(), RuntimeError> {
        let (sandboxes, budget) = (self.sandboxes.clone(), self.budget);
        tokio::task::spawn_blocking(move || check_budget(&sandboxes, budget, bytes))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?
    }

    /// The template for `bytes`, made with `mkfs.ext4` the first time.
    async fn template(&self, bytes: u64) -> Result<PathBuf, RuntimeError> {
        let bytes = bytes.max(MIN_IMAGE);
        let path = self
            .templates
            .join(format!("ext4-{bytes}-i{BYTES_PER_INODE}.img"));
        if path.exists() {
            return Ok(path);
        }
        let _one = self.making.lock().await;
        if path.exists() {
            return Ok(path);
        }
        let partial = path.with_extension("partial");
        let file = File::create(&partial).map_err(create("template"))?;
        file.set_len(bytes).map_err(create("template size"))?;
        drop(file);
        // No reserved blocks (the whole quota is the user's), a small journal, inode tables
        // and journal left unwritten (a sparse file reads as zeros; see `noinit_itable`).
        let mut mkfs = tokio::process::Command::new("mkfs.ext4");
        mkfs.args(["-q", "-F", "-m", "0", "-i", BYTES_PER_INODE]);
        if bytes >= SMALL_JOURNAL_FROM {
            mkfs.args(["-J", "size=8"]); // mke2fs's own choice grows to 64+ MiB; small ones fit
        }
        let out = mkfs
            .args(["-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"])
            .arg(&partial)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .await
            .map_err(|e| RuntimeError::Create(format!("mkfs.ext4 (install e2fsprogs): {e}")))?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&partial);
            return Err(RuntimeError::Create(format!(
                "mkfs.ext4: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        std::fs::rename(&partial, &path).map_err(create("template"))?;
        Ok(path)
    }
}

fn create(what: &'static str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    move |e| RuntimeError::Create(format!("{what}: {e}"))
}

/// Refuses a new image of `bytes` unless it fits even if every image of this server grows to
/// its full size: the images are sparse, so what counts is what they may take, not what they
/// take now.
fn check_budget(sandboxes: &Path, budget: DiskBudget, bytes: u64) -> Result<(), RuntimeError> {
    let fs = nix::sys::statvfs::statvfs(sandboxes)
        .map_err(|e| RuntimeError::Internal(format!("statvfs: {e}")))?;
    let block = fs.fragment_size();
    // `f_bfree`, not `f_bavail`: the server and the loop devices write as root, who may use
    // the blocks the filesystem reserves for root.
    let free = fs.blocks_free().saturating_mul(block);
    let reserve = fs.blocks().saturating_mul(block) / 10;
    let (committed, allocated) = usage(sandboxes);
    let growth = committed.saturating_sub(allocated);
    if free.saturating_sub(growth).saturating_sub(bytes) < reserve {
        return Err(RuntimeError::DiskFull(
            "the server's disk is nearly full: no new sandbox can be created now".into(),
        ));
    }
    if let DiskBudget::Bytes(max) = budget
        && committed.saturating_add(bytes) > max
    {
        return Err(RuntimeError::DiskFull(
            "the server's sandbox disk budget is spent: no new sandbox can be created now".into(),
        ));
    }
    Ok(())
}

/// Whether a loop device is still backed by `image` (per `/sys/block/loop*/loop/backing_file`):
/// the sandbox a dead server left may still be tearing down, and an ext4 image must never be
/// mounted twice.
pub fn in_use(image: &Path) -> bool {
    let Ok(devices) = std::fs::read_dir("/sys/block") else {
        return false;
    };
    devices.flatten().any(|d| {
        std::fs::read_to_string(d.path().join("loop/backing_file"))
            .is_ok_and(|f| Path::new(f.trim_end_matches('\n')) == image)
    })
}

/// The images under `sandboxes`: their sizes together (what they may grow to) and the bytes
/// they occupy on the host now.
pub fn usage(sandboxes: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(sandboxes) else {
        return (0, 0);
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::metadata(e.path().join(IMAGE)).ok())
        .fold((0, 0), |(size, used), m| {
            (size + m.len(), used + m.blocks().saturating_mul(512))
        })
}

/// Copies `src` to a new `dst` of the same size, writing only `src`'s data ranges: its holes
/// stay holes (the kernel's `copy_file_range` alone would fill them on most filesystems).
fn copy_sparse(src: &Path, dst: &Path) -> std::io::Result<()> {
    let input = File::open(src)?;
    let output = File::create(dst)?;
    let len = input.metadata()?.len();
    output.set_len(len)?;
    let mut offset = 0i64;
    while (offset as u64) < len {
        let start = match nix::unistd::lseek(&input, offset, Whence::SeekData) {
            Ok(start) => start,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole is left
            Err(e) => return Err(e.into()),
        };
        let end = nix::unistd::lseek(&input, start, Whence::SeekHole)?;
        let (mut from, mut to) = (start, start);
        while from < end {
            let want = (end - from) as usize;
            let n =
                nix::fcntl::copy_file_range(&input, Some(&mut from), &output, Some(&mut to), want)?;
            if n == 0 {
                break;
            }
        }
        offset = end;
    }
    // No fsync: the image's own journal commits flush the backing file through the loop device.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_keeps_holes_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let file = File::create(&src).unwrap();
        file.set_len(64 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, b"head", 0).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, b"tail", (64 << 20) - 4).unwrap();
        drop(file);
        let dst = dir.path().join("dst");
        copy_sparse(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        let meta = std::fs::metadata(&dst).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        assert!(meta.blocks() * 512 < 1 << 20, "holes were filled");
    }
}
