//! A client for any service that mounts regatta's web scope (feature
//! `client`, on actix's `awc`; use it inside an actix system): a list of
//! endpoints tried in turn, `leader_api` hints followed, reads retried
//! until they answer, writes retried only while nothing can have been
//! applied, and exactly-once sessions ([`ClientSession`]) that resend an
//! unknown outcome with its sequence number until it is definite.
//!
//! ```no_run
//! use regatta::client::Client;
//!
//! #[actix_rt::main]
//! async fn main() -> Result<(), regatta::client::ClientError> {
//!     let client = Client::new(["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"])?;
//!     let session = client.session().await?;
//!     // Applied once, however many times it had to be sent.
//!     let value: serde_json::Value = session.post("/counter/incr", &serde_json::json!({"by": 2})).await?;
//!     let read: serde_json::Value = client.get("/counter").await?;
//!     println!("{value} {read}");
//!     Ok(())
//! }
//! ```

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use awc::http::StatusCode;

/// The HTTP method of [`Client::send`] and [`ClientSession::send`]
/// (actix's, re-exported).
pub use awc::http::Method;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

mod session;
use session::Answered;
pub use session::ClientSession;

/// The largest answer body read.
const MAX_ANSWER_BYTES: usize = 64 << 20;
/// Pause before trying again once every endpoint has been tried.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

/// Why a request failed, and whether it may have been applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The service refused the request (4xx, or 500); it was not applied,
    /// except for a 500 that says a response did not decode. Fix the
    /// request before sending it again.
    #[error("refused with {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The service's `error` text.
        message: String,
    },
    /// The request may or may not have been applied: a write without a
    /// session whose answer was lost, or a session write still unknown at
    /// the deadline. Read the state before deciding to send it again (or
    /// write in a session, which resends it safely).
    #[error("outcome unknown (the write may have been applied): {0}")]
    Indeterminate(String),
    /// No endpoint gave an answer before the deadline, and nothing can
    /// have been applied: retry later, or check that the service runs.
    #[error("no endpoint answered, nothing was applied: {0}")]
    Unavailable(String),
    /// The session expired or was evicted (410): this request was not
    /// applied; an earlier write of the session that never got its answer
    /// may or may not have been. Open a new session.
    #[error(
        "session {0} is gone (expired or evicted): open a new one; this write was not applied"
    )]
    SessionGone(u64),
    /// The request succeeded (a write was applied) but its answer is not
    /// the JSON the caller expected.
    #[error("the request succeeded, but its answer does not parse: {0}")]
    Answer(String),
    /// The client was given no endpoint, or one that is not HOST:PORT or
    /// an http:// URL.
    #[error("bad endpoint: {0}")]
    Endpoint(String),
}

impl ClientError {
    /// Whether the request may have been applied.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, ClientError::Indeterminate(_) | ClientError::Answer(_))
    }
}

/// What one exchange with one endpoint gave.
enum Exchange {
    /// A 2xx answer.
    Done(Bytes),
    /// Nothing reached the service (no connection), or it answered that
    /// nothing was applied and the same request may succeed elsewhere or
    /// later (503 not indeterminate, 421): try again, at `leader` if named.
    NotApplied { why: String, leader: Option<String> },
    /// The request may have been applied: a lost answer, a 503 that says
    /// indeterminate.
    Maybe(String),
    /// A definite refusal.
    Failed(ClientError),
}

struct Shared {
    /// Base URLs (`http://host:port`), the given ones first, then the
    /// leaders the service named.
    endpoints: RefCell<Vec<String>>,
    /// Where the next request goes first.
    preferred: Cell<usize>,
    http: awc::Client,
    admin_token: Option<String>,
    timeout: Duration,
}

/// A client of a regatta service: cheap to clone, for one thread (it is
/// built on `awc`, like actix-web itself).
#[derive(Clone)]
pub struct Client(Rc<Shared>);

