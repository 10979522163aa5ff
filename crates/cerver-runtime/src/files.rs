//! File operations. They execute inside the sandbox as the sandbox user, through the same path
//! as code (see `zygote.py`), so `..`, absolute paths and symlinks resolve in the sandbox's own
//! mount namespace and can never reach the host. On top of that, paths given to the API are
//! checked here to stay inside the workspace.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cerver_jail::protocol::{RunSpec, WORKSPACE, file_exit};
use serde::Deserialize;

use crate::RuntimeError;
use crate::run::RunOutput;
use crate::sandbox::Sandbox;

const FILE_OP_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_PATH: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileErrorKind {
    NotFound,
    IsDirectory,
    NotADirectory,
    TooLarge,
    Permission,
    NoSpace,
    /// The sandbox did not complete the operation in time (e.g. it is saturated).
    TimedOut,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileList {
    pub files: Vec<FileEntry>,
    pub truncated: bool,
}

/// Normalizes an API path to a path relative to the workspace, refusing anything that would
/// leave it. Absolute paths are accepted when they point inside the workspace.
pub fn workspace_path(path: &str, allow_root: bool) -> Result<String, RuntimeError> {
    let bad = |why: &str| RuntimeError::BadPath(format!("{why}: {path:?}"));
    if path.len() > MAX_PATH {
        return Err(RuntimeError::BadPath(format!(
            "path longer than {MAX_PATH} bytes"
        )));
    }
    if path.contains('\0') {
        return Err(bad("path contains a NUL byte"));
    }
    let rel = if let Some(rest) = path.strip_prefix(WORKSPACE) {
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(bad("absolute paths must be inside the workspace"));
        }
        rest
    } else if path.starts_with('/') {
        return Err(bad(&format!(
            "absolute paths must be inside the workspace ({WORKSPACE})"
        )));
    } else {
        path
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(bad("path escapes the workspace"));
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() && !allow_root {
        return Err(RuntimeError::BadPath("path is empty".into()));
    }
    Ok(parts.join("/"))
}

#[derive(Deserialize)]
struct FileErrorBody {
    kind: String,
    error: String,
}

fn file_error(out: &RunOutput) -> RuntimeError {
    if let Some(e) = &out.exit.error {
        let kind = if out.exit.timed_out {
            FileErrorKind::TimedOut
        } else {
            FileErrorKind::Other
        };
        return RuntimeError::File {
            kind,
            message: format!("file operation failed: {e}"),
        };
    }
    let body: Option<FileErrorBody> = serde_json::from_slice(&out.stderr).ok();
    let kind = match out.exit.exit_code {
        file_exit::NOT_FOUND => FileErrorKind::NotFound,
        file_exit::IS_DIRECTORY => FileErrorKind::IsDirectory,
        file_exit::NOT_A_DIRECTORY => FileErrorKind::NotADirectory,
        file_exit::TOO_LARGE => FileErrorKind::TooLarge,
        file_exit::PERMISSION => FileErrorKind::Permission,
        file_exit::NO_SPACE => FileErrorKind::NoSpace,
        _ => FileErrorKind::Other,
    };
    let message = body
        .map(|b| {
            let _ = b.kind;
            b.error
        })
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(500)
                .collect()
        });
    RuntimeError::File { kind, message }
}

/// Most path bytes one listing carries (its entries past this are left out, `truncated`):
/// with the JSON around each entry (and escapes), its output stays under
/// [`LIST_OUTPUT_BYTES`], which bounds what a listing holds in the server's memory.
pub const LIST_PATH_BYTES: u64 = 2 << 20;
/// Largest listing output read from the sandbox.
const LIST_OUTPUT_BYTES: usize = 16 << 20;

impl Sandbox {
    async fn file_op(
        self: &Arc<Self>,
        spec: RunSpec,
        stdin: Option<Bytes>,
        max: usize,
    ) -> Result<RunOutput, RuntimeError> {
        let handle = self.start(&spec, stdin, FILE_OP_TIMEOUT).await?;
        let out = handle.collect(max).await;
        if out.exit.exit_code != 0 || out.exit.error.is_some() {
            return Err(file_error(&out));
        }
        Ok(out)
    }

    /// Writes `content` to `path` (relative to the workspace), creating parent directories.
    pub async fn write_file(
        self: &Arc<Self>,
        path: &str,
        content: Bytes,
        max_bytes: u64,
    ) -> Result<u64, RuntimeError> {
        let path = workspace_path(path, false)?;
        if content.len() as u64 > max_bytes {
            return Err(RuntimeError::File {
                kind: FileErrorKind::TooLarge,
                message: format!("content is larger than {max_bytes} bytes"),
            });
        }
        let out = self
            .file_op(RunSpec::WriteFile { path, max_bytes }, Some(content), 4096)
            .await?;
        #[derive(Deserialize)]
        struct Written {
            size: u64,
        }
        serde_json::from_slice::<Written>(&out.stdout)
            .map(|w| w.size)
            .map_err(|e| RuntimeError::Internal(format!("write_file reply: {e}")))
    }

    pub async fn read_file(
        self: &Arc<Self>,
        path: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, RuntimeError> {
        let path = workspace_path(path, false)?;
        let out = self
            .file_op(
                RunSpec::ReadFile { path, max_bytes },
                None,
                max_bytes as usize + 1,
            )
            .await?;
        if out.stdout.len() as u64 > max_bytes {
            return Err(RuntimeError::File {
                kind: FileErrorKind::TooLarge,
                message: format!("file is larger than {max_bytes} bytes"),
            });
        }
        Ok(out.stdout)
    }

    pub async fn list_files(
        self: &Arc<Self>,
        path: &str,
        max_entries: u64,
    ) -> Result<FileList, RuntimeError> {
        let path = workspace_path(path, true)?;
        let out = self
            .file_op(
                RunSpec::ListFiles {
                    path,
                    max_entries,
                    max_path_bytes: LIST_PATH_BYTES,
                },
                None,
                LIST_OUTPUT_BYTES,
            )
            .await?;
        #[derive(Deserialize)]
        struct Listing {
            files: Vec<FileEntry>,
            truncated: bool,
        }
        let l: Listing = serde_json::from_slice(&out.stdout)
            .map_err(|e| RuntimeError::Internal(format!("list_files reply: {e}")))?;
        Ok(FileList {
            files: l.files,
            truncated: l.truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::workspace_path;

    #[test]
    fn normalizes_inside_the_workspace() {
        assert_eq!(workspace_path("data.txt", false).unwrap(), "data.txt");
        assert_eq!(workspace_path("./a/../b//c.txt", false).unwrap(), "b/c.txt");
        assert_eq!(workspace_path("/home/user/x/y", false).unwrap(), "x/y");
        assert_eq!(workspace_path("/home/user", true).unwrap(), "");
        assert_eq!(workspace_path("", true).unwrap(), "");
    }

    #[test]
    fn refuses_escapes() {
        for p in [
            "../etc/passwd",
            "a/../../x",
            "/etc/passwd",
            "/home/username/x",
            "/home/user/../../etc",
            "",
            "a\0b",
        ] {
            assert!(workspace_path(p, false).is_err(), "{p:?} must be refused");
        }
        assert!(workspace_path(&"a/".repeat(3000), false).is_err());
    }
}
