//! The files API: write, read, list, all relative to the workspace (paths are checked by the
//! runtime's workspace rules; the operation itself runs inside the sandbox).

use base64::Engine as _;
use bytes::Bytes;
use cerver_types::{FileInfo, ListFilesResponse, ReadFileResponse, WriteFileResponse};

use crate::{Caller, Control, ControlError};

/// A file to write, as a caller gives it.
#[derive(Debug, Clone)]
pub struct WriteFile {
    pub path: String,
    pub content: String,
    /// `utf-8` (the default; also `utf8`, `text`) or `base64`.
    pub encoding: Option<String>,
}

fn decode(content: String, encoding: Option<&str>) -> Result<Bytes, ControlError> {
    match encoding {
        None | Some("utf-8") | Some("utf8") | Some("text") => Ok(Bytes::from(content)),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(content.as_bytes())
            .map(Bytes::from)
            .map_err(|e| ControlError::invalid(format!("content is not valid base64: {e}"))),
        Some(other) => Err(ControlError::invalid(format!(
            "unknown encoding {:?}: use \"utf-8\" or \"base64\"",
            other.chars().take(32).collect::<String>()
        ))),
    }
}

pub async fn write(
    c: &Control,
    caller: &Caller,
    id: &str,
    file: WriteFile,
) -> Result<WriteFileResponse, ControlError> {
    let content = decode(file.content, file.encoding.as_deref())?;
    c.wake(caller, id).await?;
    let entry = c.get(&caller.user.id, id)?;
    let _transfer = c.transfer_permit(&entry)?;
    let max = c.runtime.config().max_file_bytes;
    let size = entry.sandbox.write_file(&file.path, content, max).await?;
    Ok(WriteFileResponse {
        success: true,
        path: file.path,
        size,
    })
}

/// Reads one file of the workspace (base64 when it is not UTF-8).
pub async fn read(
    c: &Control,
    caller: &Caller,
    id: &str,
    path: String,
) -> Result<ReadFileResponse, ControlError> {
    c.wake(caller, id).await?;
    let entry = c.get(&caller.user.id, id)?;
    let _transfer = c.transfer_permit(&entry)?;
    let max = c.runtime.config().max_file_bytes;
    let bytes = entry.sandbox.read_file(&path, max).await?;
    let size = bytes.len() as u64;
    let (content, encoding) = match String::from_utf8(bytes) {
        Ok(s) => (s, None),
        Err(e) => (
            base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
            Some("base64".to_string()),
        ),
    };
    Ok(ReadFileResponse {
        path,
        content,
        size,
        encoding,
    })
}

/// Lists every file of the workspace.
pub async fn list(
    c: &Control,
    caller: &Caller,
    id: &str,
) -> Result<ListFilesResponse, ControlError> {
    c.wake(caller, id).await?;
    let entry = c.get(&caller.user.id, id)?;
    let _transfer = c.transfer_permit(&entry)?;
    let max = c.runtime.config().max_list_entries;
    let list = entry.sandbox.list_files("", max).await?;
    let files = list
        .files
        .into_iter()
        .map(|f| FileInfo {
            path: f.path,
            size: f.size,
        })
        .collect();
    Ok(ListFilesResponse {
        files,
        truncated: list.truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_encodings() {
        assert_eq!(decode("hi".into(), None).unwrap(), Bytes::from("hi"));
        assert_eq!(
            decode("aGk=".into(), Some("base64")).unwrap(),
            Bytes::from("hi")
        );
        for (content, enc) in [("%%", "base64"), ("hi", "rot13")] {
            let e = decode(content.into(), Some(enc)).unwrap_err();
            assert!(
                matches!(
                    &e,
                    ControlError::Invalid {
                        code: "invalid_request",
                        ..
                    }
                ),
                "{e:?}"
            );
        }
    }
}
