//! End to end: the `leuko serve` page in headless Chromium, driven over
//! WebDriver (chromedriver; JSON over HTTP with a tiny std::net client).
//!
//! The server runs in-process on a free loopback port; the test uploads two
//! BCCD photos and one unreadable file through the page's file input and
//! checks that the page shows the same predicted types as the library, the
//! error of the bad file and the differential count. A screenshot goes to
//! `target/test-artifacts/serve.png`.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`; `.ci/run` installs them). Without them the test fails
//! and says so. `LEUKO_CHROMIUM` / `LEUKO_CHROMEDRIVER` override the paths.

use base64::Engine;
use leuko::predict::Classifier;
use leuko::serve::{AppState, ServeConfig};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;

fn find_program(env_var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One HTTP/1.1 exchange with `Connection: close`; returns (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<u8>) {
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(payload.as_bytes()).unwrap();
    // chromedriver keeps the connection open after its answer despite
    // `Connection: close`: read the header, then exactly the body's length.
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let mut header_end = None;
    let mut content_length = None;
    let mut chunked = false;
    loop {
        if let Some(h) = header_end {
            let body = &raw[h..];
            let complete = match content_length {
                Some(n) => body.len() >= n,
                None if chunked => body.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if complete {
                break;
            }
        }
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if header_end.is_none() {
            if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                header_end = Some(p + 4);
                let head = String::from_utf8_lossy(&raw[..p]).to_ascii_lowercase();
                for line in head.lines() {
                    if let Some((k, v)) = line.split_once(':') {
                        match k.trim() {
                            "content-length" => content_length = v.trim().parse().ok(),
                            "transfer-encoding" => chunked = v.contains("chunked"),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    let split =
        header_end.unwrap_or_else(|| panic!("{method} {path}: no HTTP header in the answer")) - 4;
    let headers = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 2 + size + 2).min(b.len())..];
    }
    out
}

/// A WebDriver session on a chromedriver child process; both end on drop.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: Option<String>,
}

impl Browser {
    fn start(chromium: &Path, chromedriver: &Path, profile: &Path) -> Browser {
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut b = Browser {
            driver,
            addr,
            session: None,
        };
        let t0 = Instant::now();
        loop {
            if TcpStream::connect(addr).is_ok() {
                let (status, body) = http(addr, "GET", "/status", None);
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if status == 200 && v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "chromedriver did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1500",
                         "--hide-scrollbars", "--force-device-scale-factor=1",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let v = b.call("POST", "/session", Some(&caps));
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        b.session = Some(id);
        b
    }

    /// A WebDriver command; returns `value`, fails on a WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, bytes) = http(self.addr, method, path, body);
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert_eq!(status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session.as_deref().unwrap())
    }

    fn script(&self, js: &str) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(&json!({"script": js, "args": []})),
        )
    }

    fn wait_for(&self, what: &str, js: &str, limit: Duration) -> Value {
        let t0 = Instant::now();
        loop {
            let v = self.script(js);
            if !v.is_null() && v != false {
                return v;
            }
            if t0.elapsed() > limit {
                let text = self.script("return document.body.innerText");
                panic!("the page did not show {what} within {limit:?}; it shows:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.session.is_some() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                http(self.addr, "DELETE", &self.s(""), None)
            }));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

#[test]
fn page_classifies_uploaded_photos_in_chromium() {
    let chromium = find_program(
        "LEUKO_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    )
    .unwrap_or_else(|| {
        panic!(
            "headless Chromium is needed for this test and was not found (looked for chromium, \
             chromium-browser, google-chrome on PATH; or set LEUKO_CHROMIUM). Install it with \
             `apt-get install -y chromium chromium-driver` (.ci/run does this)."
        )
    });
    let chromedriver = find_program("LEUKO_CHROMEDRIVER", &["chromedriver"]).unwrap_or_else(|| {
        panic!(
            "chromedriver is needed for this test and was not found on PATH (or set \
                 LEUKO_CHROMEDRIVER). Install it with `apt-get install -y chromium-driver` \
                 (.ci/run does this)."
        )
    });

    // The server, in-process, on a free loopback port.
    let classifier = std::sync::Arc::new(Classifier::embedded().expect("embedded model"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let server_addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::from_arc(classifier.clone(), ServeConfig::default());
    let server = rt.spawn(leuko::serve::serve_on(listener, state, async move {
        let _ = stop_rx.await;
    }));

    // What the page should show: the library's own predictions.
    let photos: Vec<PathBuf> = [0u32, 20].into_iter().map(common::photo).collect();
    let expected: Vec<Vec<String>> = photos
        .iter()
        .map(|p| {
            classifier
                .classify_file(p)
                .unwrap_or_else(|e| panic!("{e}"))
                .cells
                .iter()
                .map(|c| cap(c.class.lower()))
                .collect()
        })
        .collect();
    assert!(expected.iter().all(|cells| !cells.is_empty()));

    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("notes.jpg");
    std::fs::write(&bad, "not a photo").unwrap();
    let profile = tmp.path().join("chromium-profile");

    let browser = Browser::start(&chromium, &chromedriver, &profile);
    browser.call(
        "POST",
        &browser.s("/url"),
        Some(&json!({"url": format!("http://{server_addr}/")})),
    );
    browser.wait_for(
        "the model name",
        "return document.getElementById('model-info').innerText.includes('embedded') || null",
        Duration::from_secs(20),
    );
    let input = browser.call(
        "POST",
        &browser.s("/element"),
        Some(&json!({"using": "css selector", "value": "#file-input"})),
    );
    let element = input
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v.as_str())
        .expect("the file input")
        .to_string();
    let paths: Vec<String> = photos
        .iter()
        .chain(std::iter::once(&bad))
        .map(|p| p.canonicalize().unwrap().display().to_string())
        .collect();
    browser.call(
        "POST",
        &browser.s(&format!("/element/{element}/value")),
        Some(&json!({"text": paths.join("\n")})),
    );
    browser.wait_for(
        "all three results",
        "return document.body.dataset.state === 'done' || null",
        Duration::from_secs(90),
    );

    // Per photo: the predicted types, in the page's order (upload order).
    let shown = browser.script(
        "return Array.from(document.querySelectorAll('#results .photo-card')).map(card => ({
            title: card.querySelector('h3').textContent,
            classes: Array.from(card.querySelectorAll('.cell-class')).map(e => e.textContent),
            error: (card.querySelector('.error-msg') || {}).textContent || null,
            canvas: (card.querySelector('canvas') || {}).width || 0,
            crops: Array.from(card.querySelectorAll('.cell img')).filter(i => i.complete && i.naturalWidth > 0).length,
            bars: card.querySelectorAll('.probs .hbar').length,
        }))",
    );
    let cards = shown.as_array().expect("result cards");
    assert_eq!(cards.len(), 3, "{shown}");
    for (i, want) in expected.iter().enumerate() {
        let card = &cards[i];
        assert_eq!(
            card["title"],
            format!("BloodImage_{:05}.jpg", [0, 20][i]),
            "{card}"
        );
        let got: Vec<String> = card["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        assert_eq!(&got, want, "photo {i}: {card}");
        assert_eq!(card["canvas"], 640, "{card}");
        assert_eq!(card["crops"].as_u64(), Some(want.len() as u64), "{card}");
        assert!(card["bars"].as_u64().unwrap() >= 4 * want.len() as u64);
    }
    assert_eq!(cards[2]["title"], "notes.jpg");
    let err = cards[2]["error"].as_str().unwrap_or("");
    assert!(err.contains("not a readable image"), "{}", cards[2]);

    // The differential count: every cell once, clinical order.
    let diff = browser.script(
        "return Array.from(document.querySelectorAll('#differential tbody tr')).map(r =>
            [r.dataset.class, r.children[1].textContent])",
    );
    let rows = diff.as_array().unwrap();
    let order: Vec<&str> = rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(
        order,
        [
            "neutrophil",
            "lymphocyte",
            "monocyte",
            "eosinophil",
            "basophil"
        ]
    );
    for r in rows {
        let k = cap(r[0].as_str().unwrap());
        let n = expected.iter().flatten().filter(|c| **c == k).count();
        let shown = r[1].as_str().unwrap();
        if shown != "—" {
            assert_eq!(shown, n.to_string(), "{k}: {diff}");
        }
    }
    let status = browser.script("return document.getElementById('status').textContent");
    assert!(
        status.as_str().unwrap().contains("2 photos classified"),
        "{status}"
    );

    // Screenshot (test artifact).
    let png_b64 = browser.call("GET", &browser.s("/screenshot"), None);
    let png = base64::engine::general_purpose::STANDARD
        .decode(png_b64.as_str().unwrap())
        .unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("serve.png"), &png).unwrap();
    // `LEUKO_DOCS_SCREENSHOT=docs/serve.png` also writes a smaller copy for the README.
    if let Some(p) = std::env::var_os("LEUKO_DOCS_SCREENSHOT") {
        let img = image::load_from_memory(&png).unwrap();
        let small = img.resize(900, 2000, image::imageops::FilterType::Triangle);
        small.save(&p).unwrap();
    }

    drop(browser);
    stop_tx.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();
}
