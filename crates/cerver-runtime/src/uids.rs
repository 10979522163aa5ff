//! Distinct host uid ranges per sandbox, across every Cerver server on the host.
//!
//! Range `n` maps the sandbox's ids 0..65536 to `base + n*65536 ..`. A range is held by an
//! exclusive `flock` on `<lock_dir>/<n>`, which the kernel drops when the holder dies, so a
//! crashed server never leaks ranges and two servers never share one.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use cerver_jail::protocol::MAPPED_IDS;
use nix::fcntl::{Flock, FlockArg};

/// How many ranges exist: base + RANGES*65536 stays far below u32::MAX.
const RANGES: u32 = 4096;

pub struct UidRange {
    pub base: u32,
    /// Which range this is (0..RANGES): also picks the sandbox's network addresses.
    pub slot: u32,
    _lock: Flock<File>,
}

/// Range `slot`'s lock, held, when no one holds it now (a crashed holder's lock is gone with
/// it); `None` when it is in use.
pub fn hold_if_free(lock_dir: &Path, slot: u32) -> Option<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_dir.join(slot.to_string()))
        .ok()?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()
}

pub fn claim(lock_dir: &Path, first_uid: u32) -> std::io::Result<UidRange> {
    fs::create_dir_all(lock_dir)?;
    let start = rand::random::<u32>() % RANGES;
    for i in 0..RANGES {
        let n = (start + i) % RANGES;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_dir.join(n.to_string()))?;
        if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            return Ok(UidRange {
                base: first_uid + n * MAPPED_IDS,
                slot: n,
                _lock: lock,
            });
        }
    }
    Err(std::io::Error::other("every sandbox uid range is in use"))
}
