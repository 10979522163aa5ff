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
use crate::{AppState, LOCAL_OWNER};

pub async fn write(
    State(st): State<AppState>,
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
        .write_file(LOCAL_OWNER, &id, &req.path, content)
        .await?;
    Ok(Json(WriteFileResponse {
        success: true,
        path: req.path,
        size,
    }))
}

/// `GET /sandbox/:id/files` lists; with `?path=` it reads that file.
pub async fn get(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<FilesQuery>,
) -> Result<Response, ApiError> {
    match q.path {
        Some(path) => {
            let bytes = st.control.read_file(LOCAL_OWNER, &id, &path).await?;
            let size = bytes.len() as u64;
            let (content, encoding) = match String::from_utf8(bytes) {
                Ok(s) => (s, None),
                Err(e) => (
                    base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                    Some("base64".to_string()),
                ),
            };
            Ok(Json(ReadFileResponse {
                path,
                content,
                size,
                encoding,
            })
            .into_response())
        }
        None => {
            let list = st.control.list_files(LOCAL_OWNER, &id, "").await?;
            let files = list
                .files
                .into_iter()
                .map(|f| FileInfo {
                    path: f.path,
                    size: f.size,
                })
                .collect();
            Ok(Json(ListFilesResponse {
                files,
                truncated: list.truncated,
            })
            .into_response())
        }
    }
}
