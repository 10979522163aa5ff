//! Bounds on the operations that hold a large buffer in the server while they run: file reads
//! (up to `max_file_bytes`, plus their base64 and JSON copies), writes, listings (up to
//! `LIST_OUTPUT_BYTES` of output, parsed and re-serialized) and upgrades (a whole workspace as
//! a tar stream). Each takes one of the server's transfer slots and one of its sandbox's, or is
//! refused at once (`ControlError::Busy`, 429 with `Retry-After`): many concurrent requests can
//! no longer push the server's memory up without limit. The server's memory for transfers is
//! at most `max_transfers` times the largest one.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Control, ControlError, Entry};

/// Held for the duration of one transfer.
pub(crate) struct TransferPermit {
    _server: OwnedSemaphorePermit,
    _sandbox: OwnedSemaphorePermit,
}

/// A sandbox's own transfer slots.
pub(crate) fn sandbox_slots(cfg: &crate::ControlConfig) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(cfg.max_transfers_per_sandbox.max(1)))
}

impl Control {
    /// One of the sandbox's transfer slots and one of the server's, or `Busy`.
    pub(crate) fn transfer_permit(&self, entry: &Entry) -> Result<TransferPermit, ControlError> {
        let sandbox = entry.transfers.clone().try_acquire_owned().map_err(|_| {
            ControlError::Busy(format!(
                "this sandbox already has {} file transfers (reads, writes, listings) under way; \
                 retry when one has finished",
                self.cfg.max_transfers_per_sandbox.max(1)
            ))
        })?;
        let server = self.transfers.clone().try_acquire_owned().map_err(|_| {
            ControlError::Busy(
                "the server has too many file transfers under way; retry shortly".into(),
            )
        })?;
        Ok(TransferPermit {
            _server: server,
            _sandbox: sandbox,
        })
    }
}
