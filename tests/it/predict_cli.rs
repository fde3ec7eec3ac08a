//! `leuko predict` on real BCCD photos and on a corpus of bad inputs: one
//! row per leukocyte, valid probabilities, every file accounted for, no
//! panic; exit 0 / 2 / 1 as documented.

use image::{ImageBuffer, Luma, Rgb, RgbImage, Rgba};
use std::path::PathBuf;
use std::process::Output;

use crate::common;
use common::{huge_png_header, photo, s, text};

const CLASSES: [&str; 5] = [
    "NEUTROPHIL",
    "EOSINOPHIL",
    "LYMPHOCYTE",
    "MONOCYTE",
    "BASOPHIL",
];
const HEADER: &str = "file,cell,x_min,y_min,x_max,y_max,class,confidence,p_neutrophil,p_eosinophil,p_lymphocyte,p_monocyte,review,review_reasons,unfamiliarity,cell_area_px,nucleus_area_px,nc_ratio,nucleus_lobes,circularity,cell_area_um2,nucleus_area_um2,cell_diameter_um";

fn predict(args: &[&str]) -> Output {
    common::leuko("predict", args)
}

/// CSV rows (without the header) split into fields; checks the header.
fn csv_rows(stdout: &str) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_reader(stdout.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header.join(","), HEADER);
    r.records()
        .map(|rec| rec.unwrap().iter().map(String::from).collect())
        .collect()
}

/// Checks a cell row: class, probabilities summing to 1, confidence = top probability, box.
fn check_cell_row(row: &[String]) {
    assert!(CLASSES.contains(&row[6].as_str()), "{row:?}");
    let p: Vec<f64> = row[8..12].iter().map(|v| v.parse().unwrap()).collect();
    let sum: f64 = p.iter().sum();
    assert!(
        (sum - 1.0).abs() < 2e-3,
        "probabilities sum to {sum}: {row:?}"
    );
    let conf: f64 = row[7].parse().unwrap();
    let top = p.iter().cloned().fold(f64::MIN, f64::max);
    assert!((conf - top).abs() < 1e-9, "{row:?}");
    let b: Vec<u32> = row[2..6].iter().map(|v| v.parse().unwrap()).collect();
    assert!(
        b[0] < b[2] && b[1] < b[3] && b[2] <= 640 && b[3] <= 480,
        "{row:?}"
    );
    assert!(row[12] == "true" || row[12] == "false");
    assert!(row[14].parse::<f64>().is_ok(), "{row:?}");
    // The outline's measures: a cell larger than its nucleus, filling most of its box.
    let cell: f64 = row[15].parse().unwrap();
    let nucleus: f64 = row[16].parse().unwrap();
    let nc: f64 = row[17].parse().unwrap();
    let lobes: u32 = row[18].parse().unwrap();
    let circ: f64 = row[19].parse().unwrap();
    let box_area = ((b[2] - b[0]) * (b[3] - b[1])) as f64;
    assert!(cell > 0.4 * box_area && cell <= box_area, "{row:?}");
    assert!(nucleus > 0.0 && nucleus < cell, "{row:?}");
    assert!((nc - nucleus / cell).abs() < 1e-3, "{row:?}");
    assert!((1..=8).contains(&lobes), "{row:?}");
    assert!(circ > 0.3 && circ <= 1.0, "{row:?}");
}

