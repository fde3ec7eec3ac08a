//! `leuko profile`: record in a model file what its training photos look like, so that
//! `predict`, `report` and `serve` flag photos unlike them (`leuko train` does this itself;
//! this command brings older model files up to date).

use super::DataArgs;
use anyhow::Context;
use leuko::data::{ClassSet, Dataset};
use leuko::model::file::{model_from_bytes, model_to_bytes};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Record what a model's training photos look like (for the unfamiliar-photo review flag).
#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Model file (default: the embedded default model, with the split it was trained on).
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Split whose training photos are profiled and whose validation photos set the
    /// thresholds (default: split.json beside the model; the recorded split for the embedded
    /// model). A labels CSV or class folders are profiled whole.
    #[arg(long, value_name = "FILE")]
    pub split: Option<PathBuf>,
    /// Where to write the model with its profile (may be the model file itself).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(a: ProfileArgs) -> anyhow::Result<ExitCode> {
    let (bytes, origin) = match &a.model {
        Some(p) => (
            std::fs::read(p).with_context(|| format!("{}", p.display()))?,
            p.display().to_string(),
        ),
        None => (
            leuko::predict::EMBEDDED_MODEL.to_vec(),
            "embedded default model".to_string(),
        ),
    };
    let device = burn::tensor::Device::flex();
    let (model, mut meta) = model_from_bytes(&bytes, &origin, &device)?;
    let classes = ClassSet::new(meta.classes.clone())?;
    let (ds, train, held_out) = match a.data.source(a.quiet)? {
        super::Source::Cells(table) => {
            if a.split.is_some() {
                anyhow::bail!(
                    "a labels CSV or class folders are profiled whole: leave out --split"
                );
            }
            let ds = Dataset::from_cells(table, Some(&classes))?;
            let all = ds.samples.clone();
            (ds, all, Vec::new())
        }
        super::Source::Bccd(dir) => {
            let ds = Dataset::load(&dir, &classes)?;
            let beside = a
                .model
                .as_deref()
                .and_then(Path::parent)
                .map(|p| p.join("split.json"))
                .filter(|p| p.exists());
            let split = match (a.split.as_deref().or(beside.as_deref()), &a.model) {
                (Some(p), _) => leuko::split::Split::read(p, &ds)?,
                (None, None) => leuko::split::Split::parse(
                    leuko::predict::EMBEDDED_SPLIT,
                    Path::new("embedded split (models/default.split.json)"),
                    &ds,
                )?,
                (None, Some(m)) => anyhow::bail!(
                    "{}: no split.json beside it; say which photos it was trained on with --split",
                    m.display()
                ),
            };
            (ds, split.train, split.val)
        }
    };
    let train = leuko::infer::photos_of(&ds.source, &train);
    let held_out = leuko::infer::photos_of(&ds.source, &held_out);
    let fam = leuko::infer::profile(&model, &meta, &train, &held_out, a.quiet)?
        .ok_or_else(|| anyhow::anyhow!("no training photos to profile"))?;
    eprintln!(
        "profiled {} training photos; unfamiliar above look distance {:.2} or feature distance {:.2} ({})",
        fam.photos, fam.look_threshold, fam.feature_threshold, fam.chosen_on
    );
    meta.familiarity = Some(fam);
    let out = model_to_bytes(&model, &meta)?;
    leuko::fsutil::write_atomic(&a.out, &out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}
