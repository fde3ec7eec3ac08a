//! `leuko predict`: classify every leukocyte in photos.
//!
//! Exit status: 0 when every input was processed (photos without a
//! leukocyte included), 2 when some inputs could not be read (each is
//! reported on stderr with its reason, the others are still processed and
//! printed), 1 for usage errors and an unusable `--model`.

use anyhow::{bail, Context};
use leuko::fsutil::write_atomic;
use leuko::predict::Classifier;
use leuko::report::{to_csv, to_json, to_table, PhotoResult};
use leuko::LeukoError;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Output format of `leuko predict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PredictFormat {
    /// Aligned columns for people, with the review reasons and a summary line.
    Table,
    /// file,cell,x_min,y_min,x_max,y_max,class,confidence,p_<class>...,review (one row per leukocyte).
    Csv,
    /// An array of per-photo objects with cells, review reasons and errors.
    Json,
}

/// Classify every leukocyte in photos with the embedded model (or --model).
///
/// One row per leukocyte; a photo without one gives a row with class `none`.
#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// Photos (jpg, jpeg, png, bmp, tif, tiff) or folders (searched recursively, sorted).
    #[arg(value_name = "INPUT", required = true)]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub run: ClassifyArgs,
    #[arg(long, value_enum, ignore_case = true, default_value = "table")]
    pub format: PredictFormat,
    /// Write the output to FILE (atomically) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Options shared by `predict` and `report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClassifyArgs {
    /// Model file written by `leuko train` (default: the model embedded in leuko).
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// `dihedral`: average each cell's probabilities over its 8 flips and 90°
    /// rotations (test-time augmentation; the network's part costs 8x).
    #[arg(long, value_enum, ignore_case = true, default_value_t)]
    pub views: leuko::infer::Views,
    /// `data` (default): weight each cell's probabilities by the training
    /// photos' class frequencies recorded in the model; `flat`: every type
    /// equally likely a priori (more rare-type calls, more false ones).
    #[arg(long, value_enum, ignore_case = true, default_value_t)]
    pub prior: leuko::infer::Prior,
    /// The photos' magnification relative to BCCD's, 0.25 to 4: how many times as large the
    /// cells are as in a BCCD photo of the same size (e.g. 2 for a 2x stronger objective at the
    /// same camera resolution). Leukocytes are looked for at BCCD's scale; boxes stay in the
    /// photo's pixels.
    #[arg(long, value_name = "F", default_value = "1")]
    pub magnification: leuko::preprocess::Magnification,
    /// Micrometres per photo pixel (your microscope's calibration, e.g. 0.1 at 100x with a
    /// 1 megapixel camera): adds the outline's areas in µm² and the cell's diameter in µm.
    #[arg(long, value_name = "UM", value_parser = parse_um_per_px)]
    pub um_per_px: Option<f64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `--um-per-px`: a positive scale of at most 100 µm per pixel.
pub fn parse_um_per_px(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of micrometres per pixel"))?;
    if !(v > 0.0 && v <= 100.0) {
        return Err(format!(
            "{s}: micrometres per pixel must be above 0 and at most 100"
        ));
    }
    Ok(v)
}

/// Loads the model and classifies every photo named by `inputs` on a pool
/// of `--threads` workers. Unreadable inputs are reported on stderr and come
/// back as failed results; results are in input order. `keep_crops`
/// keeps the network inputs (for the report's gallery).
pub fn classify_inputs(
    inputs: &[PathBuf],
    a: &ClassifyArgs,
    keep_crops: bool,
    task: &str,
) -> anyhow::Result<(Classifier, Vec<PhotoResult>)> {
    let mut classifier = Classifier::from_option(a.model.as_deref())?;
    classifier.set_views(a.views);
    classifier.set_prior(a.prior);
    classifier.set_magnification(a.magnification);
    classifier.set_um_per_px(a.um_per_px);
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = a.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        builder = builder.num_threads(n);
    }
    let pool = builder.build().context("cannot start worker threads")?;
    let inputs = super::photos_of(inputs)?;
    let pb = leuko::progress::bar(inputs.len() as u64, task, a.quiet || inputs.len() < 2);
    let classifier_ref = &classifier;
    let results: Vec<PhotoResult> = pool.install(|| {
        inputs
            .par_iter()
            .map(|input| {
                let (path, outcome) = match input {
                    Ok(path) => (path, classify_one(classifier_ref, path, keep_crops)),
                    Err((path, why)) => (path, Err(why.clone())),
                };
                if let Err(why) = &outcome {
                    pb.suspend(|| eprintln!("{}: {why}", path.display()));
                }
                pb.inc(1);
                PhotoResult {
                    file: path.display().to_string(),
                    outcome,
                }
            })
            .collect()
    });
    pb.finish_and_clear();
    if let Some(w) = leuko::wire::differential_of(&results, classifier.classes()).warning {
        eprintln!("warning: {w}");
    }
    Ok((classifier, results))
}

fn classify_one(
    classifier: &Classifier,
    path: &Path,
    keep_crops: bool,
) -> Result<leuko::predict::PhotoPrediction, String> {
    let mut p = classifier.classify_file(path).map_err(|e| describe(&e))?;
    if !keep_crops {
        for c in &mut p.cells {
            c.crop = image::RgbImage::new(0, 0);
        }
    }
    Ok(p)
}

/// A per-file error in words (the caller prints the file name).
pub fn describe(e: &LeukoError) -> String {
    match e {
        LeukoError::Image { message, .. } => format!("cannot read image: {message}"),
        LeukoError::Io { error, .. } => format!("cannot read the file: {error}"),
        other => other.to_string(),
    }
}

/// 2 when some input was unreadable, else 0.
pub fn exit_code(results: &[PhotoResult]) -> ExitCode {
    if results.iter().any(|r| r.outcome.is_err()) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn run(a: PredictArgs) -> anyhow::Result<ExitCode> {
    let (classifier, results) = classify_inputs(&a.inputs, &a.run, false, "predict")?;
    let text = match a.format {
        PredictFormat::Csv => to_csv(&results, classifier.classes()),
        PredictFormat::Json => to_json(&results, classifier.classes()),
        PredictFormat::Table => to_table(&results),
    };
    match &a.out {
        Some(path) => write_atomic(path, text.as_bytes())
            .with_context(|| format!("--out {}", path.display()))?,
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                // A closed pipe (`| head`) is not an error worth a message.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(anyhow::Error::new(e).context("writing to standard output"));
                }
                _ => {}
            }
        }
    }
    Ok(exit_code(&results))
}
