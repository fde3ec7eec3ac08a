//! `leuko serve`: the JSON API and the page, driven through the router with
//! `tower::ServiceExt::oneshot` (no network client), plus one request over a
//! real loopback socket.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use base64::Engine;
use image::{ImageBuffer, Luma, Rgb, Rgba};
use leuko::predict::Classifier;
use leuko::serve::{router, AppState, ServeConfig};
use serde_json::Value;
use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

use crate::common;
use common::crc32;

const BOUNDARY: &str = "leukoTestBoundary7MA4YWxkTrZu0gW";

fn classifier() -> Arc<Classifier> {
    static C: OnceLock<Arc<Classifier>> = OnceLock::new();
    C.get_or_init(|| Arc::new(Classifier::embedded().expect("embedded model loads")))
        .clone()
}

fn app_with(config: ServeConfig) -> Router {
    router(AppState::from_arc(classifier(), config))
}

fn app() -> Router {
    app_with(ServeConfig {
        max_body_bytes: 20 * 1024 * 1024,
        max_concurrent: 2,
        ..ServeConfig::default()
    })
}

fn photo(id: u32) -> Vec<u8> {
    let p = common::photo(id);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (the BCCD data set)", p.display()))
}

/// A multipart/form-data body with one part per `(field, file name, bytes)`.
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, file, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{field}\"; filename=\"{f}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{field}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn files(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let v: Vec<(&str, Option<&str>, &[u8])> =
        parts.iter().map(|(n, b)| ("files", Some(*n), *b)).collect();
    multipart(&v)
}

fn post_multipart(body: Vec<u8>, with_length: bool) -> Request<Body> {
    let mut r = Request::post("/api/classify").header(
        header::CONTENT_TYPE,
        format!("multipart/form-data; boundary={BOUNDARY}"),
    );
    if with_length {
        r = r.header(header::CONTENT_LENGTH, body.len());
    }
    r.body(Body::from(body)).unwrap()
}

async fn send(app: Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.oneshot(req).await.expect("router never fails");
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    assert!(
        ctype.starts_with("application/json"),
        "status {status}: expected a JSON body, got {ctype:?}: {}",
        String::from_utf8_lossy(&bytes)
    );
    let v: Value = serde_json::from_slice(&bytes).expect("JSON body");
    (status, v)
}

async fn classify(parts: &[(&str, &[u8])]) -> (StatusCode, Value) {
    send(app(), post_multipart(files(parts), true)).await
}

fn assert_valid_cell(c: &Value) {
    // The wire format of `leuko predict --format json`: `class` and the probability keys spelled
    // as the model stores its classes, the box nested.
    let classes = [
        "NEUTROPHIL",
        "EOSINOPHIL",
        "LYMPHOCYTE",
        "MONOCYTE",
        "BASOPHIL",
    ];
    let class_name = c["class"].as_str().expect("class");
    assert!(classes.contains(&class_name), "{class_name}");
    let class = class_name;
    let probs = c["probabilities"].as_object().expect("probabilities");
    let sum: f64 = probs.values().map(|p| p.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-3, "probabilities sum to {sum}");
    let conf = c["confidence"].as_f64().unwrap();
    assert!((probs[class].as_f64().unwrap() - conf).abs() < 1e-6);
    assert!(probs.values().all(|p| p.as_f64().unwrap() <= conf + 1e-6));
    assert!(c["cell"].as_u64().is_some(), "cell: {c}");
    let b = &c["box"];
    for k in ["x_min", "y_min", "x_max", "y_max"] {
        assert!(b[k].as_u64().is_some(), "{k}: {c}");
    }
    assert!(b["x_min"].as_u64() < b["x_max"].as_u64());
    assert!(b["y_min"].as_u64() < b["y_max"].as_u64());
    assert!(c["review"].is_boolean());
    let reasons = c["review_reasons"].as_array().unwrap();
    assert_eq!(c["review"].as_bool().unwrap(), !reasons.is_empty());
    let png = base64::engine::general_purpose::STANDARD
        .decode(c["crop_png_base64"].as_str().expect("crop"))
        .expect("base64");
    let crop = image::load_from_memory(&png).expect("crop is a PNG");
    assert!(crop.width() >= 32 && crop.width() == crop.height());
}

