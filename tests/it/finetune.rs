//! Fine-tuning on a lab's own cells: a round trip on a handful of Jiangxi Tecom photos (another
//! microscope and stain) that must beat the default model on held-out ones, and the classifier
//! re-aimed at changed class sets.

use crate::common;
use burn::tensor::{Device, Tensor};
use leuko::data::ClassLabel;
use leuko::model::NetConfig;
use std::path::Path;

/// The JTSC rows as (absolute path, class), basophils left out (one photo).
fn jtsc_rows() -> Vec<(String, String)> {
    let mut r = csv::Reader::from_path(Path::new(common::JTSC).join("labels.csv")).unwrap();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            let file = Path::new(common::JTSC).join(&rec[0]);
            (file.display().to_string(), rec[1].to_string())
        })
        .filter(|(_, c)| c != "BASOPHIL")
        .collect()
}

fn write_labels(path: &Path, rows: &[(String, String)]) {
    let mut text = String::from("file,class\n");
    for (f, c) in rows {
        text += &format!("{f},{c}\n");
    }
    std::fs::write(path, text).unwrap();
}

/// Accuracy of `leuko evaluate --data CSV --part all` (with `--model` when given).
fn accuracy(model: Option<&Path>, data: &Path) -> f64 {
    let mut args = vec![
        "--data",
        common::s(data),
        "--part",
        "all",
        "--format",
        "json",
    ];
    if let Some(m) = model {
        args.extend(["--model", common::s(m)]);
    }
    let o = common::leuko("evaluate", &args);
    assert!(o.status.success(), "{}", common::text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["accuracy"].as_f64().unwrap()
}

#[test]
fn fine_tuning_on_a_few_cells_of_another_microscope_beats_the_default_model() {
    let rows = jtsc_rows();
    // The first 4 photos of each class to train on, the next 10 of each to test on.
    let mut train = Vec::new();
    let mut test = Vec::new();
    for class in ["NEUTROPHIL", "EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE"] {
        let of: Vec<_> = rows.iter().filter(|r| r.1 == class).cloned().collect();
        train.extend_from_slice(&of[..4]);
        test.extend_from_slice(&of[4..14]);
    }
    let dir = tempfile::tempdir().unwrap();
    let (train_csv, test_csv) = (dir.path().join("train.csv"), dir.path().join("test.csv"));
    write_labels(&train_csv, &train);
    write_labels(&test_csv, &test);
    // A short recipe: the built-in one's settings, 12 epochs.
    let mut recipe = leuko::train::config::ExperimentConfig::parse(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/experiments/finetune.toml"
        ))
        .unwrap(),
    )
    .unwrap();
    recipe.train.epochs = 12;
    let cfg_path = dir.path().join("short.toml");
    std::fs::write(&cfg_path, recipe.to_toml().unwrap()).unwrap();
    let run = dir.path().join("run");
    let o = common::leuko(
        "train",
        &[
            "--data",
            common::s(&train_csv),
            "--init",
            "default",
            "--config",
            common::s(&cfg_path),
            "--out",
            common::s(&run),
            "--quiet",
        ],
    );
    assert!(o.status.success(), "{}", common::text(&o.stderr));
    // 4 cells a class: too few for a validation part, so the run says it has no test part.
    assert!(common::text(&o.stdout).contains("no test part"));
    let model = run.join("model.leuko");
    let (meta, _) = leuko::model::file::read_meta(&std::fs::read(&model).unwrap()).unwrap();
    let parent = meta.parent.expect("the parent model is recorded");
    assert_eq!(parent.name, "embedded default model");
    assert_eq!(parent.fnv1a64.len(), 16);
    assert!(meta.data_source.unwrap().ends_with("train.csv"));
    let before = accuracy(None, &test_csv);
    let after = accuracy(Some(&model), &test_csv);
    assert!(
        after > before + 0.2,
        "fine-tuned {after:.3} vs default {before:.3} on 40 held-out photos"
    );
}

/// Shared classes keep their outputs exactly; new ones come from the fresh network.
#[test]
fn the_classifier_follows_added_renamed_and_reordered_classes() {
    let device = Device::flex();
    device.seed(3);
    let four = ClassLabel::ALL[..4].to_vec();
    let old = NetConfig::new(vec![4, 8], 4).init(&device);
    let x = Tensor::<4>::random(
        [2, 3, 16, 16],
        burn::tensor::Distribution::Uniform(0.0, 1.0),
        &device,
    );
    let before: Vec<f32> = old
        .forward(x.clone())
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let blast = ClassLabel::named("blast").unwrap();
    // 4 -> 5 classes, a new class, and another order.
    let to = vec![
        ClassLabel::Monocyte,
        blast,
        ClassLabel::Neutrophil,
        ClassLabel::Basophil,
    ];
    let fresh = NetConfig::new(vec![4, 8], to.len()).init(&device);
    let fresh_out: Vec<f32> = fresh
        .forward(x.clone())
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let adapted = old.with_classes(&four, &to, &fresh);
    let after: Vec<f32> = adapted.forward(x).into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(after.len(), 2 * 4);
    for n in 0..2 {
        // MONOCYTE was output 3, NEUTROPHIL output 0.
        assert_eq!(after[n * 4], before[n * 4 + 3]);
        assert_eq!(after[n * 4 + 2], before[n * 4]);
        // The body is the old network's: a new class's logit is its fresh column applied to the
        // old features, so it differs from both networks' outputs.
        assert_ne!(after[n * 4 + 1], fresh_out[n * 4 + 1]);
        assert!(after[n * 4 + 1].is_finite() && after[n * 4 + 3].is_finite());
    }
}

