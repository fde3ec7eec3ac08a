//! `leuko serve`: a local web app and JSON API over [`Classifier`].
//!
//! Routes:
//!
//! | route | what |
//! |---|---|
//! | `GET /` (and `/app.css`, `/app.js`) | the page: drop photos, see boxes, crops, probabilities, review flags and the differential count |
//! | `GET /api/health` | `{"status":"ok","model":..,"classes":[..],..}` |
//! | `POST /api/classify` | multipart, one or more files (any field with a file name, or a field named `files`/`file`) |
//!
//! Status codes of `POST /api/classify`: 200 when at least one file was read
//! (unreadable files of the batch are reported in their own entries,
//! `ok:false`); 400 with `{"error":..}` when the request is not multipart, is
//! malformed, holds no file, or none of its files is a readable image (the
//! body then also lists every file's entry); 413 when the body is larger than
//! the limit; 500 only when classifying a readable photo failed inside leuko.
//!
//! Classification is CPU-bound: it runs in `spawn_blocking`, at most
//! [`ServeConfig::max_concurrent`] photos at a time (a semaphore), so a burst of
//! requests queues instead of exhausting memory.

use crate::error::LeukoError;
use crate::predict::{Classifier, PhotoPrediction};
use crate::wire::{differential, Differential, PhotoRecord};
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

static INDEX_HTML: &str = include_str!("../assets/web/index.html");
static APP_CSS: &str = include_str!("../assets/web/app.css");
static APP_JS: &str = include_str!("../assets/web/app.js");

/// Default request body limit (`--max-body-mb 20`).
pub const DEFAULT_MAX_BODY_BYTES: usize = 20 * 1024 * 1024;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Requests with a larger body get 413.
    pub max_body_bytes: usize,
    /// Photos classified at the same time (across all requests).
    pub max_concurrent: usize,
    /// Host names (lower case, no port) requests must be addressed to, and that the `Origin`
    /// of a POST must name: a page of another site cannot reach the server through a name it
    /// rebinds to this address (DNS rebinding). Empty: any.
    pub allowed_hosts: Vec<String>,
    /// Files accepted in one upload; more get 413.
    pub max_files: usize,
    /// Time allowed for reading an upload's body; a slower one gets 408.
    pub body_timeout: std::time::Duration,
    /// Time allowed for a request's headers, counted also while a kept-alive connection waits
    /// for its next request: a slow or idle client is disconnected after it.
    pub header_timeout: std::time::Duration,
    /// Connections served at once; one more is closed at once (a client retries), so that idle
    /// or slow clients cannot use up the process's file descriptors.
    pub max_connections: usize,
}

/// Time allowed for a request's headers (and between requests on one connection).
pub const DEFAULT_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Files accepted in one `POST /api/classify`.
pub const DEFAULT_MAX_FILES: usize = 64;
/// Time allowed for an upload's body.
pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_concurrent: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            allowed_hosts: Vec::new(),
            max_files: DEFAULT_MAX_FILES,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl ServeConfig {
    /// The host names a server listening on `addr` answers to: its address, and for a loopback
    /// address `localhost` too; any name for an unspecified address (`0.0.0.0`), whose public
    /// names cannot be known (add them with `--allow-host`).
    pub fn hosts_for(addr: SocketAddr) -> Vec<String> {
        let ip = addr.ip();
        if ip.is_unspecified() {
            return Vec::new();
        }
        let mut hosts = vec![ip.to_string()];
        if ip.is_loopback() {
            hosts.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
        }
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

/// The host of a `Host` header value or an `Origin` URL, lower case, without port or brackets.
fn host_name(value: &str) -> String {
    let v = value.trim();
    let v = v.split_once("://").map_or(v, |(_, rest)| rest);
    let v = v.split('/').next().unwrap_or("");
    let host = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        v.rsplit_once(':').map_or(v, |(h, _)| h)
    };
    host.to_ascii_lowercase()
}

async fn check_host(State(config): State<Arc<ServeConfig>>, req: Request, next: Next) -> Response {
    let allowed = &config.allowed_hosts;
    if allowed.is_empty() {
        return next.run(req).await;
    }
    let ok = |v: &str| allowed.iter().any(|h| *h == host_name(v));
    if let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
    {
        if !ok(host) {
            return error_response(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this server answers to {} only, not to '{host}' (leuko serve --allow-host \
                     NAME adds a name)",
                    allowed.join(", ")
                ),
            );
        }
    }
    if req.method() == axum::http::Method::POST {
        if let Some(origin) = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
        {
            if !ok(origin) {
                return error_response(
                    StatusCode::FORBIDDEN,
                    format!("uploads from pages of '{origin}' are refused"),
                );
            }
        }
    }
    next.run(req).await
}

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    classifier: Arc<Classifier>,
    permits: Arc<Semaphore>,
    config: Arc<ServeConfig>,
}

impl AppState {
    pub fn new(classifier: Classifier, config: ServeConfig) -> AppState {
        AppState::from_arc(Arc::new(classifier), config)
    }

