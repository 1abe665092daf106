//! Errors of the service, answered as `{"error": "...", "error_type": "..."}` with the HTTP
//! status text-embeddings-inference uses for each kind.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// What went wrong, in TEI's words (`error_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ErrorType {
    /// The request has nothing to score (400).
    Empty,
    /// The request is malformed or asks for something the service does not do (400, 413,
    /// 415 or 422).
    Validation,
    /// A text could not be tokenised (422).
    Tokenizer,
    /// Too many requests at once (429).
    Overloaded,
    /// The model failed (424).
    Backend,
    /// A wrong or missing API key (401).
    Unauthorized,
    /// The service is shutting down (503).
    Unhealthy,
    /// No such route, or a route this service was started without (404).
    NotFound,
    /// The request ran past the request timeout (408).
    Timeout,
}

/// An error answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The kind.
    pub error_type: ErrorType,
    /// What to tell the client.
    pub message: String,
}

impl ApiError {
    /// An error of `error_type` with its usual status.
    pub fn new(error_type: ErrorType, message: impl Into<String>) -> Self {
        let status = match error_type {
            ErrorType::Empty => StatusCode::BAD_REQUEST,
            ErrorType::Validation | ErrorType::Tokenizer => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ErrorType::Backend => StatusCode::FAILED_DEPENDENCY,
            ErrorType::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorType::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::NotFound => StatusCode::NOT_FOUND,
            ErrorType::Timeout => StatusCode::REQUEST_TIMEOUT,
        };
        ApiError {
            status,
            error_type,
            message: message.into(),
        }
    }

    /// A validation error.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorType::Validation, message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_type: ErrorType,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!(
            "tantivy_rerank_request_failures_total",
            "error_type" => format!("{:?}", self.error_type)
        )
        .increment(1);
        let body = ErrorBody {
            error: &self.message,
            error_type: self.error_type,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// A body axum could not read as the JSON a route takes: malformed JSON or invalid UTF-8
/// (400), the wrong fields or types (422), over the payload limit (413), not JSON (415).
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError {
            status: rejection.status(),
            error_type: ErrorType::Validation,
            message: rejection.body_text(),
        }
    }
}