fn base_url(endpoint: &str) -> Result<String, ClientError> {
    let trimmed = endpoint.trim().trim_end_matches('/');
    let url = if trimmed.starts_with("http://") {
        trimmed.to_string()
    } else if trimmed.contains("://") {
        return Err(ClientError::Endpoint(format!(
            "{endpoint:?}: only plain http:// is supported"
        )));
    } else {
        format!("http://{trimmed}")
    };
    let host = &url["http://".len()..];
    if host.is_empty() || !host.contains(':') || host.contains('/') {
        return Err(ClientError::Endpoint(format!(
            "{endpoint:?} is not HOST:PORT"
        )));
    }
    Ok(url)
}

impl Client {
    /// A client of the service at `endpoints` (HOST:PORT or http:// URLs
    /// of its members' HTTP APIs; one is enough, the others are learned
    /// from `leader_api` hints). Calls give up after 10 s by default.
    pub fn new<I>(endpoints: I) -> Result<Client, ClientError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::build(endpoints, None, Duration::from_secs(10))
    }

    /// The same client, sending `Authorization: Bearer <token>` with the
    /// admin calls ([`Client::admin`]).
    pub fn admin_token(self, token: impl Into<String>) -> Client {
        let endpoints = self.0.endpoints.borrow().clone();
        Self::build(endpoints, Some(token.into()), self.0.timeout).expect("endpoints checked")
    }

    /// The same client, giving up on a call after `timeout` (retries
    /// included).
    pub fn timeout(self, timeout: Duration) -> Client {
        let endpoints = self.0.endpoints.borrow().clone();
        Self::build(endpoints, self.0.admin_token.clone(), timeout).expect("endpoints checked")
    }

    fn build<I>(
        endpoints: I,
        admin_token: Option<String>,
        timeout: Duration,
    ) -> Result<Client, ClientError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| base_url(e.as_ref()))
            .collect::<Result<_, _>>()?;
        if endpoints.is_empty() {
            return Err(ClientError::Endpoint("no endpoint given".into()));
        }
        let http = awc::Client::builder().timeout(timeout).finish();
        Ok(Client(Rc::new(Shared {
            endpoints: RefCell::new(endpoints),
            preferred: Cell::new(0),
            http,
            admin_token,
            timeout,
        })))
    }

    /// `GET path`, retried on every failure (a read changes nothing)
    /// until an endpoint answers or the timeout passes.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let deadline = Instant::now() + self.0.timeout;
        let body = self
            .until_definite(deadline, true, || {
                (Method::GET, path.to_string(), None, Vec::new())
            })
            .await?;
        parse(&body)
    }

    /// `POST path` with a JSON body, outside any session: retried only
    /// while nothing can have been applied; an unknown outcome is
    /// [`ClientError::Indeterminate`]. Prefer [`ClientSession::post`].
    pub async fn post<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(Method::POST, path, Some(json(body)?)).await
    }

    /// Any method, outside any session, like [`Client::post`].
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + self.0.timeout;
        let body = self
            .until_definite(deadline, false, || {
                (method.clone(), path.to_string(), body.clone(), Vec::new())
            })
            .await?;
        parse(&body)
    }

    /// An admin call (`/cluster/...`) with the admin token, sent to the
    /// leader (followed from any member's `421`), like [`Client::send`].
    pub async fn admin<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + self.0.timeout;
        let token = self.0.admin_token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&'static str, String)> =
            token.into_iter().map(|t| ("Authorization", t)).collect();
        let body = self
            .until_definite(deadline, false, || {
                (
                    method.clone(),
                    path.to_string(),
                    body.clone(),
                    headers.clone(),
                )
            })
            .await?;
        parse(&body)
    }

    /// `GET path` of the first endpoint, streamed into `out` as it
    /// arrives (a backup: `/cluster/backup`), with the admin token; no
    /// retries. Returns the bytes written; a body shorter than its
    /// `Content-Length` is an error.
    pub async fn download(
        &self,
        path: &str,
        out: &mut impl std::io::Write,
    ) -> Result<u64, ClientError> {
        use futures_util::StreamExt;
        let base = self.0.endpoints.borrow()[0].clone();
        let mut request = self.0.http.get(format!("{base}{path}"));
        if let Some(token) = &self.0.admin_token {
            request = request.insert_header(("Authorization", format!("Bearer {token}")));
        }
        let mut answer = request
            .send()
            .await
            .map_err(|e| ClientError::Unavailable(format!("{base}: {e}")))?;
        if !answer.status().is_success() {
            let status = answer.status();
            let body = answer
                .body()
                .limit(MAX_ANSWER_BYTES)
                .await
                .unwrap_or_default();
            return Err(match classify(&base, status, body) {
                Exchange::Failed(e) => e,
                Exchange::NotApplied { why, .. } | Exchange::Maybe(why) => {
                    ClientError::Unavailable(why)
                }
                Exchange::Done(_) => ClientError::Unavailable(format!("{base}: {status}")),
            });
        }
        let expected: Option<u64> = answer
            .headers()
            .get("Content-Length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut written = 0u64;
        while let Some(chunk) = answer.next().await {
            let chunk = chunk.map_err(|e| {
                ClientError::Unavailable(format!(
                    "{base}: the stream broke after {written} bytes: {e}"
                ))
            })?;
            out.write_all(&chunk)
                .map_err(|e| ClientError::Answer(format!("cannot write what arrived: {e}")))?;
            written += chunk.len() as u64;
        }
        if expected.is_some_and(|n| n != written) {
            return Err(ClientError::Unavailable(format!(
                "{base}: the stream ended after {written} of {} bytes",
                expected.unwrap_or(0)
            )));
        }
        Ok(written)
    }

    /// `GET path` of one member, once, without retries or hints: for
    /// tools that ask each member in turn (`status`). `None` if it does
    /// not answer 200.
    pub async fn get_from(&self, endpoint: &str, path: &str) -> Option<Value> {
        let url = base_url(endpoint).ok()?;
        match self.exchange(&url, Method::GET, path, None, &[]).await {
            Exchange::Done(body) => serde_json::from_slice(&body).ok(),
            _ => None,
        }
    }

    /// Opens an exactly-once session (`POST /cluster/session`).
    pub async fn session(&self) -> Result<ClientSession, ClientError> {
        // An extra session opened by a resend is harmless: retry freely.
        let deadline = Instant::now() + self.0.timeout;
        let body = self
            .until_definite(deadline, true, || {
                (
                    Method::POST,
                    "/cluster/session".to_string(),
                    None,
                    Vec::new(),
                )
            })
            .await?;
        let answer: Value = parse(&body)?;
        let id = answer["session"]
            .as_u64()
            .ok_or_else(|| ClientError::Answer(format!("no session id in {answer}")))?;
        Ok(ClientSession {
            client: self.clone(),
            id,
            next: Cell::new(1),
            answered: RefCell::new(Answered::default()),
        })
    }

    /// Sends until an answer settles it or `deadline` passes. With
    /// `resend`, an unknown outcome is sent again (reads, session
    /// writes); without, it ends the call as indeterminate.
    async fn until_definite(
        &self,
        deadline: Instant,
        resend: bool,
        make: impl Fn() -> (Method, String, Option<Bytes>, Vec<(&'static str, String)>),
    ) -> Result<Bytes, ClientError> {
        let mut maybe_applied: Option<String> = None;
        let mut tried_this_round = 0;
        loop {
            let url = self.preferred_url();
            let (method, path, body, headers) = make();
            let why = match self.exchange(&url, method, &path, body, &headers).await {
                Exchange::Done(body) => return Ok(body),
                Exchange::Failed(e) => return Err(e),
                Exchange::Maybe(why) if !resend => return Err(ClientError::Indeterminate(why)),
                Exchange::Maybe(why) => {
                    maybe_applied = Some(why.clone());
                    self.rotate();
                    why
                }
                Exchange::NotApplied { why, leader } => {
                    match leader {
                        Some(leader) => self.prefer(&leader),
                        None => self.rotate(),
                    }
                    why
                }
            };
            tried_this_round += 1;
            if tried_this_round >= self.0.endpoints.borrow().len() {
                tried_this_round = 0;
                tokio::time::sleep_until((Instant::now() + ROUND_PAUSE).min(deadline)).await;
            }
            if Instant::now() >= deadline {
                return Err(match maybe_applied {
                    Some(why) => ClientError::Indeterminate(why),
                    None => ClientError::Unavailable(why),
                });
            }
        }
    }

    fn preferred_url(&self) -> String {
        let endpoints = self.0.endpoints.borrow();
        endpoints[self.0.preferred.get() % endpoints.len()].clone()
    }

    fn rotate(&self) {
        self.0.preferred.set(self.0.preferred.get().wrapping_add(1));
    }

    /// Sends the next request to `leader` (an address the service named).
    fn prefer(&self, leader: &str) {
        let Ok(url) = base_url(leader) else {
            return self.rotate();
        };
        let mut endpoints = self.0.endpoints.borrow_mut();
        let at = match endpoints.iter().position(|e| *e == url) {
            Some(at) => at,
            None => {
                endpoints.push(url);
                endpoints.len() - 1
            }
        };
        self.0.preferred.set(at);
    }

    async fn exchange(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&'static str, String)],
    ) -> Exchange {
        let mut request = self.0.http.request(method, format!("{base}{path}"));
        for (name, value) in headers {
            request = request.insert_header((*name, value.as_str()));
        }
        let sent = match body {
            Some(body) => request
                .insert_header(("Content-Type", "application/json"))
                .send_body(body),
            None => request.send(),
        };
        let mut answer = match sent.await {
            Ok(answer) => answer,
            Err(awc::error::SendRequestError::Connect(e)) => {
                return Exchange::NotApplied {
                    why: format!("{base}: {e}"),
                    leader: None,
                }
            }
            Err(e) => return Exchange::Maybe(format!("{base}: {e}")),
        };
        let status = answer.status();
        let body = match answer.body().limit(MAX_ANSWER_BYTES).await {
            Ok(body) => body,
            Err(e) => return Exchange::Maybe(format!("{base}: reading the answer: {e}")),
        };
        classify(base, status, body)
    }
}

/// What an answer means for the request.
fn classify(base: &str, status: StatusCode, body: Bytes) -> Exchange {
    if status.is_success() {
        return Exchange::Done(body);
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let message = v["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    let why = format!("{base}: {status}: {message}");
    let leader = v["leader_api"].as_str().map(str::to_string);
    match status.as_u16() {
        503 if v["indeterminate"] == Value::Bool(true) => Exchange::Maybe(why),
        503 | 421 => Exchange::NotApplied { why, leader },
        410 => Exchange::Failed(ClientError::SessionGone(0)),
        code => Exchange::Failed(ClientError::Refused {
            status: code,
            message,
        }),
    }
}

fn json<B: Serialize>(body: &B) -> Result<Bytes, ClientError> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| ClientError::Refused {
            status: 0,
            message: format!("the body does not encode as JSON: {e}"),
        })
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ClientError> {
    let body = if body.is_empty() {
        b"null" as &[u8]
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ClientError::Answer(format!("{e}: {}", String::from_utf8_lossy(body))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_host_port_or_http_urls() {
        assert_eq!(base_url("127.0.0.1:8001").unwrap(), "http://127.0.0.1:8001");
        assert_eq!(base_url("http://a:1/").unwrap(), "http://a:1");
        assert!(base_url("https://a:1").is_err());
        assert!(base_url("nowhere").is_err());
        assert!(base_url("").is_err());
    }

    #[test]
    fn answers_say_whether_the_request_may_have_applied() {
        let answer = |status: u16, body: &str| {
            classify(
                "b",
                StatusCode::from_u16(status).unwrap(),
                Bytes::from(body.to_string()),
            )
        };
        assert!(matches!(answer(200, "{}"), Exchange::Done(_)));
        assert!(matches!(
            answer(503, r#"{"error":"x","indeterminate":true}"#),
            Exchange::Maybe(_)
        ));
        let Exchange::NotApplied { leader, .. } =
            answer(421, r#"{"error":"x","leader_api":"127.0.0.1:8002"}"#)
        else {
            panic!("421 is not applied")
        };
        assert_eq!(leader.as_deref(), Some("127.0.0.1:8002"));
        assert!(matches!(
            answer(503, r#"{"error":"no leader"}"#),
            Exchange::NotApplied { .. }
        ));
        assert!(matches!(
            answer(410, "{}"),
            Exchange::Failed(ClientError::SessionGone(_))
        ));
        assert!(matches!(
            answer(409, r#"{"error":"stale"}"#),
            Exchange::Failed(ClientError::Refused { status: 409, .. })
        ));
    }
}