    pub fn from_arc(classifier: Arc<Classifier>, config: ServeConfig) -> AppState {
        let n = config.max_concurrent.max(1);
        AppState {
            classifier,
            permits: Arc::new(Semaphore::new(n)),
            config: Arc::new(config),
        }
    }

    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    pub fn config(&self) -> &ServeConfig {
        &self.config
    }
}

/// The app's routes.
pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/app.css", get(app_css))
        .route("/app.js", get(app_js))
        .route("/api/health", get(health))
        .route("/api/classify", post(classify))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // The multipart extractor stops reading at the limit (413); the
        // middleware answers 413 at once when Content-Length says so.
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            limit,
            reject_large_content_length,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.config.clone(),
            check_host,
        ))
        .with_state(state)
}

/// Binds `addr`, prints the URL and serves until Ctrl-C.
pub async fn serve(addr: SocketAddr, state: AppState) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    println!(
        "leuko serve: http://{local}/  (model: {}; Ctrl-C to stop)",
        state.classifier.origin()
    );
    if !local.ip().is_loopback() {
        eprintln!(
            "warning: listening on {} — reachable from other machines; leuko serve has no \
             authentication",
            local.ip()
        );
    }
    serve_on(listener, state, shutdown_signal()).await
}

/// Serves on an already bound listener until `shutdown` completes (tests bind
/// 127.0.0.1:0 and pass a never-ending or oneshot future).
pub async fn serve_on<F>(listener: TcpListener, state: AppState, shutdown: F) -> std::io::Result<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let header_timeout = state.config.header_timeout;
    let connections = Arc::new(Semaphore::new(state.config.max_connections.max(1)));
    let app = router(state);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut open = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: wait a moment instead of spinning.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        open.spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(io, service)
                .await;
        });
        // Forget the connections that have ended.
        while open.try_join_next().is_some() {}
    }
    // Requests in flight finish (within the timeouts); then the server stops.
    let drain = async { while open.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), drain).await;
    Ok(())
}

async fn shutdown_signal() {
    // If the handler cannot be installed, serve until killed.
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A JSON error body `{"error": message}`.
fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn reject_large_content_length(
    State(limit): State<usize>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(n) = declared {
        if n > limit as u64 {
            return too_large(limit);
        }
    }
    next.run(req).await
}

fn too_large(limit: usize) -> Response {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "request body larger than the limit of {} (leuko serve --max-body-mb)",
            format_bytes(limit)
        ),
    )
}

fn format_bytes(n: usize) -> String {
    if n >= 1024 * 1024 && n % (1024 * 1024) == 0 {
        format!("{} MB", n / (1024 * 1024))
    } else {
        format!("{n} bytes")
    }
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn app_css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS)
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let hint = if uri.path() == "/api/classify" {
        ": send the photos with POST as multipart/form-data (field 'files')"
    } else {
        ""
    };
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}{hint}", uri.path()),
    )
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "no such page or API route")
}

/// `GET /api/health`.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    /// "embedded default model" or the `--model` path.
    pub model: String,
    pub experiment: String,
    /// The model's classes, in probability order, as the data set spells them.
    pub classes: Vec<&'static str>,
    /// The colour of each type (every type, not only the model's), as the report draws it.
    pub colours: std::collections::BTreeMap<&'static str, &'static str>,
    pub review_threshold: f32,
    /// Whether the model records what its training photos look like (else no photo is
    /// flagged `unfamiliar_photo`).
    pub knows_its_photos: bool,
    /// Share of unfamiliar photos above which the page warns, and what the warning advises
    /// ([`crate::familiar::batch_warning`]).
    pub unfamiliar_warning_share: f64,
    pub unfamiliar_advice: &'static str,
    pub max_body_bytes: usize,
    pub max_concurrent: usize,
}

async fn health(State(state): State<AppState>) -> Json<Health> {
    let c = &state.classifier;
    Json(Health {
        status: "ok",
        model: c.origin().to_string(),
        experiment: c.meta().experiment.clone(),
        classes: c.classes().iter().map(|k| k.as_str()).collect(),
        colours: crate::data::ClassLabel::ALL
            .iter()
            .chain(c.classes())
            .map(|k| (k.as_str(), k.colour()))
            .collect(),
        review_threshold: c.rules().min_confidence,
        knows_its_photos: c.meta().familiarity.is_some(),
        unfamiliar_warning_share: crate::familiar::BATCH_WARNING_SHARE,
        unfamiliar_advice: crate::familiar::UNFAMILIAR_ADVICE,
        max_body_bytes: state.config.max_body_bytes,
        max_concurrent: state.config.max_concurrent,
    })
}

/// The answer of `POST /api/classify`.
#[derive(Debug, Serialize)]
pub struct ClassifyResponse {
    /// Present (and the status 400 or 500) only when no file could be classified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub model: String,
    /// One entry per uploaded file, in upload order.
    pub files: Vec<PhotoRecord>,
    pub differential: Differential,
}

/// How a file failed: the sender's fault (unreadable image) or leuko's.
enum Failure {
    BadInput(String),
    Internal(String),
}

