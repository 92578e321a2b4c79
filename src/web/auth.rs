//! Who may use the admin endpoints: a bearer token guards every request
//! that changes the cluster (members, leadership transfer, snapshots);
//! status, health, metrics and the dashboard are open unless
//! [`Access::protect_reads`] says otherwise. Opening a client session
//! (`POST /cluster/session`) needs the token too: every open may evict the
//! least recently used session from the bounded table, so strangers must
//! not be able to push other clients' sessions out. Your own routes are
//! not affected.

use std::path::Path;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError};

use super::ApiError;

/// The credential the admin endpoints require; see [`super::configure_with`].
#[derive(Clone, Debug, Default)]
pub struct Access {
    token: Option<Arc<str>>,
    protect_reads: bool,
}

impl Access {
    /// No credential: anyone who reaches the HTTP port may change the
    /// cluster. For a single machine or a trusted network.
    pub fn open() -> Self {
        Access::default()
    }

    /// Requests that change the cluster must carry
    /// `Authorization: Bearer <token>`. The token must not be empty or
    /// contain whitespace.
    pub fn token(token: impl Into<String>) -> Result<Self, String> {
        let token = token.into();
        if token.is_empty() || token.chars().any(char::is_whitespace) {
            return Err("the admin token must be non-empty and contain no whitespace".into());
        }
        Ok(Access {
            token: Some(token.into()),
            protect_reads: false,
        })
    }

    /// [`Access::token`] with the token read from the first line of a
    /// file (so it stays out of command lines and shell history).
    pub fn token_file(path: impl AsRef<Path>) -> Result<Self, String> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the admin token file {}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim();
        Self::token(token).map_err(|e| format!("admin token file {}: {e}", path.display()))
    }

    /// Also require the token for the read-only endpoints (status, stats,
    /// members, health, view, `/metrics`, `/dashboard`).
    pub fn protect_reads(mut self, protect: bool) -> Self {
        self.protect_reads = protect;
        self
    }

    /// Whether a request with this method to a guarded endpoint needs the
    /// token.
    fn requires_token(&self, method: &Method) -> bool {
        if self.token.is_none() {
            return false;
        }
        let changes = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        changes || self.protect_reads
    }

    /// Whether a request to `path` needs the token: a backup is a read,
    /// but of the whole state, so it always does.
    fn guards(&self, method: &Method, path: &str) -> bool {
        self.requires_token(method) || self.token.is_some() && path.ends_with("/cluster/backup")
    }

    /// Checks an `Authorization` header value against the token.
    fn check(&self, authorization: Option<&[u8]>) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let Some(presented) = authorization.and_then(|v| v.strip_prefix(b"Bearer ")) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this endpoint requires `Authorization: Bearer <admin token>`",
            ));
        };
        if constant_time_eq(presented.trim_ascii(), token.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the admin token is wrong: use the token this node was configured with",
            ))
        }
    }
}

/// Compares without an early exit, so the time taken does not tell how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for (i, x) in b.iter().enumerate() {
        diff |= x ^ a.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// The middleware guarding the admin scope, `/metrics` and `/dashboard`.
pub(super) async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let access = req
        .app_data::<web::Data<Access>>()
        .map(|a| a.get_ref().clone());
    if let Some(access) = access.filter(|a| a.guards(req.method(), req.path())) {
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if let Err(refusal) = access.check(authorization) {
            // The credential itself is never logged.
            tracing::warn!(
                method = %req.method(),
                path = req.path(),
                peer = ?req.peer_addr(),
                status = refusal.status().as_u16(),
                "admin request refused"
            );
            let response = refusal.error_response().map_into_right_body();
            return Ok(req.into_response(response));
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_token_passes() {
        let access = Access::token("s3cret").unwrap();
        assert_eq!(access.check(Some(b"Bearer s3cret")), Ok(()));
        let missing = access.check(None).unwrap_err();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        let basic = access.check(Some(b"Basic czNjcmV0")).unwrap_err();
        assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
        for wrong in [&b"Bearer s3cre"[..], b"Bearer s3cret!", b"Bearer "] {
            assert_eq!(
                access.check(Some(wrong)).unwrap_err().status(),
                StatusCode::FORBIDDEN
            );
        }
        assert!(Access::open().check(None).is_ok());
    }

    #[test]
    fn changes_need_the_token_reads_only_when_protected() {
        let access = Access::token("t").unwrap();
        assert!(access.requires_token(&Method::POST));
        assert!(access.requires_token(&Method::DELETE));
        assert!(!access.requires_token(&Method::GET));
        let access = access.protect_reads(true);
        assert!(access.requires_token(&Method::GET));
        assert!(!Access::open()
            .protect_reads(true)
            .requires_token(&Method::POST));
    }

    #[test]
    fn empty_or_spaced_tokens_are_refused() {
        assert!(Access::token("").is_err());
        assert!(Access::token("a b").is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "tok\n").unwrap();
        assert!(Access::token_file(&file)
            .unwrap()
            .check(Some(b"Bearer tok"))
            .is_ok());
        std::fs::write(&file, "\n").unwrap();
        assert!(Access::token_file(&file).is_err());
        assert!(Access::token_file(dir.path().join("missing")).is_err());
    }
}
