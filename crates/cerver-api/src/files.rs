//! The files API: write, read, list, all relative to the workspace; adapters over
//! [`cerver_control::ops::files`].

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cerver_control::Caller;
use cerver_control::ops::{self, WriteFile};
use cerver_types::{FilesQuery, WriteFileRequest, WriteFileResponse};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{JsonBody, Query};

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
        (status = 429, description = "Too many file transfers under way in this sandbox or on the server (`busy`, with `Retry-After`).", body = cerver_types::ErrorBody),
        (status = 500, description = "Internal server error.", body = cerver_types::ErrorBody),
    )
)]
pub async fn write(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<WriteFileRequest>,
) -> Result<Json<WriteFileResponse>, ApiError> {
    let file = WriteFile {
        path: req.path,
        content: req.content,
        encoding: req.encoding,
    };
    Ok(Json(
        ops::files::write(&st.control, &caller, &id, file).await?,
    ))
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
        (status = 429, description = "Too many file transfers under way in this sandbox or on the server (`busy`, with `Retry-After`).", body = cerver_types::ErrorBody),
        (status = 500, description = "Internal server error.", body = cerver_types::ErrorBody),
    )
)]
pub async fn get(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<FilesQuery>,
) -> Result<Response, ApiError> {
    let c = &st.control;
    Ok(match q.path {
        Some(path) => Json(ops::files::read(c, &caller, &id, path).await?).into_response(),
        None => Json(ops::files::list(c, &caller, &id).await?).into_response(),
    })
}
