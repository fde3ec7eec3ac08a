//! `leuko report` on a few real BCCD photos: one self-contained HTML file
//! with the differential count in the clinical order, crops as PNG data URIs,
//! photos without a leukocyte and unreadable files listed; the CSV beside it.

use std::process::Output;

use crate::common;
use common::{photo, s, text};

fn report(args: &[&str]) -> Output {
    common::leuko("report", args)
}

#[test]
fn report_on_real_photos() {
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("sample & <co>");
    std::fs::create_dir_all(&sample).unwrap();
    for id in [0, 3, 10, 20] {
        std::fs::copy(photo(id), sample.join(format!("p{id}.jpg"))).unwrap();
    }
    image::RgbImage::from_pixel(320, 240, image::Rgb([250, 250, 250]))
        .save(sample.join("blank.png"))
        .unwrap();
    let html_path = dir.path().join("out").join("report.html");
    let csv_path = dir.path().join("cells.csv");
    let o = report(&[
        s(&sample),
        "--out",
        s(&html_path),
        "--csv",
        s(&csv_path),
        "--threads",
        "2",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<table id=\"counts\">"));
    assert!(html.contains("data:image/png;base64,"));
    // The clinical order, basophil included (the default model has no such class).
    let pos: Vec<usize> = [
        "Neutrophil",
        "Lymphocyte",
        "Monocyte",
        "Eosinophil",
        "Basophil",
    ]
    .iter()
    .map(|n| {
        html.find(&format!("<tr><td>{n}"))
            .unwrap_or_else(|| panic!("{n}"))
    })
    .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{pos:?}");
    assert!(html.contains("no basophil class"));
    // Self-contained: nothing is fetched from elsewhere.
    for needle in ["<link", "<script", "https://", "src=\"http"] {
        assert!(!html.contains(needle), "{needle}");
    }
    // File names are escaped; the blank photo is listed as without a leukocyte.
    assert!(html.contains("sample &amp; &lt;co&gt;"));
    assert!(!html.contains("<co>"));
    let no_cell = &html[html.find("<ul id=\"no-leukocyte\">").expect("list")..];
    assert!(no_cell[..no_cell.find("</ul>").unwrap()].contains("blank.png"));
    // The total in the table matches the CSV.
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let cells = csv
        .lines()
        .skip(1)
        .filter(|l| !l.contains(",none,"))
        .count();
    assert!(cells >= 4, "{csv}");
    assert!(
        html.contains(&format!(
            "<tr class=\"total\"><td>total</td><td class=\"n\">{cells}</td>"
        )),
        "total {cells}"
    );
    assert!(csv.starts_with("file,cell,x_min,y_min,x_max,y_max,class,confidence,p_neutrophil,"));
    assert!(csv.contains("blank.png,0,,,,,none,"));
    assert!(text(&o.stdout).contains(&format!("{cells} leukocytes")));
}

#[test]
fn unreadable_files_are_listed_and_exit_two() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.jpg");
    std::fs::write(&bad, b"not a jpeg").unwrap();
    let html_path = dir.path().join("r.html");
    let p0 = photo(0);
    let o = report(&[s(&p0), s(&bad), "--out", s(&html_path)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("broken.jpg"));
    let html = std::fs::read_to_string(&html_path).unwrap();
    let list = &html[html.find("<ul id=\"unreadable\">").expect("list")..];
    assert!(list.contains("broken.jpg: cannot read image: not an image"));
    // --out is required.
    let o = report(&[s(&p0)]);
    assert_eq!(o.status.code(), Some(1));
}
