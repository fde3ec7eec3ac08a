//! `leuko train` and `leuko evaluate`.

use super::data::groups_for;
use super::{DataArgs, Format};
use anyhow::Context;
use leuko::data::{ClassSet, DataDir, Dataset};
use leuko::split::{make_folds, make_split, Split};
use leuko::train::config::ExperimentConfig;
use leuko::train::{train, RunDir, TrainEvent, TrainObserver, TrainOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Train a classifier from an experiment config (experiments/*.toml), or fine-tune a model on
/// your own labelled cells (`--data my_cells.csv --init default`).
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Experiment config (TOML), e.g. experiments/final.toml. With --init and no --config: the
    /// built-in fine-tuning recipe (experiments/finetune.toml).
    #[arg(long, value_name = "FILE", required_unless_present = "init")]
    pub config: Option<PathBuf>,
    /// Start from a model's weights instead of fresh ones: `default` (the embedded model) or a
    /// model file. The network and its input stay the model's; classes the data shares with it
    /// keep their classifier weights, new classes start fresh.
    #[arg(long, value_name = "default|FILE")]
    pub init: Option<String>,
    /// Split to train and test on (default: the grouped, stratified split of the seed; for a
    /// labels CSV or class folders, training and validation cells only). `leuko split` writes one.
    #[arg(long, value_name = "FILE")]
    pub split: Option<PathBuf>,
    /// With a labels CSV or class folders: the classes to train on, comma-separated (default:
    /// every class of the labels; BCCD's are chosen by its split).
    #[arg(long, value_name = "LIST")]
    pub classes: Option<String>,
    /// Seed of every random choice (overrides the config's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Train on fold K (1-based) of 5 grouped folds instead of the plain split.
    #[arg(long, value_name = "K")]
    pub fold: Option<usize>,
    /// Run directory (default runs/<config>-<seed>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run in the run directory.
    #[arg(long)]
    pub resume: bool,
    /// No progress bars or epoch lines.
    #[arg(long)]
    pub quiet: bool,
}

/// Prints a training run's events on stderr (nothing with `--quiet`).
pub struct EpochPrinter {
    pub quiet: bool,
}

impl TrainObserver for EpochPrinter {
    fn event(&mut self, event: TrainEvent<'_>) {
        if self.quiet {
            return;
        }
        match event {
            TrainEvent::Resuming {
                epochs_done,
                steps_done,
            } => eprintln!("resuming after epoch {epochs_done} ({steps_done} steps)"),
            TrainEvent::NothingToResume { dir } => {
                eprintln!("nothing to resume in {}: starting afresh", dir.display())
            }
            TrainEvent::SkippedCheckpoint { path, why } => eprintln!(
                "skipping the incomplete checkpoint {} ({why}); resuming from the one before",
                path.display()
            ),
            TrainEvent::Epoch { record: r, improved } => eprintln!(
                "epoch {:>3}  train loss {:.3} acc {:.3} kappa {:.3} | val loss {:.3} acc {:.3} kappa {:.3} | lr {:.2e} {:.1}s{}",
                r.epoch,
                r.train_loss,
                r.train_accuracy,
                r.train_kappa,
                r.val_loss,
                r.val_accuracy,
                r.val_kappa,
                r.learning_rate,
                r.seconds,
                if improved { "  *best" } else { "" }
            ),
            TrainEvent::EarlyStop { patience } => {
                eprintln!("early stop: no better validation loss for {patience} epochs")
            }
            TrainEvent::Averaged { first, last } => eprintln!(
                "model: mean weights of epochs {first}-{last} (batch-norm statistics over all training batches)"
            ),
        }
    }
}

/// Number of folds `--fold` refers to.
pub const FOLDS: usize = 5;

/// The split a run uses: a file, a fold, or the default grouped split.
pub fn choose_split(
    dir: &DataDir,
    ds: &Dataset,
    split: Option<&Path>,
    fold: Option<usize>,
    seed: u64,
    quiet: bool,
) -> anyhow::Result<Split> {
    if let Some(p) = split {
        return Ok(Split::read(p, ds)?);
    }
    let report = groups_for(dir, None, quiet)?;
    let group_of = report.group_of();
    Ok(match fold {
        Some(k) => {
            if k == 0 || k > FOLDS {
                anyhow::bail!("--fold must be between 1 and {FOLDS}, got {k}");
            }
            make_folds(ds, &group_of, seed, FOLDS)?.swap_remove(k - 1)
        }
        None => make_split(ds, &group_of, seed),
    })
}

/// The classes a split file lists, as a comma-separated list (a split of a lab's cells selects
/// them).
fn split_classes(path: &Path) -> anyhow::Result<String> {
    #[derive(serde::Deserialize)]
    struct Head {
        classes: Vec<String>,
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--split {}", path.display()))?;
    let head: Head = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a split file: {e}", path.display()))?;
    Ok(head.classes.join(","))
}

/// The built-in fine-tuning recipe (`train --init` without `--config`).
pub static FINETUNE_RECIPE: &str = include_str!("../../experiments/finetune.toml");

/// The model `--init` names, with its header.
fn init_model(
    name: &str,
) -> anyhow::Result<(leuko::train::InitModel, leuko::model::file::ModelMeta)> {
    let (label, bytes) = if name == "default" {
        (
            "embedded default model".to_string(),
            leuko::predict::EMBEDDED_MODEL.to_vec(),
        )
    } else {
        let bytes = std::fs::read(name).with_context(|| format!("--init {name}"))?;
        (name.to_string(), bytes)
    };
    let (meta, _) = leuko::model::file::read_meta(&bytes)
        .map_err(|e| anyhow::anyhow!("--init {name}: not a leuko model file: {e}"))?;
    Ok((leuko::train::InitModel { name: label, bytes }, meta))
}

pub fn run_train(a: TrainArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = match &a.config {
        Some(path) => ExperimentConfig::read(path)?,
        None => ExperimentConfig::parse(FINETUNE_RECIPE)
            .map_err(|e| anyhow::anyhow!("the built-in fine-tuning recipe: {e}"))?,
    };
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    let init = match a.init.as_deref() {
        Some(name) => {
            let (init, meta) = init_model(name)?;
            // Fine-tuning keeps the model's network and input.
            cfg.net.blocks = meta.net.blocks.clone();
            cfg.net.bn_epsilon = meta.net.bn_epsilon;
            cfg.input = meta.input.clone();
            Some(init)
        }
        None => None,
    };
    let (ds, split) = match a.data.source(a.quiet)? {
        super::Source::Bccd(dir) => {
            if a.classes.is_some() {
                anyhow::bail!(
                    "--classes is for a labels CSV or class folders; BCCD's classes are chosen \
                     with `leuko split --classes` and --split"
                );
            }
            let ds = Dataset::load(&dir, &ClassSet::default_four())?;
            let split = choose_split(&dir, &ds, a.split.as_deref(), a.fold, cfg.seed, a.quiet)?;
            let ds = if split.classes != ds.classes {
                Dataset::load(&dir, &split.classes)?
            } else {
                ds
            };
            (ds, split)
        }
        super::Source::Cells(table) => {
            if a.fold.is_some() {
                anyhow::bail!(
                    "--fold works with the BCCD folder; for a labels CSV or class folders, write \
                     folds with `leuko split --data PATH --folds K` and train with --split"
                );
            }
            let split_classes = match &a.split {
                Some(p) => Some(split_classes(p)?),
                None => None,
            };
            let classes = a.classes.clone().or(split_classes);
            let (ds, groups) = super::data::cell_dataset(table, classes.as_deref(), a.quiet)?;
            let split = match &a.split {
                Some(p) => Split::read(p, &ds)?,
                None => leuko::split::make_train_val(&ds, &groups, cfg.seed),
            };
            (ds, split)
        }
    };
    let out = a.out.unwrap_or_else(|| {
        let fold = a.fold.map(|k| format!("-fold{k}")).unwrap_or_default();
        PathBuf::from(format!("runs/{}-{}{fold}", cfg.name, cfg.seed))
    });
    let net = cfg.net_config(split.classes.len());
    if !a.quiet {
        let classes: Vec<&str> = split.classes.labels().iter().map(|c| c.as_str()).collect();
        eprintln!(
            "{}{}: classes {}; blocks {:?}, {} parameters (Keras count), input {}; {} train / {} val / {} test cells; run dir {}",
            cfg.name,
            init.as_ref().map(|i| format!(" from {}", i.name)).unwrap_or_default(),
            classes.join(", "),
            net.blocks,
            net.keras_param_count(),
            cfg.input.describe(),
            split.train.len(),
            split.val.len(),
            split.test.len(),
            out.display()
        );
        if split.val.is_empty() {
            eprintln!(
                "fewer than {} cells in some class: training on all {} cells for {} epochs{}, \
                 without a validation part (no early stopping, no validation figures, the \
                 default review threshold)",
                leuko::split::MIN_PER_CLASS_FOR_VAL,
                split.train.len(),
                cfg.train.epochs,
                if cfg.train.max_images > 0 {
                    format!(" or {} training images", cfg.train.max_images)
                } else {
                    String::new()
                }
            );
        }
    }
    let opts = TrainOptions {
        run_dir: RunDir::new(&out),
        resume: a.resume,
        quiet: a.quiet,
        eval_batch: 64,
        init,
    };
    let what = a
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the fine-tuning recipe".to_string());
    let outcome = train(
        &cfg,
        &ds,
        &split,
        &opts,
        &mut EpochPrinter { quiet: a.quiet },
    )
    .with_context(|| format!("training {what}"))?;
    let scores = match &outcome.test {
        Some(t) => format!(
            "test kappa {:.3}, accuracy {:.3}, macro F1 {:.3}",
            t.kappa, t.accuracy, t.macro_f1
        ),
        None => "no test part (evaluate with `leuko evaluate --model MODEL --data CELLS --part all` on cells kept aside)".to_string(),
    };
    println!(
        "{}: best epoch {} of {}, {:.0} s of training; {scores}\nmodel: {}",
        cfg.name,
        outcome.best_epoch,
        outcome.history.len(),
        outcome.train_seconds,
        opts.run_dir.model().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Evaluate a trained model on the test part of a split.
#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Model file written by `leuko train` (model.leuko); default: the embedded model, on the
    /// split it was trained on. Given more than once: the ensemble of the models (mean of
    /// their probabilities), which must share classes and input.
    #[arg(long, value_name = "FILE")]
    pub model: Vec<PathBuf>,
    /// Split whose test part is used (BCCD default: split.json beside the model, else the seed-42
    /// grouped split; a labels CSV or class folders: required for --part test/val, from `leuko split --data`).
    #[arg(long, value_name = "FILE")]
    pub split: Option<PathBuf>,
    /// Which part of the split to score: `test` (the report's figures) or `val`
    /// (for choosing settings without looking at the test part).
    #[arg(long, value_enum, ignore_case = true, default_value_t)]
    pub part: Part,
    /// `dihedral`: average each cell's probabilities over its 8 flips and
    /// 90° rotations (test-time augmentation, 8x slower).
    #[arg(long, value_enum, ignore_case = true, default_value_t)]
    pub views: leuko::infer::Views,
    /// `data`: weight the probabilities by the training photos' class
    /// frequencies recorded in the model (what `predict` does); `flat`: every
    /// type equally likely a priori (the balanced network's raw outputs).
    #[arg(long, value_enum, ignore_case = true, default_value_t)]
    pub prior: leuko::infer::Prior,
    /// Multiply every photo's red, green and blue by these factors before
    /// anything else (e.g. `1.08,1,0.85`, a warmer lamp): a robustness check of
    /// how the model would fare on the same smears under another microscope.
    #[arg(long, value_name = "R,G,B")]
    pub colour_cast: Option<leuko::preprocess::ColourCast>,
    /// Show every photo as a microscope with this many times BCCD's magnification would (after
    /// any colour cast): above 1 a window around the annotated leukocyte enlarged to the
    /// photo's size, below 1 the photo shrunk into a frame of its own background colour.
    #[arg(long, value_name = "FACTOR")]
    pub magnification: Option<leuko::preprocess::Magnification>,
    /// With --magnification: tell leuko the photos' magnification, as `predict
    /// --magnification FACTOR` does (the isolation then looks for cells at BCCD's scale).
    #[arg(long, requires = "magnification")]
    pub compensate: bool,
    /// Blur every photo (last) with a Gaussian of this standard deviation in photo pixels: a
    /// photo out of focus, or from a weaker objective or camera.
    #[arg(long, value_name = "SIGMA")]
    pub blur: Option<leuko::preprocess::Blur>,
    /// Also draw the misclassified photos (the crops the network saw, captioned with photo
    /// number, true and predicted class and confidence, most confident first) into this PNG.
    #[arg(long, value_name = "FILE.png")]
    pub errors: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, ignore_case = true, default_value_t)]
    pub format: Format,
}

/// A part of a split that can be scored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Val,
    #[default]
    Test,
    /// Every usable sample of --data (a labelled set the model was never trained on).
    All,
}

pub fn run_evaluate(a: EvaluateArgs) -> anyhow::Result<ExitCode> {
    let device = burn::tensor::Device::flex();
    let mut models = Vec::new();
    for p in &a.model {
        let (m, meta) = leuko::model::file::load_model(p, &device)?;
        models.push((m, meta, p.display().to_string()));
    }
    if models.is_empty() {
        let (m, meta) = leuko::model::file::model_from_bytes(
            leuko::predict::EMBEDDED_MODEL,
            "embedded default model",
            &device,
        )?;
        models.push((m, meta, "the embedded default model".to_string()));
    }
    let meta = models[0].1.clone();
    if let Some((_, other, name)) = models
        .iter()
        .find(|(_, m, _)| m.classes != meta.classes || m.input != meta.input)
    {
        anyhow::bail!(
            "{name}: an ensemble needs models of the same classes and input; {} has {:?} / {:?}, this one {:?} / {:?}",
            models[0].2,
            meta.classes,
            meta.input,
            other.classes,
            other.input
        );
    }
    let model_name = models
        .iter()
        .map(|(_, _, n)| n.as_str())
        .collect::<Vec<_>>()
        .join(" + ");
    let classes = ClassSet::new(meta.classes.clone())?;
    let (ds, samples, part_name, split_name) = match a.data.source(false)? {
        super::Source::Bccd(dir) => bccd_part(&a, &dir, &classes, &meta)?,
        super::Source::Cells(table) if a.part != Part::All => {
            // No split is guessed: the one beside a fine-tuned model splits its training cells,
            // not the cells given here.
            let Some(path) = a.split.clone() else {
                anyhow::bail!(
                    "--part {} of a labels CSV or class folders needs its split (--split FILE, \
                     from `leuko split --data`); --part all scores every cell",
                    if a.part == Part::Val { "val" } else { "test" }
                );
            };
            let ds = Dataset::from_cells(table, Some(&classes))?;
            let split = Split::read(&path, &ds)?;
            if split.classes.labels() != meta.classes.as_slice() {
                anyhow::bail!(
                    "{}: the split's classes {:?} differ from the model's {:?}",
                    path.display(),
                    split.classes.labels(),
                    meta.classes
                );
            }
            let (samples, part_name) = match a.part {
                Part::Val => (split.val.clone(), "val"),
                _ => (split.test.clone(), "test"),
            };
            if samples.is_empty() {
                anyhow::bail!("{}: its {part_name} part is empty", path.display());
            }
            let name = path.display().to_string();
            (ds, samples, part_name, name)
        }
        super::Source::Cells(table) => {
            if a.split.is_some() {
                anyhow::bail!("--part all scores every cell of --data: leave out --split");
            }
            let ds = Dataset::from_cells(table, Some(&classes))?;
            if !ds.excluded.is_empty() {
                eprintln!(
                    "{} of classes the model does not know left out",
                    super::count(ds.excluded.len(), "cell", "cells")
                );
            }
            let name = format!(
                "all {} cells of {}",
                ds.samples.len(),
                ds.source.origin().display()
            );
            let all = ds.samples.clone();
            (ds, all, "all", name)
        }
    };
    score(
        &a,
        &models,
        &model_name,
        &meta,
        &classes,
        &ds,
        &samples,
        part_name,
        &split_name,
    )
}

/// The BCCD photos `leuko evaluate` scores: every usable one (`--part all`) or a part of the
/// split (`--split`, else the one beside the model, else the model's recorded / seed-42 split),
/// with the part's and the split's names.
fn bccd_part(
    a: &EvaluateArgs,
    dir: &DataDir,
    classes: &ClassSet,
    meta: &leuko::model::file::ModelMeta,
) -> anyhow::Result<(Dataset, Vec<leuko::data::Sample>, &'static str, String)> {
    let ds = Dataset::load(dir, classes)?;
    if a.part == Part::All {
        let name = format!(
            "all {} usable photos of {}",
            ds.samples.len(),
            dir.root().display()
        );
        let all = ds.samples.clone();
        return Ok((ds, all, "all", name));
    }
    let (split, split_name) = match (a.model.first(), &a.split) {
        (None, None) => (
            leuko::split::Split::parse(
                leuko::predict::EMBEDDED_SPLIT,
                Path::new("embedded split (models/default.split.json)"),
                &ds,
            )?,
            "its recorded split (models/default.split.json)".to_string(),
        ),
        (model, explicit) => {
            let beside = model
                .and_then(|m| m.parent())
                .map(|p| p.join("split.json"))
                .filter(|p| p.exists());
            let split_path = explicit.clone().or(beside);
            let name = split_path
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "the seed-42 grouped split".into());
            (
                choose_split(dir, &ds, split_path.as_deref(), None, 42, true)?,
                name,
            )
        }
    };
    if split.classes.labels() != meta.classes.as_slice() {
        anyhow::bail!(
            "the split's classes {:?} differ from the model's {:?}",
            split.classes.labels(),
            meta.classes
        );
    }
    let (samples, part_name) = match a.part {
        Part::Test => (split.test, "test"),
        Part::Val => (split.val, "validation"),
        Part::All => unreachable!("--part all returned above"),
    };
    Ok((ds, samples, part_name, split_name))
}

/// Why `leuko predict` would flag each scored cell: the model's review rules on its box and
/// confidence, no leukocyte found (the whole photo was classified), and an unfamiliar photo.
fn review_reasons(
    meta: &leuko::model::file::ModelMeta,
    set: &leuko::preprocess::InputSet,
    summed: &[Vec<f32>],
    preds: &[usize],
    features: &[Vec<f32>],
    members: usize,
) -> Vec<Vec<leuko::predict::ReviewReason>> {
    use leuko::predict::{ReviewReason, ReviewRules};
    let rules = ReviewRules::for_model(meta);
    (0..set.len())
        .map(|i| {
            let confidence = summed[i][preds[i]] / members as f32;
            let mut reasons = match &set.frames[i] {
                Some(f) => {
                    rules.reasons_at(&f.bbox, f.width, f.height, f.magnification, confidence)
                }
                None if meta.input.crop_config().is_some() => {
                    let mut r = vec![ReviewReason::NoLeukocyteFound];
                    if confidence < rules.min_confidence {
                        r.insert(0, ReviewReason::LowConfidence);
                    }
                    r
                }
                None => (confidence < rules.min_confidence)
                    .then_some(ReviewReason::LowConfidence)
                    .into_iter()
                    .collect(),
            };
            if let Some(fam) = &meta.familiarity {
                let measure = leuko::familiar::PhotoMeasure {
                    look: set.looks[i].clone(),
                    cell_features: features.get(i).cloned().into_iter().collect(),
                };
                if fam.unfamiliarity(&measure) > 1.0 {
                    reasons.push(ReviewReason::UnfamiliarPhoto);
                }
            }
            reasons
        })
        .collect()
}

/// Scores `models` (an ensemble when several) on `samples` of `ds` and prints the figures.
#[allow(clippy::too_many_arguments)]
fn score(
    a: &EvaluateArgs,
    models: &[(
        leuko::model::LeukoNet,
        leuko::model::file::ModelMeta,
        String,
    )],
    model_name: &str,
    meta: &leuko::model::file::ModelMeta,
    classes: &ClassSet,
    ds: &Dataset,
    samples: &[leuko::data::Sample],
    part_name: &str,
    split_name: &str,
) -> anyhow::Result<ExitCode> {
    if samples.is_empty() {
        anyhow::bail!("nothing to score: the {part_name} part is empty");
    }
    let change = leuko::preprocess::PhotoChange {
        cast: a.colour_cast,
        magnification: a.magnification,
        compensate: a.compensate,
        blur: a.blur,
        measure_look: meta.familiarity.is_some(),
    };
    let set =
        leuko::preprocess::prepare_changed(&ds.source, samples, classes, &meta.input, change)?;
    // An ensemble averages the members' probabilities, each under its own prior; the sum
    // picks the same class as the mean, so it is divided only where a probability is shown.
    // The first member's features and review rules judge whether a cell is flagged.
    let mut summed: Vec<Vec<f32>> = Vec::new();
    let mut features: Vec<Vec<f32>> = Vec::new();
    for (model, member, _) in models {
        let refs: Vec<&image::RgbImage> = set.images.iter().collect();
        let (mut probs, f) = leuko::infer::predict_probs_and_features(
            &burn::module::Module::valid(model),
            &refs,
            64,
            a.views,
        )?;
        leuko::infer::apply_prior(&mut probs, a.prior.weights(member));
        if summed.is_empty() {
            summed = probs;
            features = f;
        } else {
            for (acc, p) in summed.iter_mut().zip(&probs) {
                acc.iter_mut().zip(p).for_each(|(a, b)| *a += b);
            }
        }
    }
    if summed.iter().flatten().any(|p| !p.is_finite()) {
        anyhow::bail!(
            "{model_name}: the network gives probabilities that are not numbers (NaN or \
             infinite): the model's weights are damaged"
        );
    }
    let preds: Vec<usize> = summed.iter().map(|p| leuko::infer::argmax(p)).collect();
    let reasons = review_reasons(meta, &set, &summed, &preds, &features, models.len());
    let reason_names: Vec<Vec<&str>> = reasons
        .iter()
        .map(|r| r.iter().map(|r| r.as_str()).collect())
        .collect();
    let m = leuko::metrics::Metrics::compute(&meta.classes, &set.labels, &preds).with_review(
        &set.labels,
        &preds,
        &reason_names,
    );
    if let Some(path) = &a.errors {
        let tiles = leuko::train::plots::error_tiles(&set, &meta.classes, &preds, |i| {
            summed[i][preds[i]] / models.len() as f32
        });
        let title = format!(
            "{} of {} {} photos misclassified (true → predicted), most confident first",
            tiles.len(),
            set.len(),
            part_name
        );
        leuko::train::plots::error_gallery(path, &tiles, &title)?;
        if a.format == Format::Table {
            eprintln!("wrote {} ({} photos)", path.display(), tiles.len());
        }
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&m)?),
        Format::Table => {
            let views = match a.views {
                leuko::infer::Views::Single => "single view",
                leuko::infer::Views::Dihedral => "8 dihedral views",
            };
            let prior = match (a.prior, meta.class_prior.is_some()) {
                (leuko::infer::Prior::Data, true) => "training class frequencies as prior",
                (leuko::infer::Prior::Flat, true) => "flat prior",
                (_, false) => "outputs as trained",
            };
            let cast = match a.colour_cast {
                Some(leuko::preprocess::ColourCast([r, g, b])) => {
                    format!(", photos cast by R x{r} G x{g} B x{b}")
                }
                None => String::new(),
            };
            let cast = match a.magnification {
                Some(leuko::preprocess::Magnification(f)) if a.compensate => {
                    format!("{cast}, magnification x{f} (told to leuko)")
                }
                Some(leuko::preprocess::Magnification(f)) => format!("{cast}, magnification x{f}"),
                None => cast,
            };
            let cast = match a.blur {
                Some(leuko::preprocess::Blur(sigma)) => {
                    format!("{cast}, blurred (sigma {sigma} px)")
                }
                None => cast,
            };
            let describe = match models {
                [(_, m, _)] => format!("{}, epoch {}", m.experiment, m.epoch),
                all => format!("ensemble of {}: mean of their probabilities", all.len()),
            };
            let balance = match (meta.input.white_balance(), meta.input.normalise_stain()) {
                (_, true) => ", inputs white-balanced and stain-normalised",
                (true, false) => ", inputs white-balanced",
                (false, false) => "",
            };
            let balance = if meta.input.mask_context() {
                format!("{balance}, context masked")
            } else {
                balance.to_string()
            };
            let scored = match part_name {
                "all" => split_name.to_string(),
                part => format!("the {part} part of {split_name}"),
            };
            println!(
                "model {} ({}) on {} ({} photos, {}, {}{}{})\n",
                model_name,
                describe,
                scored,
                set.len(),
                views,
                prior,
                balance,
                cast
            );
            print!("{}", m.to_table());
            if !set.not_found.is_empty() {
                println!(
                    "\nno leukocyte found in {} of {} photos (the whole photo was classified): {:?}",
                    set.not_found.len(),
                    set.len(),
                    set.not_found
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run the four-stage case study (baseline → balanced → isolated → final).
#[derive(Debug, clap::Args)]
pub struct CaseStudyArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Where the runs, case-study.md and case-study.png go.
    #[arg(long, default_value = "runs/case-study", value_name = "DIR")]
    pub out: PathBuf,
    /// Run on K grouped folds and report mean ± sd.
    #[arg(long, value_name = "K")]
    pub folds: Option<usize>,
    /// Split file (instead of the seed-42 grouped split).
    #[arg(long, value_name = "FILE")]
    pub split: Option<PathBuf>,
    /// Seed of the split and of every stage.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Run only these stages (comma-separated: baseline, balanced, isolated, final).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub stages: Vec<String>,
    /// Train nothing: write case-study.md and case-study.png again from the
    /// case-study.json an earlier run left in --out.
    #[arg(long)]
    pub report_only: bool,
    /// Continue an interrupted study in --out: stages finished there with the
    /// same config and split are read back, an unfinished one resumes from its
    /// checkpoint; a folder holding another experiment is an error.
    #[arg(long)]
    pub resume: bool,
    /// No progress bars or epoch lines.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run_case_study(a: CaseStudyArgs) -> anyhow::Result<ExitCode> {
    if a.report_only {
        let (results, title) = leuko::case_study::read_results(&a.out)?;
        leuko::case_study::write_report(&a.out, &results, &title)?;
        print!("{}", leuko::case_study::markdown(&results, &title));
        eprintln!("wrote {}", a.out.join("case-study.md").display());
        return Ok(ExitCode::SUCCESS);
    }
    let dir = DataDir::resolve(a.data.data.as_deref())?;
    let ds = Dataset::load(&dir, &ClassSet::default_four())?;
    let (splits, title) = match (a.folds, &a.split) {
        (Some(k), _) => {
            let report = groups_for(&dir, None, a.quiet)?;
            (
                make_folds(&ds, &report.group_of(), a.seed, k)?,
                format!("Case study, {k} grouped folds (seed {}), mean ± sd", a.seed),
            )
        }
        (None, Some(p)) => (
            vec![Split::read(p, &ds)?],
            format!("Case study on {}", p.display()),
        ),
        (None, None) => (
            vec![choose_split(&dir, &ds, None, None, a.seed, a.quiet)?],
            format!("Case study on the grouped split (seed {})", a.seed),
        ),
    };
    let results = leuko::case_study::run(
        &ds,
        &splits,
        &leuko::case_study::StudyOptions {
            stages: &a.stages,
            seed: a.seed,
            out: &a.out,
            resume: a.resume,
            quiet: a.quiet,
        },
        &mut EpochPrinter { quiet: a.quiet },
    )?;
    leuko::case_study::write_report(&a.out, &results, &title)?;
    print!("{}", leuko::case_study::markdown(&results, &title));
    eprintln!("wrote {}", a.out.join("case-study.md").display());
    Ok(ExitCode::SUCCESS)
}
