//! A headless Chromium driven through ChromeDriver's WebDriver HTTP API,
//! for page tests. Debian's `chromium` and `chromium-driver` packages
//! provide both (`.ci/run` installs them); without them the page tests
//! skip with a message.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::process::{free_port, http};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One browser session; closed (and the driver stopped) on drop.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium session, or says why
    /// it cannot (the browser is not installed) and returns `None`.
    pub fn start() -> Option<Browser> {
        for path in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(path).exists() {
                eprintln!(
                    "SKIPPED: {path} is missing; install Debian's chromium and chromium-driver \
                     (apt-get install chromium chromium-driver) to run the page tests"
                );
                return None;
            }
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let profile = tempfile::tempdir().expect("profile directory");
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(http(addr, "GET", "/status", None), Ok((200, ref v)) if v["value"]["ready"] == true)
        {
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The flags keep Chromium off the network it cannot reach here.
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1280,1000".into(),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let created = browser.command("POST", "/session", Some(capabilities));
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        Some(browser)
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        match http(self.addr, method, path, body.as_deref()) {
            Ok((200, v)) => v["value"].clone(),
            other => panic!("WebDriver {method} {path}: {other:?}"),
        }
    }

    fn session_path(&self, what: &str) -> String {
        format!("/session/{}/{what}", self.session)
    }

    /// Loads `url`.
    pub fn open(&self, url: &str) {
        self.command(
            "POST",
            &self.session_path("url"),
            Some(json!({ "url": url })),
        );
    }

    /// Runs `script` (a function body: `return …`) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.command(
            "POST",
            &self.session_path("execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Evaluates `script` until `accept` takes its value, panicking with
    /// the last value after `limit`.
    pub fn wait_for(
        &self,
        what: &str,
        script: &str,
        limit: Duration,
        accept: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.eval(script);
            if accept(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; the page shows {value}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG of the window.
    pub fn screenshot(&self, path: &Path) {
        let encoded = self.command("GET", &self.session_path("screenshot"), None);
        let png = decode_base64(encoded.as_str().expect("base64 text"));
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(
                self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (WebDriver's screenshots), padding ignored.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !matches!(c, b'=' | b'\n' | b'\r'))
        .map(value)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, d)| acc | (u32::from(*d) << (18 - 6 * i)));
        out.extend_from_slice(&bits.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(decode_base64("aGVsbG8="), b"hello");
    assert_eq!(decode_base64("aGk="), b"hi");
    assert_eq!(decode_base64("YWJj"), b"abc");
}