/// `leuko data --data CSV` counts the cells and names every row it cannot use; a data set with
/// no usable cell is an error that names the file.
#[test]
fn data_lists_cells_per_class_and_unusable_rows() {
    let rows = jtsc_rows();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("cells.csv");
    let text = format!(
        "file,class\r\n{},neutrophil\r\n{},Band neutrophil\r\n{}/nope.bmp,MONOCYTE\r\n{},\r\n",
        rows[0].0,
        rows[1].0,
        common::JTSC,
        rows[2].0
    );
    std::fs::write(&csv, text).unwrap();
    let o = common::leuko("data", &["--data", common::s(&csv)]);
    let out = common::text(&o.stdout);
    assert!(o.status.success(), "{}", common::text(&o.stderr));
    assert!(
        out.contains("NEUTROPHIL") && out.contains("BAND_NEUTROPHIL"),
        "{out}"
    );
    assert!(out.contains("rows or files not used: 2"), "{out}");
    assert!(
        out.contains("line 4") && out.contains("no such file"),
        "{out}"
    );
    assert!(
        out.contains("line 5") && out.contains("empty class"),
        "{out}"
    );
    std::fs::write(&csv, "file,class\nnope.png,BLAST\n").unwrap();
    let o = common::leuko("data", &["--data", common::s(&csv)]);
    assert!(!o.status.success());
    let err = common::text(&o.stderr);
    assert!(
        err.contains("cells.csv") && err.contains("no usable labelled cell"),
        "{err}"
    );
}

/// `leuko split --data CSV`: a grouped, stratified split of a lab's cells that names them by
/// file, reads back after the CSV's rows are reordered, keeps a `group` in one part, refuses a
/// name the CSV does not have, and its test part is scored by `evaluate --split`.
#[test]
fn a_split_of_labelled_cells_names_them_by_file_and_survives_reordered_rows() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<(String, String)> = jtsc_rows()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 4 == 0)
        .map(|(_, r)| r)
        .collect();
    // Relative paths, and the first eight cells in one group (a slide).
    let mut text = String::from("file,class,group\n");
    for (i, (f, c)) in rows.iter().enumerate() {
        let group = if i < 8 {
            "slide-a".to_string()
        } else {
            String::new()
        };
        text += &format!("{f},{c},{group}\n");
    }
    let labels = dir.path().join("cells.csv");
    std::fs::write(&labels, &text).unwrap();
    let out = dir.path().join("split.json");
    let o = common::leuko(
        "split",
        &[
            "--data",
            common::s(&labels),
            "--out",
            common::s(&out),
            "--quiet",
        ],
    );
    assert!(o.status.success(), "{}", common::text(&o.stderr));
    let written = std::fs::read_to_string(&out).unwrap();
    let v: serde_json::Value = serde_json::from_str(&written).unwrap();
    let part_of = |name: &str| -> Option<&'static str> {
        ["train", "val", "test"]
            .into_iter()
            .find(|p| v[*p].as_array().unwrap().iter().any(|e| e[0] == name))
    };
    let total: usize = ["train", "val", "test"]
        .iter()
        .map(|p| v[*p].as_array().unwrap().len())
        .sum();
    assert_eq!(total, rows.len(), "every cell in one part");
    assert!(!v["test"].as_array().unwrap().is_empty());
    let slide: Vec<_> = rows[..8].iter().map(|r| part_of(&r.0)).collect();
    assert!(
        slide.iter().all(|p| p.is_some() && *p == slide[0]),
        "{slide:?}"
    );

    // The same split read against the rows in reverse order: the same cells, by name.
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1..].reverse();
    let reversed = dir.path().join("reversed.csv");
    std::fs::write(&reversed, lines.join("\n") + "\n").unwrap();
    let table = leuko::data::cells::read_labels_csv(&reversed).unwrap();
    let ds = leuko::data::Dataset::from_cells(table, None).unwrap();
    let split = leuko::split::Split::read(&out, &ds).unwrap();
    assert_eq!(split.to_json_for(&ds.source), written);

    // A cell the CSV does not have is an error naming the split file and the cell.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        written.replacen(&rows[0].0, "/nowhere/missing.bmp", 1),
    )
    .unwrap();
    let err = leuko::split::Split::read(&bad, &ds)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.json") && err.contains("missing.bmp"),
        "{err}"
    );

    // evaluate scores the split's test part.
    let o = common::leuko(
        "evaluate",
        &[
            "--data",
            common::s(&labels),
            "--split",
            common::s(&out),
            "--format",
            "json",
        ],
    );
    assert!(o.status.success(), "{}", common::text(&o.stderr));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        m["n"].as_u64(),
        Some(v["test"].as_array().unwrap().len() as u64),
        "{m}"
    );
}
