//! Load test for `leuko serve` (a benchmark, not a test): N client threads
//! post the same photo to `POST /api/classify` on a loopback address for a
//! fixed time, each waiting for its answer before sending the next request.
//! Prints requests/s, latency percentiles and the error count.
//!
//!     load_serve --addr 127.0.0.1:8080 --file PHOTO.jpg [--clients 16] [--seconds 30]
//!         [--bad-clients N]
//!
//! With `--bad-clients N`, N of the clients post bad uploads instead, in turn: a text file
//! named `.jpg`, the photo cut short with an end marker appended, random bytes named `.png`,
//! and a body over the server's 20 MiB limit. Their answers are counted by status code; any
//! 5xx answer, to a good or a bad upload, is an error.
//!
//! Only loopback addresses are accepted. `bench/serve_load.sh` starts the
//! server, runs this and reads the server's peak memory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const BOUNDARY: &str = "leukoLoadBoundary5f2c9a";

struct Args {
    addr: SocketAddr,
    file: std::path::PathBuf,
    clients: usize,
    bad_clients: usize,
    seconds: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut addr = None;
    let mut file = None;
    let mut clients = 16usize;
    let mut bad_clients = 0usize;
    let mut seconds = 30.0f64;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--addr" => {
                addr = Some(
                    value("--addr")?
                        .parse::<SocketAddr>()
                        .map_err(|e| format!("--addr: {e}"))?,
                )
            }
            "--file" => file = Some(std::path::PathBuf::from(value("--file")?)),
            "--clients" => {
                clients = value("--clients")?
                    .parse()
                    .map_err(|e| format!("--clients: {e}"))?
            }
            "--bad-clients" => {
                bad_clients = value("--bad-clients")?
                    .parse()
                    .map_err(|e| format!("--bad-clients: {e}"))?
            }
            "--seconds" => {
                seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?
            }
            "-h" | "--help" => {
                return Err(
                    "usage: load_serve --addr 127.0.0.1:PORT --file PHOTO [--clients 16] [--seconds 30] [--bad-clients N]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let addr = addr.ok_or("--addr is required")?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr}: only loopback addresses may be load-tested"
        ));
    }
    if !(1..=256).contains(&clients) || !(0.1..=600.0).contains(&seconds) {
        return Err("--clients must be 1-256 and --seconds 0.1-600".into());
    }
    if bad_clients > clients {
        return Err("--bad-clients cannot exceed --clients".into());
    }
    Ok(Args {
        addr,
        file: file.ok_or("--file is required")?,
        clients,
        bad_clients,
        seconds,
    })
}

/// One request on a fresh connection; the status code, or an error.
fn post(addr: SocketAddr, request: &[u8]) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    s.write_all(request).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let head = String::from_utf8_lossy(&out[..out.len().min(64)]).into_owned();
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {head:?}"))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let photo = match std::fs::read(&args.file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            return ExitCode::from(1);
        }
    };
    let name = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "photo.jpg".into());
    let request = multipart_request(args.addr, &name, &photo);
    let bad: Vec<(&str, Vec<u8>)> = bad_uploads(&photo)
        .into_iter()
        .map(|(kind, file, bytes)| (kind, multipart_request(args.addr, file, &bytes)))
        .collect();

    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let t0 = Instant::now();
    let handles: Vec<_> = (0..args.clients)
        .map(|i| {
            let request = request.clone();
            let bad = bad.clone();
            let is_bad = i < args.bad_clients;
            let addr = args.addr;
            std::thread::spawn(move || {
                let mut latencies_ms = Vec::new();
                let mut errors: Vec<String> = Vec::new();
                let mut answers: Vec<(&str, u16)> = Vec::new();
                let mut turn = i;
                while Instant::now() < deadline {
                    if is_bad {
                        let (kind, req) = &bad[turn % bad.len()];
                        turn += 1;
                        match post(addr, req) {
                            Ok(code) if code >= 500 => errors.push(format!("{kind}: HTTP {code}")),
                            Ok(code) => answers.push((kind, code)),
                            // The server may close an over-limit upload before reading it all.
                            Err(_) if *kind == "over-limit" => answers.push((kind, 0)),
                            Err(e) => errors.push(format!("{kind}: {e}")),
                        }
                        continue;
                    }
                    let t = Instant::now();
                    match post(addr, &request) {
                        Ok(200) => latencies_ms.push(t.elapsed().as_secs_f64() * 1e3),
                        Ok(code) => errors.push(format!("HTTP {code}")),
                        Err(e) => errors.push(e),
                    }
                }
                (latencies_ms, errors, answers)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    let mut answers: std::collections::BTreeMap<(&str, u16), usize> = Default::default();
    for h in handles {
        match h.join() {
            Ok((l, e, a)) => {
                latencies.extend(l);
                errors.extend(e);
                for k in a {
                    *answers.entry(k).or_default() += 1;
                }
            }
            Err(_) => errors.push("client thread panicked".into()),
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let ok = latencies.len();
    println!(
        "clients {} ({} bad)  duration {:.1} s  photo {} ({} bytes)",
        args.clients,
        args.bad_clients,
        elapsed,
        name,
        photo.len()
    );
    println!(
        "requests ok {ok}  errors {}  throughput {:.2} req/s",
        errors.len(),
        ok as f64 / elapsed
    );
    println!(
        "latency ms  p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    if !answers.is_empty() {
        let list: Vec<String> = answers
            .iter()
            .map(|((kind, code), n)| match code {
                0 => format!("{kind}: closed early x{n}"),
                c => format!("{kind}: HTTP {c} x{n}"),
            })
            .collect();
        println!("bad uploads answered  {}", list.join("  "));
    }
    if let Some(e) = errors.first() {
        println!("first error: {e}");
    }
    if errors.is_empty() && ok > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// A `POST /api/classify` request uploading one file.
fn multipart_request(addr: SocketAddr, name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let mut request = format!(
        "POST /api/classify HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

/// The bad uploads, each as (kind, file name, bytes).
fn bad_uploads(photo: &[u8]) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut cut = photo[..photo.len().min(2000)].to_vec();
    cut.extend_from_slice(&[0xFF, 0xD9]);
    // xorshift noise: the same bytes on every run.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    vec![
        (
            "text",
            "notes.jpg",
            b"not a photo, just some words\n".repeat(100),
        ),
        ("truncated", "cut.jpg", cut),
        ("noise", "noise.png", noise),
        ("over-limit", "huge.jpg", vec![0xAB; 21 * 1024 * 1024]),
    ]
}
