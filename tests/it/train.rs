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
        ..leuko::augment::AugmentConfig::off()
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
    // An exact continuation: every figure of every epoch, bit for bit (but the seconds).
    for (a, b) in full.history.iter().zip(&resumed.history) {
        let strip = |r: &leuko::train::EpochRecord| leuko::train::EpochRecord {
            seconds: 0.0,
            ..r.clone()
        };
        assert_eq!(strip(a), strip(b), "epoch {}", a.epoch);
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
    assert_eq!(worst, 0.0, "averaged weights differ by up to {worst}");
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

/// A tiny training run through the command line: a small config and a small part of the
/// embedded model's split (the photos' crops at 32 px), 3 epochs with weight averaging.
struct TinyRun {
    config: std::path::PathBuf,
    split: std::path::PathBuf,
}

impl TinyRun {
    fn new(d: &Path) -> TinyRun {
        let config = d.join("tiny.toml");
        std::fs::write(
            &config,
            SMALL
                .replace("size = 64", "size = 32")
                .replace("epochs = 15", "epochs = 3")
                .replace("[train]", "[train]\naverage_epochs = 2"),
        )
        .unwrap();
        let mut split: serde_json::Value =
            serde_json::from_str(leuko::predict::EMBEDDED_SPLIT).unwrap();
        for (part, n) in [("train", 24), ("val", 8), ("test", 8)] {
            split[part].as_array_mut().unwrap().truncate(n);
        }
        let split_path = d.join("split.json");
        std::fs::write(&split_path, split.to_string()).unwrap();
        TinyRun {
            config,
            split: split_path,
        }
    }

    fn run(&self, out: &Path, resume: bool, fault: Option<usize>) -> std::process::Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_leuko"));
        cmd.args(["train", "--config"])
            .arg(&self.config)
            .arg("--split")
            .arg(&self.split)
            .arg("--out")
            .arg(out)
            .arg("--quiet")
            .env("LEUKO_DATA", "../shared/data/bccd");
        if resume {
            cmd.arg("--resume");
        }
        if let Some(k) = fault {
            cmd.env("LEUKO_FAULT_AT_CHECKPOINT_STEP", k.to_string());
        }
        cmd.output().unwrap()
    }

    /// history.csv without its last column (the seconds).
    fn history(out: &Path) -> Vec<String> {
        std::fs::read_to_string(out.join("history.csv"))
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect()
    }

    /// The weights and header (the file's bytes also hold burn's per-process parameter ids).
    fn weights(p: &Path) -> (Vec<f32>, leuko::model::file::ModelMeta) {
        let (m, meta) = leuko::model::file::load_model(p, &burn::tensor::Device::flex()).unwrap();
        (leuko::train::average::flat_params(&m).unwrap(), meta)
    }

    /// Every file under `dir` whose name says it is temporary or half-written.
    fn leftovers(dir: &Path) -> Vec<String> {
        files_under(dir)
            .into_iter()
            .filter(|(p, _)| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.contains(".tmp") || name.contains(".partial")
            })
            .map(|(p, _)| p.display().to_string())
            .collect()
    }
}

/// Every file and folder below `dir` with its size (0 for a folder).
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                found.push((e.path(), 0));
                stack.push(e.path());
            } else {
                found.push((e.path(), e.metadata().unwrap().len()));
            }
        }
    }
    found
}

/// A run killed at every step of writing an epoch's checkpoint (each file, the manifest, the
/// rename), then resumed, ends exactly as the uninterrupted run: the same history (but the
/// seconds) and the same model file, bit for bit, with no half-written checkpoint left.
#[test]
fn a_run_killed_while_checkpointing_resumes_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tiny = TinyRun::new(d);
    let whole = d.join("whole");
    let o = tiny.run(&whole, false, None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = TinyRun::weights(&whole.join("model.leuko"));
    // Each epoch's checkpoint takes 7 steps (4 files and the state, the manifest, the rename):
    // kill at each step of epochs 1 and 2.
    for k in 1..=14 {
        let out = d.join(format!("killed-{k}"));
        let o = tiny.run(&out, false, Some(k));
        assert!(!o.status.success(), "step {k}: the run was not stopped");
        let o = tiny.run(&out, true, None);
        assert!(
            o.status.success(),
            "step {k}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            TinyRun::history(&out),
            TinyRun::history(&whole),
            "step {k}: history differs"
        );
        assert_eq!(
            TinyRun::weights(&out.join("model.leuko")),
            model,
            "step {k}: the model differs"
        );
        let left: Vec<String> = std::fs::read_dir(out.join("checkpoint"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec!["epoch-00003".to_string()], "step {k}");
        assert_eq!(TinyRun::leftovers(&out), Vec::<String>::new(), "step {k}");
    }
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `dir`; `None` where this machine does not let a test mount
    /// one (not root, or no mount permission in the container).
    fn mount(dir: &Path, bytes: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, bytes: u64) {
        let s = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(s.success(), "remounting {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A disk that fills up during training (a tmpfs a quarter, half and three quarters the size
/// of a finished run's folder): the run stops with an error that says so, and once there is
/// space again `--resume` ends exactly as the uninterrupted run, no temporary file left.
/// Skipped, with a message, where the test cannot mount a tmpfs.
#[test]
fn a_run_stopped_by_a_full_disk_resumes_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let probe = match Tmpfs::mount(&d.join("probe"), 1 << 20) {
        Some(t) => t,
        None => {
            eprintln!(
                "skipped: a tmpfs cannot be mounted here (needs root and mount permission), \
                 so a full disk cannot be made"
            );
            return;
        }
    };
    drop(probe);
    let tiny = TinyRun::new(d);
    let whole = d.join("whole");
    let o = tiny.run(&whole, false, None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = TinyRun::weights(&whole.join("model.leuko"));
    let full: u64 = files_under(&whole).iter().map(|(_, n)| n).sum();
    for quarter in 1..=3u64 {
        let mount = d.join(format!("disk-{quarter}"));
        let disk = Tmpfs::mount(&mount, (full * quarter / 4).max(4096)).unwrap();
        let out = mount.join("run");
        let o = tiny.run(&out, false, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{quarter}/4: the run did not fail");
        // Said once, with the file that could not be written.
        assert_eq!(
            err.matches("No space left").count(),
            1,
            "{quarter}/4: {err}"
        );
        assert!(
            err.contains(&*mount.to_string_lossy()),
            "{quarter}/4: {err}"
        );
        disk.resize(64 << 20);
        let o = tiny.run(&out, true, None);
        assert!(
            o.status.success(),
            "{quarter}/4: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            TinyRun::history(&out),
            TinyRun::history(&whole),
            "{quarter}/4: history differs"
        );
        assert_eq!(
            TinyRun::weights(&out.join("model.leuko")),
            model,
            "{quarter}/4: the model differs"
        );
        assert_eq!(
            TinyRun::leftovers(&out),
            Vec::<String>::new(),
            "{quarter}/4"
        );
    }
}
