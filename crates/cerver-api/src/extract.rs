//! Request extractors whose failures are JSON errors like every other.

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body, read whatever the Content-Type says (curl's `-d` sends form encoding).
/// An empty body becomes `T::default()` where the route allows it ([`OptionalJson`]).
pub struct JsonBody<T>(pub T);

/// Like [`JsonBody`] but an empty body means "all defaults".
pub struct OptionalJson<T>(pub T);

fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is too large",
        )
    } else {
        ApiError::bad_request("invalid_body", e.body_text())
    }
}

pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every documented body is a JSON object, but serde's derived structs also take an array
    // of their fields in order (`[]` would be "all defaults"): refuse it like any other
    // value of the wrong type.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "invalid type: array, expected a JSON object",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        use serde_json::error::Category;
        let field = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Data if field != "." => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("invalid field `{field}`: {inner}"),
            ),
            Category::Data => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                inner.to_string(),
            ),
            _ => ApiError::bad_request("invalid_json", format!("malformed JSON: {inner}")),
        }
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "invalid_json",
                "a JSON body is required",
            ));
        }
        parse(&bytes).map(JsonBody)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse(&bytes).map(OptionalJson)
    }
}

/// Query string parameters.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// Reads a JSON number as a non-negative integer, refusing negatives, fractions and absurd
/// values with a clear message.
pub fn non_negative_int(n: &serde_json::Number, field: &str, max: u64) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_request",
            format!("{field} must be a non-negative integer up to {max}"),
        )
    };
    match n.as_u64() {
        Some(v) if v <= max => Ok(v),
        Some(_) => Err(bad()),
        None => match n.as_f64() {
            Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= max as f64 => Ok(f as u64),
            _ => Err(bad()),
        },
    }
}
