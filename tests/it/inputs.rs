//! A bad-input corpus for the photo readers: links that loop, a FIFO named like a photo,
//! a file over the size cap, a JPEG whose header claims more pixels than the file can hold, and
//! one cut short with an end marker appended. Each run ends within a time limit, never panics,
//! and accounts for every input: processed, or reported with its reason.

use crate::common::{photo, s, text};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `leuko predict ARGS --format csv` with `env`, killed after `limit`.
fn predict_within(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leuko"));
    cmd.arg("predict")
        .args(args)
        .args(["--format", "csv", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run leuko");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("leuko predict {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A copy of a BCCD JPEG whose frame header (SOF0) claims `w x h`.
fn lying_jpeg(w: u16, h: u16) -> Vec<u8> {
    let mut b = std::fs::read(photo(0)).unwrap();
    let sof = b
        .windows(2)
        .position(|m| m == [0xFF, 0xC0])
        .expect("a baseline JPEG");
    b[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    b[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    b
}

#[cfg(unix)]
#[test]
fn loops_fifos_oversized_and_lying_files_are_each_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("slide/inner")).unwrap();
    std::fs::copy(photo(0), d.join("slide/a.jpg")).unwrap();
    std::fs::copy(photo(1), d.join("slide/inner/b.jpg")).unwrap();
    // Two loops back up the tree, and a second link to a photo.
    std::os::unix::fs::symlink(d.join("slide"), d.join("slide/inner/up")).unwrap();
    std::os::unix::fs::symlink(d, d.join("slide/inner/top")).unwrap();
    std::os::unix::fs::symlink(d.join("slide/a.jpg"), d.join("slide/again.jpg")).unwrap();
    // A FIFO named like a photo: reading it would block forever.
    let fifo = d.join("slide/pipe.jpg");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    // A link to nothing, and one to a device that never ends.
    std::os::unix::fs::symlink(d.join("gone.jpg"), d.join("slide/broken.jpg")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", d.join("slide/zero.png")).unwrap();
    // A photo over a 1 MiB cap, a JPEG claiming 9000 x 9000 pixels, one cut at 2,000 bytes.
    std::fs::write(d.join("slide/big.png"), vec![0u8; 2 << 20]).unwrap();
    std::fs::write(d.join("slide/lying.jpg"), lying_jpeg(9000, 9000)).unwrap();
    let mut cut = std::fs::read(photo(2)).unwrap();
    cut.truncate(2000);
    cut.extend_from_slice(&[0xFF, 0xD9]);
    std::fs::write(d.join("slide/cut.jpg"), cut).unwrap();

    let o = predict_within(
        &[s(d)],
        &[("LEUKO_MAX_FILE_MB", "1")],
        Duration::from_secs(60),
    );
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    // The two real photos once each (a.jpg, not again through its second link or the loops).
    let files: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.split(',').next().unwrap()).collect();
    assert_eq!(files.len(), 2, "{out}");
    assert!(files.iter().any(|f| f.ends_with("slide/a.jpg")), "{out}");
    assert!(files.iter().any(|f| f.ends_with("inner/b.jpg")), "{out}");
    for (file, reason) in [
        ("pipe.jpg", "not a regular file"),
        ("broken.jpg", "cannot read"),
        ("zero.png", "not a regular file"),
        ("big.png", "larger than the limit of 1 MiB"),
        ("lying.jpg", "cannot hold the 9000x9000 pixels"),
        ("cut.jpg", "truncated JPEG"),
    ] {
        let line = err.lines().find(|l| l.contains(file));
        assert!(
            line.is_some_and(|l| l.contains(reason)),
            "{file}: expected '{reason}' in:\n{err}"
        );
    }
    // The same cases given as files, not found by walking.
    for (name, reason) in [
        ("pipe.jpg", "not a regular file"),
        ("zero.png", "not a regular file"),
    ] {
        let p = d.join("slide").join(name);
        let o = predict_within(&[s(&p)], &[], Duration::from_secs(20));
        assert_eq!(o.status.code(), Some(2));
        assert!(text(&o.stderr).contains(reason), "{}", text(&o.stderr));
    }
}

/// A photo in folders nested deeper than the system's longest path: the walk reports the
/// entry it cannot read (and the run exits 2) instead of skipping it silently.
#[cfg(unix)]
#[test]
fn a_path_longer_than_the_system_allows_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(photo(0), d.join("a.jpg")).unwrap();
    // 22 folders of 200 characters: over 4,096 bytes. bash changes into each in turn, so no
    // single call sees the whole path (dash's cd refuses a path that long).
    let name = "d".repeat(200);
    let script = format!(
        "cd '{}' && for i in $(seq 22); do mkdir {name} && cd {name} || exit 1; done && cp '{}' deep.jpg",
        d.display(),
        std::fs::canonicalize(photo(1)).unwrap().display()
    );
    let made = std::process::Command::new("bash")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(made.success());
    let o = predict_within(&[s(d)], &[], Duration::from_secs(60));
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(out.contains("a.jpg"), "{out}");
    assert!(
        err.lines()
            .any(|l| l.contains(&name) && l.contains("cannot read it")),
        "{err}"
    );
}
