//! The files API: write, read, list, all relative to the workspace.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use cerver_types::{
    FileInfo, FilesQuery, ListFilesResponse, ReadFileResponse, WriteFileRequest, WriteFileResponse,
};

use crate::error::ApiError;
use crate::extract::{JsonBody, Query};
use axum::Extension;
use cerver_control::Caller;

use crate::AppState;

#[utoipa::path(
    post,
    path = "/sandbox/{id}/files",
    tag = "files",
    operation_id = "write_file",
    summary = "Write a file",
    description = "Writes a file relative to the workspace (`/home/user`), creating parent directories.",
    params(("id" = String, Path, description = "The sandbox's `sandbox_id`.")),
    request_body(content = cerver_types::WriteFileRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The file was written.", body = cerver_types::WriteFileResponse),
        (status = 400, description = "Malformed JSON, an invalid path or encoding, or content that is not valid base64.", body = cerver_types::ErrorBody),
        (status = 403, description = "The sandbox user may not write there.", body = cerver_types::ErrorBody),
        (status = 404, description = "No such sandbox (or it has ended).", body = cerver_types::ErrorBody),
        (status = 408, description = "The file operation timed out.", body = cerver_types::ErrorBody),
        (status = 413, description = "The request body or the file is too large, or the workspace is full.", body = cerver_types::ErrorBody),
        (status = 422, description = "A field is missing or has the wrong type.", body = cerver_types::ErrorBody),
        (status = 500, description = "Internal server error.", body = cerver_types::ErrorBody),
    )
)]
pub async fn write(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<WriteFileRequest>,
) -> Result<Json<WriteFileResponse>, ApiError> {
    let content = match req.encoding.as_deref() {
        None | Some("utf-8") | Some("utf8") | Some("text") => Bytes::from(req.content),
        Some("base64") => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(req.content.as_bytes())
                .map_err(|e| {
                    ApiError::bad_request(
                        "invalid_request",
                        format!("content is not valid base64: {e}"),
                    )
                })?,
        ),
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!(
                    "unknown encoding {:?}: use \"utf-8\" or \"base64\"",
                    other.chars().take(32).collect::<String>()
                ),
            ));
        }
    };
    let size = st
        .control
        .write_file(&caller.user.id, &id, &req.path, content)
        .await?;
    Ok(Json(WriteFileResponse {
        success: true,
        path: req.path,
        size,
    }))
}

/// `GET /sandbox/:id/files` lists; with `?path=` it reads that file.
#[utoipa::path(
    get,
    path = "/sandbox/{id}/files",
    tag = "files",
    operation_id = "get_files",
    summary = "Read a file, or list the workspace",
    description = "With `?path=` reads that file (base64 when it is not UTF-8); without it lists every file of the workspace.",
    params(("id" = String, Path, description = "The sandbox's `sandbox_id`."), cerver_types::FilesQuery),
    responses(
        (status = 200, description = "The file (`ReadFileResponse`) with `path`, else the listing (`ListFilesResponse`).", body = cerver_types::GetFilesResponse),
        (status = 400, description = "An invalid query or path, or the path is a directory.", body = cerver_types::ErrorBody),
        (status = 403, description = "The sandbox user may not read there.", body = cerver_types::ErrorBody),
        (status = 404, description = "No such sandbox, or no such file.", body = cerver_types::ErrorBody),
        (status = 408, description = "The file operation timed out.", body = cerver_types::ErrorBody),
        (status = 413, description = "The file is larger than the server's maximum.", body = cerver_types::ErrorBody),
        (status = 500, description = "Internal server error.", body = cerver_types::ErrorBody),
    )
)]
pub async fn get(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<FilesQuery>,
) -> Result<Response, ApiError> {
    match q.path {
        Some(path) => Ok(Json(read(&st, &caller, &id, path).await?).into_response()),
        None => Ok(Json(list(&st, &caller, &id).await?).into_response()),
    }
}

/// Reads one file of the workspace (base64 when it is not UTF-8).
pub async fn read(
    st: &AppState,
    caller: &Caller,
    id: &str,
    path: String,
) -> Result<ReadFileResponse, ApiError> {
    let bytes = st.control.read_file(&caller.user.id, id, &path).await?;
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
pub async fn list(st: &AppState, caller: &Caller, id: &str) -> Result<ListFilesResponse, ApiError> {
    let list = st.control.list_files(&caller.user.id, id, "").await?;
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