async fn classify(
    State(state): State<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let mut multipart = match multipart {
        Ok(m) => m,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected a multipart/form-data upload with one or more image files \
                     (field 'files'): {}",
                    e.body_text()
                ),
            )
        }
    };
    let config = &state.config;
    let read = read_files(&mut multipart, config.max_body_bytes, config.max_files);
    let files = match tokio::time::timeout(config.body_timeout, read).await {
        Ok(Ok(f)) => f,
        Ok(Err(resp)) => return resp,
        Err(_) => {
            return error_response(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the upload was not received within {} s",
                    config.body_timeout.as_secs()
                ),
            )
        }
    };
    if files.is_empty() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "the upload holds no file: send one or more images as multipart/form-data \
             (field 'files')",
        );
    }

    // Every file is classified on the blocking pool, at most
    // `max_concurrent` photos at a time across all requests.
    let mut tasks = Vec::with_capacity(files.len());
    for (name, bytes) in files {
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            let outcome = classify_one(&state, &name, bytes).await;
            (name, outcome)
        }));
    }
    let classes = state.classifier.classes().to_vec();
    let mut results = Vec::with_capacity(tasks.len());
    let mut predictions: Vec<PhotoPrediction> = Vec::new();
    let (mut bad_input, mut internal) = (0usize, 0usize);
    for (i, task) in tasks.into_iter().enumerate() {
        let (name, outcome) = match task.await {
            Ok(x) => x,
            Err(e) => (
                format!("file {}", i + 1),
                Err(Failure::Internal(format!(
                    "classification task failed: {e}"
                ))),
            ),
        };
        match outcome {
            Ok(p) => {
                let outcome = Ok(p);
                results.push(PhotoRecord::new(&name, &outcome, &classes, true));
                predictions.extend(outcome);
            }
            Err(f) => {
                let message = match f {
                    Failure::BadInput(m) => {
                        bad_input += 1;
                        m
                    }
                    Failure::Internal(m) => {
                        internal += 1;
                        m
                    }
                };
                results.push(PhotoRecord::new(&name, &Err(message), &classes, false));
            }
        }
    }
    let mut body = ClassifyResponse {
        error: None,
        model: state.classifier.origin().to_string(),
        files: results,
        differential: differential(&predictions, &classes),
    };
    if predictions.is_empty() {
        let (status, message) = if internal > 0 {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "classification failed inside leuko (see each file's error)",
            )
        } else if bad_input == 1 {
            (StatusCode::BAD_REQUEST, "the file is not a readable image")
        } else {
            (
                StatusCode::BAD_REQUEST,
                "none of the files is a readable image",
            )
        };
        body.error = Some(message.to_string());
        return (status, Json(body)).into_response();
    }
    (StatusCode::OK, Json(body)).into_response()
}

/// The uploaded files as `(name, bytes)`, in upload order; an error response
/// for a malformed or too large body.
async fn read_files(
    multipart: &mut Multipart,
    limit: usize,
    max_files: usize,
) -> Result<Vec<(String, Vec<u8>)>, Response> {
    let mut files = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e, limit)),
        };
        let file_name = field.file_name().map(str::to_string);
        let is_file = file_name.is_some() || matches!(field.name(), Some("files" | "file"));
        if !is_file {
            // Other form fields are ignored (but must still be read through).
            if let Err(e) = field.bytes().await {
                return Err(multipart_error(e, limit));
            }
            continue;
        }
        if files.len() == max_files {
            return Err(error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("more than {max_files} files in one upload: send them in several"),
            ));
        }
        let name = match file_name {
            Some(n) if !n.trim().is_empty() => n,
            _ => format!("file {}", files.len() + 1),
        };
        match field.bytes().await {
            Ok(b) => files.push((name, b.to_vec())),
            Err(e) => return Err(multipart_error(e, limit)),
        }
    }
    Ok(files)
}

fn multipart_error(e: axum::extract::multipart::MultipartError, limit: usize) -> Response {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(limit)
    } else {
        error_response(
            StatusCode::BAD_REQUEST,
            format!("malformed multipart upload: {}", e.body_text()),
        )
    }
}

async fn classify_one(
    state: &AppState,
    name: &str,
    bytes: Vec<u8>,
) -> Result<PhotoPrediction, Failure> {
    let permit = state
        .permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| Failure::Internal(format!("server shutting down: {e}")))?;
    let classifier = state.classifier.clone();
    let name_owned = name.to_string();
    let joined = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            classifier.classify_bytes(&name_owned, &bytes)
        }))
    })
    .await;
    match joined {
        Ok(Ok(Ok(p))) => Ok(p),
        Ok(Ok(Err(LeukoError::Image { message, .. }))) => Err(Failure::BadInput(format!(
            "not a readable image: {message}"
        ))),
        Ok(Ok(Err(e))) => Err(Failure::Internal(format!("classification failed: {e}"))),
        Ok(Err(panic)) => Err(Failure::Internal(format!(
            "classification failed unexpectedly: {}",
            panic_message(&panic)
        ))),
        Err(e) => Err(Failure::Internal(format!(
            "classification task failed: {e}"
        ))),
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "internal error".to_string()
    }
}
