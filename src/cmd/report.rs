//! `leuko report`: the differential count of a sample as one
//! self-contained HTML file.
//!
//! Exit status as `leuko predict`: 0 when every input was processed, 2 when
//! some could not be read (they are listed in the report and on stderr), 1
//! for usage errors and an unusable `--model`.

use super::predict::{classify_inputs, exit_code, ClassifyArgs};
use anyhow::{bail, Context};
use leuko::fsutil::write_atomic;
use leuko::report::{render_html, to_csv, ReportOptions, Summary, DEFAULT_GALLERY_CAP};
use std::path::PathBuf;
use std::process::ExitCode;

/// Differential count of a sample's photos as one self-contained HTML file.
///
/// Counts and percentages per type in the clinical order (neutrophil,
/// lymphocyte, monocyte, eosinophil, basophil), a bar chart, the cells flagged
/// for review with their reasons, a gallery of crops per type, photos without
/// a leukocyte and unreadable files.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Photos (jpg, jpeg, png, bmp, tif, tiff) or folders (searched recursively, sorted).
    #[arg(value_name = "INPUT", required = true)]
    pub inputs: Vec<PathBuf>,
    /// The HTML file to write (atomically).
    #[arg(long, value_name = "report.html")]
    pub out: PathBuf,
    /// Also write the per-cell CSV of `leuko predict --format csv`.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Heading of the report.
    #[arg(long, default_value = "Differential leukocyte count")]
    pub title: String,
    /// Crops shown per type in the gallery (the rest are counted).
    #[arg(long, default_value_t = DEFAULT_GALLERY_CAP, value_name = "N")]
    pub gallery: usize,
    #[command(flatten)]
    pub run: ClassifyArgs,
}

pub fn run(a: ReportArgs) -> anyhow::Result<ExitCode> {
    if a.out.is_dir() {
        bail!(
            "--out {} is a folder; give the HTML file to write",
            a.out.display()
        );
    }
    let (classifier, results) = classify_inputs(&a.inputs, &a.run, true, "report")?;
    let meta = classifier.meta();
    let opts = ReportOptions {
        title: a.title.clone(),
        model_origin: classifier.origin().to_string(),
        model_description: format!("experiment {}, epoch {}", meta.experiment, meta.epoch),
        classes: classifier.classes().to_vec(),
        rules: classifier.rules().clone(),
        gallery_cap: a.gallery,
    };
    let html = render_html(&results, &opts);
    write_atomic(&a.out, html.as_bytes()).with_context(|| format!("--out {}", a.out.display()))?;
    if let Some(csv) = &a.csv {
        write_atomic(csv, to_csv(&results, classifier.classes()).as_bytes())
            .with_context(|| format!("--csv {}", csv.display()))?;
    }
    let s = Summary::of(&results);
    println!(
        "{}: {}, {} ({} flagged for review), {} without a leukocyte, {} unreadable",
        a.out.display(),
        super::count(s.photos, "photo", "photos"),
        super::count(s.cells, "leukocyte", "leukocytes"),
        s.flagged,
        s.without_cell,
        s.unreadable
    );
    Ok(exit_code(&results))
}
