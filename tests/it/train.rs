//! Training on the real data: a short run beats chance; an interrupted run resumes.

use leuko::data::{ClassSet, DataDir, Dataset};
use leuko::split::Split;
use leuko::train::config::ExperimentConfig;
use leuko::train::{train, RunDir, Silent, TrainOptions};
use std::path::Path;

fn dataset() -> Dataset {
    let dir = DataDir::open(Path::new("../shared/data/bccd")).unwrap();
    Dataset::load(&dir, &ClassSet::default_four()).unwrap()
}

fn reference_split(ds: &Dataset) -> Split {
    Split::read(Path::new("../shared/anchors/keras_seed/split.json"), ds).unwrap()
}

const SMALL: &str = r#"
name = "small"
seed = 7
[input]
kind = "crop"
size = 64
[net]
blocks = [8, 16]
[train]
epochs = 15
patience = 15
oversample = true
learning_rate = 0.003
precise_bn_batches = 4
"#;

/// burn's random generator is per device and process-wide: runs that must be
/// reproducible cannot train concurrently in one process.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn opts(dir: &Path, resume: bool) -> TrainOptions {
    TrainOptions {
        run_dir: RunDir::new(dir),
        resume,
        quiet: true,
        eval_batch: 64,
        init: None,
    }
}

#[test]
fn short_training_on_real_crops_beats_chance_and_leaves_a_complete_run_dir() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ds = dataset();
    let split = reference_split(&ds);
    let cfg = ExperimentConfig::parse(SMALL).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = train(&cfg, &ds, &split, &opts(tmp.path(), false), &mut Silent).unwrap();
    assert!(
        out.test.as_ref().unwrap().kappa > 0.3,
        "test kappa {} (accuracy {})",
        out.test.as_ref().unwrap().kappa,
        out.test.as_ref().unwrap().accuracy
    );
    let rd = RunDir::new(tmp.path());
    for p in [
        rd.config(),
        rd.split(),
        rd.model(),
        rd.history(),
        rd.metrics(),
        rd.curves(),
        rd.confusion(),
        rd.test_errors(),
    ] {
        assert!(p.is_file(), "{} missing", p.display());
    }
    // One gallery tile per misclassified test photo.
    let wrong = (0..out.test.as_ref().unwrap().confusion.counts.len())
        .map(|i| {
            out.test.as_ref().unwrap().confusion.counts[i]
                .iter()
                .sum::<usize>()
                - out.test.as_ref().unwrap().confusion.counts[i][i]
        })
        .sum::<usize>();
    let gallery = image::open(rd.test_errors()).unwrap();
    assert_eq!(
        (gallery.width(), gallery.height()),
        leuko::train::plots::error_gallery_size(wrong)
    );
    let history = std::fs::read_to_string(rd.history()).unwrap();
    assert_eq!(history.lines().count(), out.history.len() + 1);
    // The run directory's config reproduces the one used.
    assert_eq!(ExperimentConfig::read(&rd.config()).unwrap(), cfg);
    // The best epoch's model file reproduces the reported test metrics.
    let (model, meta) =
        leuko::model::file::load_model(&rd.model(), &burn::tensor::Device::flex()).unwrap();
    assert_eq!(meta.epoch, out.best_epoch);
    // Oversampled training records the training part's class frequencies as the prior.
    let counts: Vec<f32> = split
        .classes
        .labels()
        .iter()
        .map(|c| split.train.iter().filter(|s| s.label == *c).count() as f32)
        .collect();
    let prior = meta
        .class_prior
        .clone()
        .expect("oversampled run records a prior");
    for (p, c) in prior.iter().zip(&counts) {
        assert!(
            (p - c / split.train.len() as f32).abs() < 1e-6,
            "{prior:?} vs {counts:?}"
        );
    }
    let test =
        leuko::preprocess::prepare(&ds.source, &split.test, &split.classes, &meta.input).unwrap();
    let (_, preds, _) = leuko::infer::evaluate_set(
        &model,
        &test,
        64,
        leuko::infer::Views::Single,
        meta.class_prior.as_deref(),
    )
    .unwrap();
    let m = leuko::metrics::Metrics::compute(&meta.classes, &test.labels, &preds);
    assert_eq!(Some(m), out.test);
}

