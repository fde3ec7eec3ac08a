//! Helpers shared by the integration tests: where the BCCD photos are, running the `leuko`
//! binary, and hand-made PNG headers for the bad-input corpora.
//!
//! Every module of the test binary takes what it needs from here (`use crate::common;`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The BCCD data set beside the repository (CI has it too).
pub const BCCD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/bccd");

/// The Jiangxi Tecom photos beside the repository (120x120 single-cell photos of another
/// microscope and stain, `labels.csv` with `file,class`).
pub const JTSC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/jtsc");

/// Path of BCCD photo `BloodImage_{id:05}.jpg`.
pub fn photo(id: u32) -> PathBuf {
    PathBuf::from(BCCD).join(format!("JPEGImages/BloodImage_{id:05}.jpg"))
}

/// Runs `leuko <command> <args>` to completion.
pub fn leuko(command: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leuko"))
        .arg(command)
        .args(args)
        .output()
        .expect("run leuko")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// PNG's chunk checksum (CRC-32, ISO 3309), so that a forged header passes the decoder's check
/// and the size limit is what rejects it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header claims 30000x30000 pixels (no pixel data follows).
pub fn huge_png_header() -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&30000u32.to_be_bytes());
    ihdr.extend_from_slice(&30000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    png
}