#[tokio::test]
async fn health_names_model_and_classes() {
    let (status, v) = send(
        app(),
        Request::get("/api/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["model"], "embedded default model");
    let classes: Vec<&str> = v["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(classes.contains(&"NEUTROPHIL") && classes.contains(&"LYMPHOCYTE"));
}

#[tokio::test]
async fn page_and_its_assets_are_served() {
    for (path, ctype, needle) in [
        ("/", "text/html", "id=\"file-input\""),
        ("/app.js", "text/javascript", "/api/classify"),
        ("/app.css", "text/css", ".dropzone"),
    ] {
        let resp = app()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let ct = resp.headers()[header::CONTENT_TYPE].to_str().unwrap();
        assert!(ct.starts_with(ctype), "{path}: {ct}");
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains(needle), "{path}");
    }
    let (status, v) = send(
        app(),
        Request::get("/api/nothing").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["error"].is_string());
}

#[tokio::test]
async fn classifies_a_real_photo() {
    let (status, v) = classify(&[("BloodImage_00000.jpg", &photo(0))]).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let f = &v["files"][0];
    assert_eq!(f["file"], "BloodImage_00000.jpg");
    assert_eq!(f["ok"], true);
    assert!(f["error"].is_null());
    assert_eq!(
        (f["width"].as_u64(), f["height"].as_u64()),
        (Some(640), Some(480))
    );
    let cells = f["cells"].as_array().unwrap();
    assert!(!cells.is_empty(), "no cell found: {f}");
    for c in cells {
        assert_valid_cell(c);
    }
    // The same answer as the library gives.
    let direct = classifier()
        .classify_file(&common::photo(0))
        .expect("classify");
    assert_eq!(cells.len(), direct.cells.len());
    assert_eq!(cells[0]["class"], direct.cells[0].class.as_str());
    // The differential counts the cells, in clinical order.
    let d = &v["differential"];
    assert_eq!(d["cells"].as_u64(), Some(cells.len() as u64));
    let order: Vec<&str> = d["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["class"].as_str().unwrap())
        .collect();
    let clinical = [
        "NEUTROPHIL",
        "LYMPHOCYTE",
        "MONOCYTE",
        "EOSINOPHIL",
        "BASOPHIL",
    ];
    let expected: Vec<&str> = clinical
        .iter()
        .copied()
        .filter(|k| order.contains(k))
        .collect();
    assert_eq!(order, expected);
    let total: u64 = d["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, cells.len() as u64);
}

#[tokio::test]
async fn one_bad_file_does_not_spoil_the_batch() {
    let good = photo(1);
    let (status, v) = classify(&[
        ("notes.jpg", b"these are not pixels"),
        ("BloodImage_00001.jpg", &good),
    ])
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let f = v["files"].as_array().unwrap();
    assert_eq!(f.len(), 2);
    assert_eq!(f[0]["file"], "notes.jpg");
    assert_eq!(f[0]["ok"], false);
    assert!(f[0]["error"]
        .as_str()
        .unwrap()
        .contains("not a readable image"));
    assert!(f[0]["cells"].as_array().unwrap().is_empty());
    assert_eq!(f[1]["ok"], true);
    assert!(!f[1]["cells"].as_array().unwrap().is_empty());
    assert!(v.get("error").is_none());
}

#[tokio::test]
async fn only_bad_files_give_400_with_json() {
    let (status, v) = classify(&[("a.jpg", b""), ("b.png", b"\x89PNG\r\n\x1a\n")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("readable image"));
    let f = v["files"].as_array().unwrap();
    assert_eq!(f.len(), 2);
    assert!(f.iter().all(|x| x["ok"] == false && x["error"].is_string()));
    assert!(
        f[0]["error"].as_str().unwrap().contains("empty"),
        "{}",
        f[0]
    );
}

#[tokio::test]
async fn oversize_body_gives_413() {
    let small = || {
        app_with(ServeConfig {
            max_body_bytes: 4096,
            max_concurrent: 1,
            ..ServeConfig::default()
        })
    };
    let big = photo(2);
    assert!(big.len() > 4096);
    // Declared length over the limit: refused before reading.
    let (status, v) = send(small(), post_multipart(files(&[("x.jpg", &big)]), true)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("limit"));
    // No declared length (streamed): refused while reading.
    let (status, v) = send(small(), post_multipart(files(&[("x.jpg", &big)]), false)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    // The default limit is 20 MB: 21 MB is refused.
    let huge = vec![0u8; 21 * 1024 * 1024];
    let (status, _) = send(app(), post_multipart(files(&[("x.jpg", &huge)]), true)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn requests_that_are_not_uploads_give_400_with_json() {
    let cases = vec![
        Request::post("/api/classify")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"file":"x.jpg"}"#))
            .unwrap(),
        Request::post("/api/classify")
            .body(Body::from("hello"))
            .unwrap(),
        // Multipart with no file part.
        post_multipart(multipart(&[("comment", None, b"hello")]), true),
        // Multipart with no part at all.
        post_multipart(format!("--{BOUNDARY}--\r\n").into_bytes(), true),
        // Malformed multipart: no closing boundary, garbage.
        post_multipart(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n\r\nabc")
                .into_bytes(),
            true,
        ),
        post_multipart(b"complete garbage".to_vec(), true),
    ];
    for (i, req) in cases.into_iter().enumerate() {
        let (status, v) = send(app(), req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "case {i}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "case {i}: {v}"
        );
    }
}

fn png_bytes(img: impl Into<image::DynamicImage>) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.into()
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// A valid small PNG whose header (with a correct CRC) claims `w` x `h`.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut png = png_bytes(ImageBuffer::<Rgb<u8>, _>::from_pixel(
        8,
        8,
        Rgb([200, 100, 150]),
    ));
    // Signature (8) + length (4) + "IHDR" (4) + width (4) + height (4) ...
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

#[tokio::test]
async fn bad_input_corpus_never_gives_500() {
    let real = image::load_from_memory(&photo(3)).unwrap();
    let jpeg = photo(3);
    let gray: ImageBuffer<Luma<u8>, _> = real.to_luma8();
    let rgba: ImageBuffer<Rgba<u8>, _> = real.to_rgba8();
    let rgb16: ImageBuffer<Rgb<u16>, _> = real.to_rgb16();
    let corpus: Vec<(&str, Vec<u8>, bool)> = vec![
        ("zero-byte.jpg", Vec::new(), false),
        ("truncated.jpg", jpeg[..jpeg.len() / 2].to_vec(), false),
        (
            "text.jpg",
            b"Lorem ipsum dolor sit amet\n".repeat(50),
            false,
        ),
        ("huge-header.png", png_claiming(30_000, 30_000), false),
        ("wide-header.png", png_claiming(1_000_000, 1), false),
        ("gray.png", png_bytes(gray.clone()), true),
        ("rgba.png", png_bytes(rgba), true),
        ("rgb16.png", png_bytes(rgb16), true),
        (
            "one-pixel.png",
            png_bytes(ImageBuffer::<Rgb<u8>, _>::from_pixel(
                1,
                1,
                Rgb([255, 0, 0]),
            )),
            true,
        ),
        (
            "blank.png",
            png_bytes(ImageBuffer::<Rgb<u8>, _>::from_pixel(
                64,
                48,
                Rgb([255, 255, 255]),
            )),
            true,
        ),
        ("jpeg-magic-only.jpg", vec![0xFF, 0xD8, 0xFF, 0xD9], false),
        ("png-named.jpg", png_bytes(gray), true),
    ];
    for (name, bytes, readable) in &corpus {
        let (status, v) = classify(&[(name, bytes)]).await;
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{name}: {v}");
        let f = &v["files"][0];
        if *readable {
            assert_eq!(status, StatusCode::OK, "{name}: {v}");
            assert_eq!(f["ok"], true, "{name}: {v}");
            for c in f["cells"].as_array().unwrap() {
                assert_valid_cell(c);
            }
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {v}");
            assert_eq!(f["ok"], false, "{name}: {v}");
            let e = f["error"].as_str().unwrap();
            assert!(e.starts_with("not a readable image"), "{name}: {e}");
        }
    }
    // All of them in one batch: the readable ones are classified.
    let parts: Vec<(&str, &[u8])> = corpus.iter().map(|(n, b, _)| (*n, b.as_slice())).collect();
    let (status, v) = classify(&parts).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let f = v["files"].as_array().unwrap();
    assert_eq!(f.len(), corpus.len());
    for ((name, _, readable), entry) in corpus.iter().zip(f) {
        assert_eq!(entry["file"], *name);
        assert_eq!(entry["ok"], *readable, "{name}: {entry}");
    }
}

#[tokio::test]
async fn concurrent_requests_all_answer() {
    let app = app_with(ServeConfig {
        max_body_bytes: 20 * 1024 * 1024,
        max_concurrent: 1,
        ..ServeConfig::default()
    });
    let mut tasks = Vec::new();
    for id in 0..6u32 {
        let app = app.clone();
        let body = files(&[("p.jpg", &photo(id))]);
        tasks.push(tokio::spawn(async move {
            send(app, post_multipart(body, true)).await
        }));
    }
    for t in tasks {
        let (status, v) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["files"][0]["ok"], true);
    }
}

/// The real server on a loopback socket, spoken to with plain HTTP/1.1.
#[test]
fn serves_over_a_real_socket() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::from_arc(classifier(), ServeConfig::default());
    let server = rt.spawn(leuko::serve::serve_on(listener, state, async move {
        let _ = stop_rx.await;
    }));

    let exchange = |request: String, body: &[u8]| -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        s.write_all(request.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    let r = exchange(
        format!("GET /api/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
        b"",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("\"status\":\"ok\""), "{r}");

    let body = files(&[("BloodImage_00004.jpg", &photo(4))]);
    let r = exchange(
        format!(
            "POST /api/classify HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ),
        &body,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{}", &r[..r.len().min(400)]);
    assert!(r.contains("\"ok\":true"));

    stop_tx.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();
}

/// DNS-rebinding protection: a request addressed to another name gets 421, an upload from a
/// page of another site 403; the server's own names pass.
#[tokio::test]
async fn foreign_hosts_and_origins_are_refused() {
    let app = app_with(ServeConfig {
        allowed_hosts: ServeConfig::hosts_for("127.0.0.1:8080".parse().unwrap()),
        ..ServeConfig::default()
    });
    let get = |host: &str| {
        Request::get("/api/health")
            .header("host", host)
            .body(Body::empty())
            .unwrap()
    };
    for (host, status) in [
        ("127.0.0.1:8080", StatusCode::OK),
        ("localhost:8080", StatusCode::OK),
        ("LOCALHOST", StatusCode::OK),
        ("[::1]:8080", StatusCode::OK),
        ("attacker.example:8080", StatusCode::MISDIRECTED_REQUEST),
    ] {
        let resp = app.clone().oneshot(get(host)).await.unwrap();
        assert_eq!(resp.status(), status, "Host: {host}");
    }
    let post = |origin: &str| {
        Request::post("/api/classify")
            .header("host", "127.0.0.1:8080")
            .header("origin", origin)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(Body::from(multipart(&[(
                "files",
                Some("a.jpg"),
                &photo(0),
            )])))
            .unwrap()
    };
    let resp = app
        .clone()
        .oneshot(post("http://attacker.example"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = app
        .clone()
        .oneshot(post("http://localhost:8080"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// More files in one upload than the server accepts: 413, with what to do.
#[tokio::test]
async fn too_many_files_in_one_upload_get_413() {
    let app = app_with(ServeConfig {
        max_files: 2,
        ..ServeConfig::default()
    });
    let small = photo(0);
    let parts: Vec<(&str, Option<&str>, &[u8])> = ["a.jpg", "b.jpg", "c.jpg"]
        .iter()
        .map(|n| ("files", Some(*n), small.as_slice()))
        .collect();
    let req = Request::post("/api/classify")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(multipart(&parts)))
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

/// Slow clients are cut off: a connection that never finishes its headers, and one that stays
/// idle, are closed after the header timeout, while a normal client is answered at once; with
/// every connection slot taken, one more connection is closed at once instead of hanging.
#[test]
fn slow_and_idle_clients_are_cut_off_while_others_are_answered() {
    use std::time::{Duration, Instant};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let config = ServeConfig {
        header_timeout: Duration::from_millis(800),
        max_connections: 3,
        ..ServeConfig::default()
    };
    let state = AppState::from_arc(classifier(), config);
    let server = rt.spawn(leuko::serve::serve_on(listener, state, async move {
        let _ = stop_rx.await;
    }));
    let connect = || {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    // Closed by the server: reading ends (0 bytes or a reset), within the limit.
    let closed_within = |mut s: std::net::TcpStream, limit: Duration| {
        let start = Instant::now();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let took = start.elapsed();
        assert!(took < limit, "still open after {took:?}");
        String::from_utf8_lossy(&buf).into_owned()
    };
    let mut slow = connect();
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let idle = connect();
    // A normal client meanwhile.
    let start = Instant::now();
    let mut normal = connect();
    normal
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = closed_within(normal, Duration::from_secs(5));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // Three slots: the slow and idle ones and one more; a fourth connection is closed at once.
    let third = connect();
    std::thread::sleep(Duration::from_millis(100));
    let fourth = connect();
    closed_within(fourth, Duration::from_millis(500));
    let r = closed_within(slow, Duration::from_secs(3));
    assert!(!r.contains("200 OK"), "{r}");
    closed_within(idle, Duration::from_secs(3));
    closed_within(third, Duration::from_secs(3));
    stop_tx.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();
}
