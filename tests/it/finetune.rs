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
    let recipe = leuko::train::config::ExperimentConfig::parse(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/experiments/finetune.toml"
        ))
        .unwrap()
        .replace("epochs = 100", "epochs = 12"),
    )
    .unwrap();
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