#[test]
fn resumed_run_continues_exactly_where_the_interrupted_one_stopped() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ds = dataset();
    let mut split = reference_split(&ds);
    split.train.truncate(48);
    split.val.truncate(16);
    split.test.truncate(16);
    let mut cfg = ExperimentConfig::parse(SMALL).unwrap();
    cfg.input = leuko::train::config::InputConfig::Crop {
        size: 32,
        margin: 0.0,
        keep_aspect: false,
        white_balance: false,
        normalise_stain: false,
        mask_context: false,
    };
    cfg.train.epochs = 4;
    cfg.train.patience = 10;
    // The weight window must survive the interruption too, and so must the
    // seeded draws of mixup (partners and weights) with a smoothed loss.
    cfg.train.average_epochs = 3;
    cfg.train.label_smoothing = 0.05;
    cfg.augment = Some(leuko::augment::AugmentConfig {
        flip_horizontal: true,
        flip_vertical: true,
        rotation_deg: 0.0,
        shear: 0.0,
        brightness: 0.0,
        contrast: 0.0,
        colour: 0.0,
        mixup: 0.4,
    });

    let whole = tempfile::tempdir().unwrap();
    let full = train(&cfg, &ds, &split, &opts(whole.path(), false), &mut Silent).unwrap();

    // "Interrupted" after 2 epochs: the same run with a 2-epoch budget, then resumed.
    let part = tempfile::tempdir().unwrap();
    let mut short = cfg.clone();
    short.train.epochs = 2;
    train(&short, &ds, &split, &opts(part.path(), false), &mut Silent).unwrap();
    let resumed = train(&cfg, &ds, &split, &opts(part.path(), true), &mut Silent).unwrap();

    assert_eq!(resumed.history.len(), 4);
    for (a, b) in full.history.iter().zip(&resumed.history) {
        assert_eq!(a.epoch, b.epoch);
        assert!(
            (a.train_loss - b.train_loss).abs() < 1e-5,
            "epoch {}: {} vs {}",
            a.epoch,
            a.train_loss,
            b.train_loss
        );
        assert!(
            (a.val_loss - b.val_loss).abs() < 1e-5,
            "epoch {}: {} vs {}",
            a.epoch,
            a.val_loss,
            b.val_loss
        );
    }
    assert_eq!(full.test, resumed.test);
    // The model is the mean of epochs 2-4, not the best epoch.
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(RunDir::new(part.path()).metrics()).unwrap())
            .unwrap();
    assert_eq!(metrics["averaged_epochs"], 3);
    let flat = leuko::train::average::flat_params;
    let (a, b) = (flat(&full.model).unwrap(), flat(&resumed.model).unwrap());
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "averaged weights differ by up to {worst}");
    assert_eq!(resumed.meta.epoch, 4);
}

#[test]
fn resume_refuses_a_folder_of_another_experiment() {
    let ds = dataset();
    let split = reference_split(&ds);
    let cfg = ExperimentConfig::parse(SMALL).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), cfg.to_toml().unwrap()).unwrap();
    split.write(&dir.path().join("split.json")).unwrap();

    let mut other = cfg.clone();
    other.net.dropout = 0.5;
    let err = match train(&other, &ds, &split, &opts(dir.path(), true), &mut Silent) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("resumed a run of another config"),
    };
    assert!(
        err.contains("another config") && err.contains("config.toml"),
        "{err}"
    );

    let mut moved = split.clone();
    let photo = moved.train.pop().unwrap();
    moved.test.push(photo);
    let err = match train(&cfg, &ds, &moved, &opts(dir.path(), true), &mut Silent) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("resumed a run on another split"),
    };
    assert!(err.contains("another split"), "{err}");
    // Nothing was overwritten by the refused attempts.
    let kept = std::fs::read_to_string(dir.path().join("config.toml")).unwrap();
    assert_eq!(kept, cfg.to_toml().unwrap());
}
