//! HTTP error answers: one JSON shape, with the status and flags that tell
//! a client whether to retry.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::core::session::SessionError;
use crate::core::types::{Membership, NodeId};
use crate::error::RaftError;

/// An error answer of the HTTP API, as JSON:
///
/// ```json
/// {"error": "what happened and what to do", "indeterminate": false,
///  "retryable": true, "leader": 2, "leader_api": "10.0.0.2:8080"}
/// ```
///
/// `indeterminate: true` means a write may have been applied (read the
/// state back before retrying a non-idempotent write); `retryable: true`
/// means sending the same request again (to `leader_api`, when given) may
/// succeed. `leader` and `leader_api` appear when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    indeterminate: bool,
    retryable: bool,
    leader: Option<NodeId>,
    leader_api: Option<String>,
}

impl ApiError {
    /// An error answer with `status`; neither indeterminate nor retryable.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            indeterminate: false,
            retryable: false,
            leader: None,
            leader_api: None,
        }
    }

    /// 400: the request itself is wrong; fix it before sending it again.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: what the request names does not exist (an application's
    /// "no such key", say); neither indeterminate nor retryable.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Whether a write may have been applied despite the error.
    pub fn is_indeterminate(&self) -> bool {
        self.indeterminate
    }

    /// Whether the same request may succeed if sent again.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// Names the leader (and its API address, from the configuration's
    /// member metadata) so the client can go there.
    pub(crate) fn with_leader(mut self, leader: Option<NodeId>, membership: &Membership) -> Self {
        self.leader = leader.or(self.leader);
        self.leader_api = self
            .leader
            .and_then(|l| membership.api_address(l))
            .map(str::to_string);
        self
    }

    /// The same error with another status and message.
    pub(crate) fn with_status(mut self, status: StatusCode, message: String) -> Self {
        self.status = status;
        self.message = message;
        self
    }

    fn from_raft(error: &RaftError, status: StatusCode) -> Self {
        let mut e = Self::new(status, error.to_string());
        e.indeterminate = error.is_indeterminate();
        e.retryable = error.is_retryable();
        if let RaftError::NotLeader(hint) = error {
            e.leader = *hint;
        }
        e
    }

    /// A failed administrative request (membership, transfer, snapshot):
    /// refusals are 409 (with `retryable` saying whether waiting helps),
    /// "not the leader" is 421 naming the leader, a lost leader 503.
    pub fn admin(error: RaftError) -> Self {
        let status = match &error {
            RaftError::Membership(_) | RaftError::Transfer(_) => StatusCode::CONFLICT,
            RaftError::NotLeader(Some(_)) => StatusCode::MISDIRECTED_REQUEST,
            RaftError::Codec(_) | RaftError::Snapshot(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::from_raft(&error, status)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({
            "error": self.message,
            "indeterminate": self.indeterminate,
            "retryable": self.retryable,
        });
        if let Some(leader) = self.leader {
            body["leader"] = json!(leader);
        }
        if let Some(api) = &self.leader_api {
            body["leader_api"] = json!(api);
        }
        HttpResponse::build(self.status).json(body)
    }
}

/// A failed write, as HTTP. Converts into [`ApiError`], so `?` works in
/// handlers returning either. The body's `indeterminate` says whether the
/// write may have been applied; `retryable` whether the same request may
/// succeed later:
///
/// | status | `indeterminate` | meaning | what to do |
/// |---|---|---|---|
/// | 503 | false | no leader answered, nothing left the node | retry (any node) |
/// | 503 | true | the write may have been applied (a lost leader, a timeout, a node that stopped after forwarding it) | in a session: send it again with the same sequence; else read the state first |
/// | 410 | false | the session is unknown (expired or evicted): this request was not applied | open a new session; an earlier unanswered write of the old one may or may not have been applied: read the state |
/// | 409 | false | the sequence is at or below the client's own `Regatta-Received`: not applied | a client bug: never acknowledge a write still in flight |
/// | 429 | false | too many unacknowledged answers: not applied | send `Regatta-Received` with your writes |
/// | 500 | false | the command or the response does not encode | fix the request; a response that does not decode means the write **was** applied |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteError(ApiError);

impl From<RaftError> for WriteError {
    fn from(error: RaftError) -> Self {
        let status = match error {
            RaftError::Codec(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RaftError::Session(SessionError::Unknown(_)) => StatusCode::GONE,
            RaftError::Session(SessionError::Stale { .. }) => StatusCode::CONFLICT,
            RaftError::Session(SessionError::TooManyUnacknowledged { .. }) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        WriteError(ApiError::from_raft(&error, status))
    }
}

/// A failed read, as HTTP: 503 and `retryable` (a read changes nothing,
/// so a lost leader or a timeout is always safe to retry), 500 for a
/// codec error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError(ApiError);

impl From<RaftError> for ReadError {
    fn from(error: RaftError) -> Self {
        let status = match error {
            RaftError::Codec(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut e = ApiError::from_raft(&error, status);
        // A write's wording ("may have been applied") would mislead here.
        if matches!(error, RaftError::Timeout | RaftError::Indeterminate) {
            e.message = "the read could not be confirmed in time (no leader, or no quorum); a read changes nothing: retry".into();
        }
        e.indeterminate = false;
        e.retryable = status == StatusCode::SERVICE_UNAVAILABLE;
        ReadError(e)
    }
}

macro_rules! api_error_wrapper {
    ($name:ident) => {
        impl $name {
            pub(crate) fn with_leader(self, leader: Option<NodeId>, m: &Membership) -> Self {
                $name(self.0.with_leader(leader, m))
            }
        }
        impl From<$name> for ApiError {
            fn from(e: $name) -> ApiError {
                e.0
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
        impl ResponseError for $name {
            fn status_code(&self) -> StatusCode {
                self.0.status
            }
            fn error_response(&self) -> HttpResponse {
                self.0.error_response()
            }
        }
    };
}

api_error_wrapper!(WriteError);
api_error_wrapper!(ReadError);
