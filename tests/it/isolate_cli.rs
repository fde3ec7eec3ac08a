//! `leuko isolate` on good and bad inputs: never a panic, bad files are
//! reported with their reason and the run goes on (exit status 2), usage
//! errors exit with 1.

use image::{ImageBuffer, Luma, Rgb, RgbImage, Rgba};
use leuko::imageio::decode_rgb;
use leuko::isolate::{isolate, IsolationConfig};
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common;
use common::{huge_png_header, text};

const PHOTO: &str = "../shared/data/bccd/JPEGImages/BloodImage_00000.jpg";

fn leuko(args: &[&str]) -> Output {
    common::leuko("isolate", args)
}

/// A smear with one leukocyte, drawn.
fn smear() -> RgbImage {
    RgbImage::from_fn(320, 240, |x, y| {
        let d2 = (x as i64 - 160).pow(2) + (y as i64 - 120).pow(2);
        if d2 < 20 * 20 {
            Rgb([146, 100, 215])
        } else if d2 < 40 * 40 {
            Rgb([196, 188, 214])
        } else if (x / 30 + y / 30) % 2 == 0 {
            Rgb([190, 150, 160])
        } else {
            Rgb([203, 204, 203])
        }
    })
}

/// Writes every kind of good and bad input into `dir` (some in a subfolder).
fn make_inputs(dir: &Path) -> Vec<PathBuf> {
    let sub = dir.join("more");
    std::fs::create_dir_all(&sub).unwrap();
    let photo = std::fs::read(PHOTO).expect("BCCD photo");
    let mut files = Vec::new();
    let mut put = |name: &str, bytes: Vec<u8>| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        files.push(p);
    };
    let png = |save: &dyn Fn(&Path)| {
        let tmp = tempfile::Builder::new().suffix(".png").tempfile().unwrap();
        save(tmp.path());
        std::fs::read(tmp.path()).unwrap()
    };
    put("bccd.jpg", photo.clone());
    put(
        "gray.png",
        png(&|p| {
            image::GrayImage::from_fn(64, 48, |x, _| Luma([x as u8 * 3]))
                .save(p)
                .unwrap()
        }),
    );
    let s = smear();
    put(
        "rgba.png",
        png(&|p| {
            ImageBuffer::from_fn(320, 240, |x, y| {
                let c = s.get_pixel(x, y).0;
                Rgba([c[0], c[1], c[2], 200])
            })
            .save(p)
            .unwrap()
        }),
    );
    put(
        "deep.png",
        png(&|p| {
            ImageBuffer::<Rgb<u16>, Vec<u16>>::from_fn(320, 240, |x, y| {
                Rgb(s.get_pixel(x, y).0.map(|v| v as u16 * 257))
            })
            .save(p)
            .unwrap()
        }),
    );
    put(
        "one.png",
        png(&|p| {
            RgbImage::from_pixel(1, 1, Rgb([120, 80, 200]))
                .save(p)
                .unwrap()
        }),
    );
    put(
        "white.png",
        png(&|p| {
            RgbImage::from_pixel(640, 480, Rgb([255, 255, 255]))
                .save(p)
                .unwrap()
        }),
    );
    put("empty.jpg", Vec::new());
    put("truncated.jpg", photo[..photo.len() / 3].to_vec());
    put("text.jpg", b"this is not a photo\n".to_vec());
    let p = sub.join("huge.png");
    std::fs::write(&p, huge_png_header()).unwrap();
    files.push(p);
    std::fs::write(dir.join("notes.txt"), "not an image extension: skipped").unwrap();
    files
}

#[test]
fn no_input_makes_the_library_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = IsolationConfig::default();
    for f in make_inputs(dir.path()) {
        if let Ok(img) = decode_rgb(&std::fs::read(&f).unwrap()) {
            let boxes = isolate(&img, &cfg);
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            match name.as_str() {
                "bccd.jpg" | "rgba.png" | "deep.png" => assert_eq!(boxes.len(), 1, "{name}"),
                "gray.png" | "one.png" | "white.png" => assert!(boxes.is_empty(), "{name}"),
                _ => {}
            }
        }
    }
}

