//! What the two programs of this crate share: a `cerver serve` child on 127.0.0.1
//! ([`server`]), host-side views of its processes and cgroups ([`procs`]) and latency
//! summaries ([`stats`]). `cerver-bench` (src/main.rs) measures latency and memory;
//! `cerver-soak` (src/soak/) puts many users and abusive sandboxes on one server at once and
//! checks that it comes back to where it started.

pub mod api;
pub mod procs;
pub mod server;
pub mod stats;