#[test]
fn csv_and_json_give_one_row_per_leukocyte() {
    let photos = [photo(0), photo(3), photo(10)];
    let args: Vec<&str> = photos.iter().map(|p| s(p)).collect();
    let o = predict(
        &[
            &args[..],
            &["--format", "csv", "--threads", "2", "--um-per-px", "0.1"],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let rows = csv_rows(&text(&o.stdout));
    for r in &rows {
        // BCCD photos look like the default model's training photos.
        let u: f64 = r[14].parse().unwrap();
        assert!(u < 1.0, "unfamiliarity {u}: {r:?}");
        // At 0.1 µm per pixel a pixel is 0.01 µm².
        let px: f64 = r[15].parse().unwrap();
        let um2: f64 = r[20].parse().unwrap();
        assert!((um2 - px * 0.01).abs() < 0.006, "{r:?}");
        let d: f64 = r[22].parse().unwrap();
        assert!(
            (d - 2.0 * (um2 / std::f64::consts::PI).sqrt()).abs() < 0.01,
            "{r:?}"
        );
    }
    let o = predict(&[&args[..], &["--format", "json", "--quiet"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let photos_json = json.as_array().unwrap();
    assert_eq!(photos_json.len(), 3);
    let mut expected_rows = 0;
    for (p, j) in photos.iter().zip(photos_json) {
        assert_eq!(j["file"], s(p), "input order kept");
        assert!(j["error"].is_null());
        assert_eq!(
            (j["width"].as_u64(), j["height"].as_u64()),
            (Some(640), Some(480))
        );
        let cells = j["cells"].as_array().unwrap();
        assert!(!cells.is_empty(), "BCCD photos show a leukocyte: {j}");
        for (k, c) in cells.iter().enumerate() {
            assert_eq!(c["cell"].as_u64(), Some(k as u64 + 1));
            assert!(c["review_reasons"].is_array());
            assert_eq!(
                c["review"].as_bool(),
                Some(!c["review_reasons"].as_array().unwrap().is_empty())
            );
            let class = c["class"].as_str().unwrap();
            let conf = c["confidence"].as_f64().unwrap();
            assert!((c["probabilities"][class].as_f64().unwrap() - conf).abs() < 1e-9);
            // Without --um-per-px there are no micrometre figures; the outline's polygons
            // span exactly the cell's box.
            assert!(c.get("morphometrics_um").is_none(), "{c}");
            let cell_polys = c["outline"]["cell"].as_array().unwrap();
            assert!(!cell_polys.is_empty(), "{c}");
            let corners: Vec<(u64, u64)> = cell_polys
                .iter()
                .flat_map(|p| p.as_array().unwrap())
                .map(|xy| (xy[0].as_u64().unwrap(), xy[1].as_u64().unwrap()))
                .collect();
            let b = &c["box"];
            let span = (
                corners.iter().map(|p| p.0).min(),
                corners.iter().map(|p| p.1).min(),
                corners.iter().map(|p| p.0).max(),
                corners.iter().map(|p| p.1).max(),
            );
            assert_eq!(
                span,
                (
                    b["x_min"].as_u64(),
                    b["y_min"].as_u64(),
                    b["x_max"].as_u64(),
                    b["y_max"].as_u64()
                ),
                "{c}"
            );
            assert!(!c["outline"]["nucleus"].as_array().unwrap().is_empty());
        }
        expected_rows += cells.len();
        let file_rows: Vec<_> = rows.iter().filter(|r| r[0] == s(p)).collect();
        assert_eq!(file_rows.len(), cells.len(), "{p:?}");
        for (r, c) in file_rows.iter().zip(cells) {
            check_cell_row(r);
            assert_eq!(r[6], c["class"].as_str().unwrap());
            assert_eq!(
                r[15].parse::<u64>().unwrap(),
                c["morphometrics"]["cell_area_px"].as_u64().unwrap()
            );
            assert_eq!(
                r[2].parse::<u64>().unwrap(),
                c["box"]["x_min"].as_u64().unwrap()
            );
        }
    }
    assert_eq!(rows.len(), expected_rows);
    // Photo 0's leukocyte is annotated at 260..492 x 177..377.
    let first = &rows[0];
    let b: Vec<u32> = first[2..6].iter().map(|v| v.parse().unwrap()).collect();
    assert!(
        b[0] < 280 && b[2] > 470 && b[1] < 200 && b[3] > 350,
        "{b:?}"
    );
}

#[test]
fn folders_are_walked_recursively_in_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("b").join("deeper");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::copy(photo(1), deep.join("one.JPG")).unwrap();
    std::fs::copy(photo(2), dir.path().join("a").join("two.jpeg")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "skipped").unwrap();
    let out = dir.path().join("out").join("pred.csv");
    let o = predict(&[s(dir.path()), "--format", "csv", "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(o.stdout.is_empty(), "--out: nothing on stdout");
    let rows = csv_rows(&std::fs::read_to_string(&out).unwrap());
    let files: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert!(files.len() >= 2, "{files:?}");
    assert!(files[0].ends_with("a/two.jpeg"), "{files:?}");
    assert!(
        files.last().unwrap().ends_with("b/deeper/one.JPG"),
        "{files:?}"
    );
    assert!(!files.iter().any(|f| f.contains("notes")));
    rows.iter().for_each(|r| check_cell_row(r));
}

#[test]
fn bad_inputs_are_reported_and_the_rest_processed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let real = std::fs::read(photo(0)).unwrap();
    std::fs::copy(photo(0), d.join("real.jpg")).unwrap();
    std::fs::write(d.join("empty.jpg"), b"").unwrap();
    std::fs::write(d.join("truncated.jpg"), &real[..real.len() / 2]).unwrap();
    std::fs::write(d.join("text.jpg"), b"this is not a photo\n").unwrap();
    std::fs::write(d.join("huge.png"), huge_png_header()).unwrap();
    image::GrayImage::from_fn(64, 48, |x, _| Luma([x as u8 * 3]))
        .save(d.join("gray.png"))
        .unwrap();
    let bccd = image::open(photo(0)).unwrap().to_rgb8();
    ImageBuffer::from_fn(640, 480, |x, y| {
        let c = bccd.get_pixel(x, y).0;
        Rgba([c[0], c[1], c[2], 200])
    })
    .save(d.join("rgba.png"))
    .unwrap();
    ImageBuffer::<Rgb<u16>, Vec<u16>>::from_fn(64, 48, |x, y| {
        Rgb([x as u16 * 1000, y as u16 * 1000, 30000])
    })
    .save(d.join("deep.png"))
    .unwrap();
    RgbImage::from_pixel(1, 1, Rgb([120, 80, 200]))
        .save(d.join("one.png"))
        .unwrap();
    let missing = d.join("missing.jpg");
    let o = predict(&[s(d), s(&missing), "--format", "csv", "--threads", "2"]);
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
        ("missing.jpg", "no such file"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(file) && l.contains(reason)),
            "{file} ({reason}) not reported:\n{stderr}"
        );
        assert!(!stdout.contains(file), "{file} has a row:\n{stdout}");
    }
    let rows = csv_rows(&stdout);
    for file in ["real.jpg", "gray.png", "rgba.png", "deep.png", "one.png"] {
        let mine: Vec<_> = rows.iter().filter(|r| r[0].ends_with(file)).collect();
        assert!(!mine.is_empty(), "{file} has no row:\n{stdout}");
        for r in mine {
            if r[6] == "none" {
                // Synthetic photos may also be unfamiliar.
                let row = r[1..14].join(",");
                assert!(
                    row.starts_with("0,,,,,none,,,,,,true,no_leukocyte_found"),
                    "{row}"
                );
                assert!(r[14].parse::<f64>().is_ok(), "{r:?}");
            } else {
                check_cell_row(r);
            }
        }
    }
    // The real photo and its RGBA copy show the leukocyte; the tiny ones show none.
    for file in ["real.jpg", "rgba.png"] {
        assert!(
            rows.iter().any(|r| r[0].ends_with(file) && r[6] != "none"),
            "{file}"
        );
    }
    for file in ["gray.png", "one.png"] {
        assert!(
            rows.iter().any(|r| r[0].ends_with(file) && r[6] == "none"),
            "{file}"
        );
    }
    // The same run as JSON lists the errors too.
    let o = predict(&[s(d), s(&missing), "--format", "json", "--quiet"]);
    assert_eq!(o.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let errors = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p["error"].is_null())
        .count();
    assert_eq!(errors, 5, "{json}");
    assert_eq!(json.as_array().unwrap().len(), 10);
}

#[test]
fn a_bad_model_file_is_a_usage_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/models/default.leuko")).unwrap();
    let cases: [(&str, Vec<u8>); 3] = [
        ("garbage.leuko", b"definitely not a model".to_vec()),
        ("truncated.leuko", good[..good.len() / 2].to_vec()),
        ("header-only.leuko", good[..200.min(good.len())].to_vec()),
    ];
    let p0 = photo(0);
    for (name, bytes) in cases {
        let model = dir.path().join(name);
        std::fs::write(&model, bytes).unwrap();
        let o = predict(&[s(&p0), "--model", s(&model)]);
        let stderr = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(name), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(o.stdout.is_empty());
    }
    let o = predict(&[s(&p0), "--model", "no-such-model.leuko"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("no-such-model.leuko"));
}

#[test]
fn usage_errors_exit_with_one_and_the_table_reads_well() {
    let p0 = photo(0);
    for args in [
        vec![],
        vec![s(&p0), "--threads", "0"],
        vec![s(&p0), "--format", "xml"],
    ] {
        let o = predict(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o.stderr));
    }
    let o = predict(&[s(&p0)]);
    assert_eq!(o.status.code(), Some(0));
    let out = text(&o.stdout);
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    for col in ["file", "cell", "class", "confidence", "review"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(lines.next().unwrap().contains("BloodImage_00000.jpg"));
    assert!(out.contains("\n1 photo: "), "{out}");
}

/// Every cell's probabilities per class name, in photo and cell order.
fn json_probabilities(stdout: &str) -> Vec<std::collections::BTreeMap<String, f64>> {
    let v: serde_json::Value = serde_json::from_str(stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|photo| photo["cells"].as_array().unwrap().clone())
        .map(|cell| serde_json::from_value(cell["probabilities"].clone()).unwrap())
        .collect()
}

#[test]
fn the_default_prior_is_bayes_rule_over_the_flat_outputs() {
    let c = leuko::predict::Classifier::embedded().unwrap();
    let prior: std::collections::BTreeMap<String, f64> = c
        .classes()
        .iter()
        .map(|l| l.to_string())
        .zip(
            c.meta()
                .class_prior
                .clone()
                .unwrap()
                .iter()
                .map(|&p| p as f64),
        )
        .collect();
    let photos: Vec<PathBuf> = [0, 3, 20, 73, 142].into_iter().map(photo).collect();
    let args = |prior: &str| {
        let mut a: Vec<&str> = photos.iter().map(|p| s(p)).collect();
        a.extend(["--format", "json", "--quiet", "--prior", prior]);
        let o = predict(&a);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        json_probabilities(&text(&o.stdout))
    };
    let (with, flat) = (args("data"), args("flat"));
    assert_eq!(with.len(), flat.len());
    assert!(with.len() >= photos.len());
    let mut changed = 0;
    for (w, f) in with.iter().zip(&flat) {
        let total: f64 = f.iter().map(|(k, p)| p * prior[k]).sum();
        for (k, p) in f {
            let want = p * prior[k] / total;
            assert!((w[k] - want).abs() < 1e-5, "{k}: {} vs {want}", w[k]);
            changed += usize::from((w[k] - p).abs() > 1e-3);
        }
    }
    assert!(changed > 0, "the prior changes some probabilities");
}

/// Photos at half BCCD's magnification (shrunk into a frame of their background colour, as a 2x
/// weaker objective would show the smear): told so with `--magnification 0.5`, predict boxes each
/// leukocyte as the isolation boxes it in the original photo, in the new photo's own pixels, and
/// does not flag its size; untold, the isolation (set for BCCD's cell size) boxes the small
/// cells more loosely.
#[test]
fn predict_at_another_magnification_finds_the_cells_in_the_photos_pixels() {
    use leuko::preprocess::{magnify, Magnification};
    let dir = tempfile::tempdir().unwrap();
    let mut iou_told = Vec::new();
    let mut iou_untold = Vec::new();
    for id in [7, 14, 32, 3, 16, 19] {
        let img = image::open(photo(id)).unwrap().to_rgb8();
        // What the isolation finds in the photo itself, where the half-size photo puts it
        // (`magnify` centres it in the frame).
        let b = leuko::isolate::isolate(&img, &leuko::isolate::IsolationConfig::default())[0];
        let small = magnify(&img, Magnification(0.5), (0.0, 0.0));
        let file = dir.path().join(format!("half-{id}.png"));
        small.save(&file).unwrap();
        let want = [
            160.0 + b.x_min as f32 / 2.0,
            120.0 + b.y_min as f32 / 2.0,
            160.0 + b.x_max as f32 / 2.0,
            120.0 + b.y_max as f32 / 2.0,
        ];
        for (factor, ious) in [("0.5", &mut iou_told), ("1", &mut iou_untold)] {
            let out = predict(&["--magnification", factor, "--format", "json", s(&file)]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let cell = &v[0]["cells"][0];
            let Some(got) = ["x_min", "y_min", "x_max", "y_max"]
                .iter()
                .map(|k| cell["box"][k].as_f64().map(|x| x as f32))
                .collect::<Option<Vec<f32>>>()
            else {
                assert_eq!(factor, "1", "photo {id}: nothing found when told");
                ious.push(0.0);
                continue;
            };
            let inter = (got[2].min(want[2]) - got[0].max(want[0])).max(0.0)
                * (got[3].min(want[3]) - got[1].max(want[1])).max(0.0);
            let area = |r: &[f32]| (r[2] - r[0]) * (r[3] - r[1]);
            ious.push(inter / (area(&got) + area(&want) - inter));
            if factor == "0.5" {
                // The whole cell, not a fragment of it.
                assert!(
                    inter >= 0.8 * area(&want),
                    "photo {id}: {got:?} vs {want:?}"
                );
                let reasons = cell["review_reasons"].to_string();
                assert!(!reasons.contains("unusual_size"), "photo {id}: {reasons}");
            }
        }
    }
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    // Measured: mean IoU 0.62 told, 0.45 untold.
    assert!(
        mean(&iou_told) >= 0.55 && mean(&iou_told) >= mean(&iou_untold) + 0.1,
        "IoU told {iou_told:?}, untold {iou_untold:?}"
    );
}

#[test]
fn a_scale_that_is_not_a_positive_number_is_refused_before_any_work() {
    for bad in ["0", "-0.1", "abc", "1e9", "NaN"] {
        let o = predict(&[s(&photo(0)), &format!("--um-per-px={bad}")]);
        assert!(!o.status.success(), "--um-per-px {bad} accepted");
        let err = text(&o.stderr);
        assert!(
            err.contains("--um-per-px") && err.contains("micrometres per pixel"),
            "{bad}: {err}"
        );
        assert!(o.stdout.is_empty());
    }
}
