//! A minimal blocking HTTP/1.1 client with JSON bodies, for the process
//! tests: keep-alive connections, `Content-Length` bodies, nothing else.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// How long one HTTP exchange may take. Longer than the services' request
/// timeout (5 s) so their own 503 answers arrive, and longer than any
/// SIGSTOP pause in the tests.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Why an HTTP exchange failed.
#[derive(Debug)]
pub enum HttpError {
    /// Could not connect: nothing was sent.
    Connect(std::io::Error),
    /// Failed after connecting: the request may have been received.
    AfterConnect(String),
}

/// A keep-alive HTTP/1.1 connection.
pub struct HttpConnection {
    stream: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl HttpConnection {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Result<Self, HttpError> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(HttpError::Connect)?;
        let after = |e: std::io::Error| HttpError::AfterConnect(e.to_string());
        stream.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(after)?;
        stream
            .set_write_timeout(Some(HTTP_TIMEOUT))
            .map_err(after)?;
        stream.set_nodelay(true).map_err(after)?;
        Ok(HttpConnection {
            stream: BufReader::new(stream),
            addr,
        })
    }

    /// One exchange; returns the status and the JSON body. After an error
    /// the connection is unusable.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, Value), HttpError> {
        self.request_with(method, path, body, &[])
    }

    /// [`HttpConnection::request`] with extra headers.
    pub fn request_with(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, String)],
    ) -> Result<(u16, Value), HttpError> {
        let (status, body) = self.exchange(method, path, body, headers)?;
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                HttpError::AfterConnect(format!(
                    "bad JSON {:?}: {e}",
                    String::from_utf8_lossy(&body)
                ))
            })?
        };
        Ok((status, json))
    }

    /// One exchange; returns the status and the raw body.
    pub fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, String)],
    ) -> Result<(u16, Vec<u8>), HttpError> {
        let after = |e: std::io::Error| HttpError::AfterConnect(e.to_string());
        let body = body.unwrap_or("");
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{extra}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .map_err(after)?;
        let mut line = String::new();
        self.stream.read_line(&mut line).map_err(after)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| HttpError::AfterConnect(format!("bad status line {line:?}")))?;
        let mut length = 0;
        loop {
            line.clear();
            self.stream.read_line(&mut line).map_err(after)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().map_err(|_| {
                        HttpError::AfterConnect(format!("bad content-length {value:?}"))
                    })?;
                }
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).map_err(after)?;
        Ok((status, body))
    }
}

/// One HTTP/1.1 exchange on a fresh connection.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, Value), HttpError> {
    HttpConnection::connect(addr)?.request(method, path, body)
}
