//! The operations layer: every sandbox operation as a plain async function over domain types,
//! `op(&Control, &Caller, id, request) -> Result<documented response, ControlError>`. The HTTP
//! handlers and the MCP tools are thin adapters over these (extract, call, map the error), so
//! checks, owner scoping, limits and messages are the same for both by construction.
//! Validation (timeouts, sizes, package specs, paths, encodings) happens here or below, once.

pub mod contexts;
pub mod files;
pub mod processes;
pub mod runs;
pub mod sandboxes;

pub use contexts::CreateContext;
pub use files::WriteFile;
pub use runs::RunRequest;
