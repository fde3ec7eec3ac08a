//! `leuko serve`: the local web app and JSON API.

use anyhow::{bail, Context};
use leuko::predict::Classifier;
use leuko::serve::{AppState, ServeConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Run a local web app: drop blood-smear photos on the page and see every
/// leukocyte boxed, classified and counted. Also a JSON API
/// (`POST /api/classify`, `GET /api/health`).
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. The default is reachable from this machine only;
    /// the server has no authentication, so think twice before 0.0.0.0.
    /// A host name is resolved (`localhost:8080` listens on its first address).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080", value_parser = parse_addr)]
    pub addr: SocketAddr,
    /// Model file written by `leuko train` (default: the model embedded in leuko).
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Largest request body accepted, in MB (MiB); larger uploads get 413.
    #[arg(long, value_name = "MB", default_value_t = 20)]
    pub max_body_mb: usize,
    /// Photos classified at the same time (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Another host name the server answers to (repeatable). Requests addressed to any other
    /// name get 421, uploads from pages of another site 403 (DNS-rebinding protection); the
    /// listening address, and `localhost` on a loopback address, are always accepted.
    #[arg(long, value_name = "NAME")]
    pub allow_host: Vec<String>,
    /// Files accepted in one upload.
    #[arg(long, value_name = "N", default_value_t = leuko::serve::DEFAULT_MAX_FILES)]
    pub max_files: usize,
    /// Seconds allowed for a request's headers, and for a kept-alive connection's next
    /// request: slower or idle clients are disconnected.
    #[arg(long, value_name = "S", default_value_t = leuko::serve::DEFAULT_HEADER_TIMEOUT.as_secs())]
    pub header_timeout: u64,
    /// Connections served at once; more are closed at once.
    #[arg(long, value_name = "N", default_value_t = leuko::serve::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Seconds allowed for receiving an upload; a slower one gets 408.
    #[arg(long, value_name = "S", default_value_t = leuko::serve::DEFAULT_BODY_TIMEOUT.as_secs())]
    pub body_timeout: u64,
    /// The photos' magnification relative to BCCD's, 0.25 to 4, for every upload (as
    /// `predict --magnification`).
    #[arg(long, value_name = "F", default_value = "1")]
    pub magnification: leuko::preprocess::Magnification,
    /// Micrometres per photo pixel for every upload (as `predict --um-per-px`).
    #[arg(long, value_name = "UM", value_parser = super::predict::parse_um_per_px)]
    pub um_per_px: Option<f64>,
}

/// `IP:PORT` or `HOST:PORT`, resolved to its first address.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("{s:?} is not an address to listen on (IP:PORT or HOST:PORT): {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.max_body_mb == 0 || args.max_body_mb > 4096 {
        bail!("--max-body-mb must be between 1 and 4096");
    }
    let mut classifier = Classifier::from_option(args.model.as_deref())?;
    classifier.set_magnification(args.magnification);
    classifier.set_um_per_px(args.um_per_px);
    if args.max_files == 0
        || args.body_timeout == 0
        || args.header_timeout == 0
        || args.max_connections == 0
    {
        bail!("--max-files, --body-timeout, --header-timeout and --max-connections must be at least 1");
    }
    // On 0.0.0.0 the names the machine is reached by are not known: any, unless given.
    let mut allowed_hosts = ServeConfig::hosts_for(args.addr);
    if !args.allow_host.is_empty() {
        allowed_hosts.extend(
            args.allow_host
                .iter()
                .map(|h| h.trim().to_ascii_lowercase()),
        );
    }
    let mut config = ServeConfig {
        max_body_bytes: args.max_body_mb * 1024 * 1024,
        allowed_hosts,
        max_files: args.max_files,
        body_timeout: std::time::Duration::from_secs(args.body_timeout),
        header_timeout: std::time::Duration::from_secs(args.header_timeout),
        max_connections: args.max_connections,
        ..ServeConfig::default()
    };
    if let Some(n) = args.workers {
        if n == 0 {
            bail!("--workers must be at least 1");
        }
        config.max_concurrent = n;
    }
    let state = AppState::new(classifier, config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(leuko::serve::serve(args.addr, state))?;
    Ok(ExitCode::SUCCESS)
}