#[test]
fn folder_run_reports_bad_files_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    make_inputs(dir.path());
    let out = dir.path().join("crops");
    let csv = dir.path().join("boxes.csv");
    let masks = dir.path().join("masks");
    let o = leuko(&[
        dir.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--boxes",
        csv.to_str().unwrap(),
        "--masks",
        masks.to_str().unwrap(),
        "--overlay",
        "--threads",
        "2",
        "--quiet",
    ]);
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(
        o.status.code(),
        Some(2),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    for (file, reason) in [
        ("empty.jpg", "empty"),
        ("truncated.jpg", "truncated"),
        ("text.jpg", "not an image"),
        ("huge.png", "too large"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(file) && l.contains(reason)),
            "{file} ({reason}) not reported:\n{stderr}"
        );
    }
    assert!(stdout.contains("white.png: no leukocyte found"), "{stdout}");
    for crop in ["bccd_1.png", "rgba_1.png", "deep_1.png", "bccd_overlay.png"] {
        let img = image::open(out.join(crop)).unwrap_or_else(|e| panic!("{crop}: {e}"));
        if !crop.contains("overlay") {
            assert_eq!((img.width(), img.height()), (128, 128), "{crop}");
        }
    }
    assert!(!out.join("white_1.png").exists());
    let table = std::fs::read_to_string(&csv).unwrap();
    let mut lines = table.lines();
    assert_eq!(
        lines.next(),
        Some("file,cell,x_min,y_min,x_max,y_max,cell_area_px,nucleus_area_px,nc_ratio,nucleus_lobes,circularity")
    );
    let bccd: Vec<&str> = lines.filter(|l| l.contains("bccd.jpg")).collect();
    assert_eq!(bccd.len(), 1, "{table}");
    let cols: Vec<f64> = bccd[0]
        .split(',')
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    // Cell 1, a box inside the 640x480 photo around its leukocyte (annotated 260..492 x 177..377).
    assert_eq!(cols[0], 1.0);
    assert!(
        cols[1] < 280.0 && cols[3] > 470.0 && cols[2] < 200.0 && cols[4] > 350.0,
        "{cols:?}"
    );
    assert!(cols[3] <= 640.0 && cols[4] <= 480.0);
    // The outline fills most of its box, its nucleus part of it; a rounded cell.
    let box_area = (cols[3] - cols[1]) * (cols[4] - cols[2]);
    let (cell_area, nucleus_area, nc, lobes, circ) = (cols[5], cols[6], cols[7], cols[8], cols[9]);
    assert!(
        cell_area > 0.6 * box_area && cell_area <= box_area,
        "{cols:?}"
    );
    assert!(nucleus_area > 0.0 && nucleus_area < cell_area, "{cols:?}");
    assert!((nc - nucleus_area / cell_area).abs() < 1e-3, "{cols:?}");
    assert!((1.0..=5.0).contains(&lobes), "{cols:?}");
    assert!(circ > 0.6 && circ <= 1.0, "{cols:?}");

    // The mask of the same cell: photo-sized, values 0 / 128 / 255, areas as in the table,
    // the nucleus inside the cell and the cell inside its box.
    let m = image::open(masks.join("bccd.png")).unwrap().to_luma8();
    assert_eq!(m.dimensions(), (640, 480));
    let (mut cell, mut nucleus) = (0.0, 0.0);
    for (x, y, p) in m.enumerate_pixels() {
        let v = p.0[0];
        assert!([0, 128, 255].contains(&v), "mask value {v}");
        if v != 0 {
            cell += 1.0;
            let inside = x as f64 >= cols[1] && (x as f64) < cols[3];
            assert!(
                inside && y as f64 >= cols[2] && (y as f64) < cols[4],
                "({x}, {y})"
            );
        }
        if v == 255 {
            nucleus += 1.0;
        }
    }
    assert_eq!((cell, nucleus), (cell_area, nucleus_area));
    let white = image::open(masks.join("white.png")).unwrap().to_luma8();
    assert!(
        white.pixels().all(|p| p.0[0] == 0),
        "no leukocyte, an empty mask"
    );
    assert!(
        !masks.join("text.png").exists(),
        "no mask for a file that is not a photo"
    );
}

#[test]
fn a_good_run_exits_with_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c");
    let o = leuko(&[
        PHOTO,
        "--out",
        out.to_str().unwrap(),
        "--keep-aspect",
        "--margin",
        "0.1",
        "--size",
        "64",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let img = image::open(out.join("BloodImage_00000_1.png")).unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));
}

#[test]
fn usage_errors_exit_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for args in [
        vec![],
        vec![PHOTO, "--overlay"],
        vec![PHOTO, "--out", d, "--margin", "20"],
        vec![PHOTO, "--size", "0"],
        vec![PHOTO, "--threads", "0"],
    ] {
        let o = leuko(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o.stderr));
        assert!(text(&o.stderr).starts_with("error:"), "{args:?}");
    }
    // Two photos with one stem would overwrite each other's crops.
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for sub in [&a, &b] {
        std::fs::create_dir_all(sub).unwrap();
        std::fs::copy(PHOTO, sub.join("same.jpg")).unwrap();
    }
    let o = leuko(&[d, "--out", dir.path().join("out").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("same name stem"));
}

#[test]
fn config_file_is_read_and_printed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("iso.toml");
    std::fs::write(&cfg, "grow_max_px = 7\n").unwrap();
    let o = leuko(&["--config", cfg.to_str().unwrap(), "--print-config"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains("grow_max_px = 7"));
    std::fs::write(&cfg, "grow_max_px = \"many\"\n").unwrap();
    let o = leuko(&["--config", cfg.to_str().unwrap(), PHOTO]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("iso.toml"));
}

#[test]
fn score_prints_the_summary() {
    let o = leuko(&["--score", "--data", "../shared/data/bccd", "--quiet"]);
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    for needle in [
        "n = 344",
        "mean IoU",
        "median IoU",
        "IoU >= 0.5",
        "none found",
        "10 worst by IoU",
        "BloodImage_",
    ] {
        assert!(stdout.contains(needle), "{needle}:\n{stdout}");
    }
}
