//! A minimal HTTP/1.1 client: one keep-alive connection, the request with
//! a Content-Length, headers read up to `\r\n\r\n`, then exactly
//! Content-Length body bytes. The load clients send a request built once;
//! the answer says whether the server closes the connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// One HTTP exchange may take this long: more than the services' request
/// timeout (5 s), so their own 503 answers arrive first.
const HTTP_TIMEOUT: Duration = Duration::from_secs(20);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One answer.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    /// The server said `Connection: close`.
    pub(crate) close: bool,
}

/// One keep-alive connection.
pub(crate) struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
}

impl Conn {
    pub(crate) fn connect(addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let setup = |e: std::io::Error| format!("set up connection to {addr}: {e}");
        stream.set_nodelay(true).map_err(setup)?;
        stream.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(setup)?;
        stream
            .set_write_timeout(Some(HTTP_TIMEOUT))
            .map_err(setup)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Reads more bytes into `buf`; an error at end of stream.
    fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("connection closed by the server".into()),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Sends one complete request and reads its answer.
    pub(crate) fn exchange(&mut self, request: &[u8]) -> Result<Response, String> {
        self.stream
            .write_all(request)
            .map_err(|e| format!("write: {e}"))?;
        let mut scanned = 0;
        let head_end = loop {
            if let Some(i) = self.buf[scanned..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
            {
                break scanned + i;
            }
            scanned = self.buf.len().saturating_sub(3);
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| "response head is not UTF-8".to_string())?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = match status_line.split(' ').collect::<Vec<_>>()[..] {
            [version, code, ..] if version.starts_with("HTTP/1.") => code
                .parse()
                .map_err(|_| format!("bad status line {status_line:?}"))?,
            _ => return Err(format!("bad status line {status_line:?}")),
        };
        let mut length = None;
        let mut close = status_line.starts_with("HTTP/1.0");
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!("bad header line {line:?}"));
            };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| format!("bad Content-Length {value:?}"))?,
                );
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(format!("unsupported Transfer-Encoding {value:?}"));
            }
        }
        let length = length.ok_or_else(|| format!("no Content-Length in {head:?}"))?;
        let end = head_end + 4 + length;
        while self.buf.len() < end {
            self.fill()?;
        }
        let body = self.buf[head_end + 4..end].to_vec();
        self.buf.drain(..end);
        Ok(Response {
            status,
            body,
            close,
        })
    }
}

pub(crate) fn request(method: &str, addr: SocketAddr, path: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `GET /cluster/status`, when it answers 200 with JSON: through
/// regatta's own client (the load keeps the raw connections above, so
/// the load generator costs what it always did).
pub(crate) fn status(addr: SocketAddr) -> Option<Value> {
    actix_rt::System::new().block_on(async move {
        let endpoint = addr.to_string();
        let client = regatta::client::Client::new([&endpoint]).ok()?;
        client.get_from(&endpoint, "/cluster/status").await
    })
}

/// One write through regatta's client in an exactly-once session, to
/// prove the cluster commits before anything is timed.
pub(crate) fn first_write(addr: SocketAddr, path: &str, body: &str) -> Result<(), String> {
    let body: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    actix_rt::System::new().block_on(async move {
        let client = regatta::client::Client::new([addr.to_string()]).map_err(|e| e.to_string())?;
        let session = client.session().await.map_err(|e| e.to_string())?;
        session
            .post::<Value, _>(path, &body)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

pub(crate) fn body_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text.to_string()
    }
}
