//! `leuko isolate`: find every leukocyte in photos, crop it.
//!
//! Exit status: 0 when every input was processed (photos without a
//! leukocyte included), 2 when some inputs could not be read (each is
//! reported on stderr, the others are still processed), 1 for usage errors.

use super::{count, DataArgs};
use anyhow::{bail, Context};
use leuko::fsutil::{write_atomic, write_atomic_with};
use leuko::imageio::load_rgb;
use leuko::isolate::{
    crop, isolate_with_mask, overlay, score_dataset, CropConfig, FoundCell, IsolationConfig,
};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Find every leukocyte in photos and crop it to 128x128.
///
/// Crops go to DIR/<stem>_<k>.png, k = 1 for the largest leukocyte (the cell number of `predict`). A photo
/// without a leukocyte is reported, not an error.
#[derive(Debug, clap::Args)]
pub struct IsolateArgs {
    /// Photos (jpg, jpeg, png, bmp, tif) or folders (searched recursively).
    #[arg(value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Write the crops to DIR/<stem>_<k>.png (k = 1 for the largest leukocyte).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write every cell to a CSV: file,cell, its box (x_min,y_min,x_max,y_max: the outline's
    /// bounding box, photo pixels, max exclusive) and its morphometrics (cell_area_px,
    /// nucleus_area_px, nc_ratio, nucleus_lobes, circularity).
    #[arg(long, value_name = "FILE.csv")]
    pub boxes: Option<PathBuf>,
    /// Write each photo's outlines to DIR/<photo stem>.png: the photo's size, 0 background, 128
    /// cytoplasm, 255 nucleus, every leukocyte found.
    #[arg(long, value_name = "DIR")]
    pub masks: Option<PathBuf>,
    /// Also write DIR/<stem>_overlay.png: the photo with the mask outline and the boxes (needs --out).
    #[arg(long)]
    pub overlay: bool,
    /// Score the largest box against the data set's annotations (photos with exactly one WBC box);
    /// INPUT is optional then.
    #[arg(long)]
    pub score: bool,
    /// Score each INPUT photo's outlines against hand-made masks of one cell: DIR/<photo
    /// stem>.png, the photo's size, 0-100 outside the cell, 101-200 cytoplasm, above 200 nucleus.
    /// Prints the share of photos with a leukocyte found, the largest cell's box IoU with the
    /// mask's bounding box, and Dice and IoU of cell and nucleus pixels, overall and for the
    /// worst photos; photos without a mask are left out.
    #[arg(long, value_name = "DIR")]
    pub score_masks: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Context around each box in the crop, as a share of the box's size on each side.
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub margin: f64,
    /// Keep the cell's aspect ratio (a square around the box, padded at the photo's edge) instead of stretching.
    #[arg(long)]
    pub keep_aspect: bool,
    /// Side of the square crops in pixels.
    #[arg(long, default_value_t = 128, value_name = "PX")]
    pub size: u32,
    /// Isolation settings: a TOML file with fields of IsolationConfig (missing fields keep their defaults).
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Print the isolation settings in use as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// What happened to one input photo.
struct Outcome {
    path: PathBuf,
    /// The cells found, or why the photo could not be read.
    result: Result<Vec<FoundCell>, String>,
    /// The photo's size (when read).
    size: Option<(u32, u32)>,
}

pub fn run(a: IsolateArgs) -> anyhow::Result<ExitCode> {
    let cfg = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("--config {}", p.display()))?;
            IsolationConfig::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("--config {}: {e}", p.display()))?
        }
        None => IsolationConfig::default(),
    };
    if a.print_config {
        print!("{}", cfg.to_toml()?);
        return Ok(ExitCode::SUCCESS);
    }
    if a.score_masks.is_some() && a.inputs.is_empty() {
        bail!("--score-masks DIR scores the INPUT photos: give the photos (or their folder)");
    }
    if a.inputs.is_empty() && !a.score {
        bail!("no INPUT given (photos or folders), and no --score; see `leuko isolate --help`");
    }
    if a.overlay && a.out.is_none() {
        bail!("--overlay writes DIR/<stem>_overlay.png: give --out DIR");
    }
    if !(a.margin.is_finite() && (0.0..=10.0).contains(&a.margin)) {
        bail!(
            "--margin {} must be between 0 and 10 (a share of the box size)",
            a.margin
        );
    }
    if a.size == 0 || a.size > 4096 {
        bail!("--size {} must be between 1 and 4096 pixels", a.size);
    }
    let crop_cfg = CropConfig {
        size_px: a.size,
        margin_fraction: a.margin,
        keep_aspect: a.keep_aspect,
        ..CropConfig::default()
    };
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = a.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        builder = builder.num_threads(n);
    }
    let pool = builder.build().context("cannot start worker threads")?;
    pool.install(|| run_in_pool(&a, &cfg, &crop_cfg))
}

fn run_in_pool(
    a: &IsolateArgs,
    cfg: &IsolationConfig,
    crop_cfg: &CropConfig,
) -> anyhow::Result<ExitCode> {
    let (files, mut bad) = collect_inputs(&a.inputs)?;
    if a.out.is_some() || a.masks.is_some() {
        check_unique_stems(&files)?;
    }
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).with_context(|| format!("--out {}", out.display()))?;
    }
    if let Some(dir) = &a.masks {
        std::fs::create_dir_all(dir).with_context(|| format!("--masks {}", dir.display()))?;
    }
    let pb = leuko::progress::bar(files.len() as u64, "isolate", a.quiet || files.len() < 2);
    let outcomes: Vec<Outcome> = files
        .par_iter()
        .map(|path| {
            let result = process(path, a, cfg, crop_cfg);
            if let Err(why) = &result {
                pb.suspend(|| eprintln!("{}: {why}", path.display()));
            }
            pb.inc(1);
            let (result, size) = match result {
                Ok((boxes, size)) => (Ok(boxes), Some(size)),
                Err(e) => (Err(e), None),
            };
            Outcome {
                path: path.clone(),
                result,
                size,
            }
        })
        .collect();
    pb.finish_and_clear();

    let mut n_cells = 0usize;
    let mut none_found = 0usize;
    for o in &outcomes {
        match &o.result {
            Ok(boxes) if boxes.is_empty() => {
                none_found += 1;
                println!("{}: no leukocyte found", o.path.display());
            }
            Ok(boxes) => n_cells += boxes.len(),
            Err(_) => bad += 1,
        }
    }
    if let Some(csv_path) = &a.boxes {
        write_boxes_csv(csv_path, &outcomes)
            .with_context(|| format!("--boxes {}", csv_path.display()))?;
    }
    let read = outcomes.len() - outcomes.iter().filter(|o| o.result.is_err()).count();
    if !a.inputs.is_empty() {
        println!(
            "{}: {}, {} without one, {} unreadable",
            count(read, "photo", "photos"),
            count(n_cells, "leukocyte", "leukocytes"),
            none_found,
            bad
        );
    }
    if let Some(dir) = &a.score_masks {
        print!("{}", score_masks(dir, &outcomes)?.to_text(10));
    }
    if a.score {
        let dir = leuko::data::DataDir::resolve(a.data.data.as_deref())?;
        let report = score_dataset(&dir, cfg)?;
        print!("{}", report.to_text(10));
    }
    Ok(if bad > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The largest box of every read photo that has a mask of one cell in `dir`, against that
/// mask. Masks are matched to photos by name ([`leuko::isolate::mask_photo_stem`]).
fn score_masks(dir: &Path, outcomes: &[Outcome]) -> anyhow::Result<leuko::isolate::MaskReport> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("--score-masks {}", dir.display()))?;
    let mut masks: HashMap<String, PathBuf> = HashMap::new();
    for e in entries.flatten() {
        let p = e.path();
        let png = p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png"));
        if let (true, Some(stem)) = (png, p.file_stem()) {
            masks.insert(leuko::isolate::mask_photo_stem(&stem.to_string_lossy()), p);
        }
    }
    let mut scores = Vec::new();
    let mut skipped: std::collections::BTreeMap<String, usize> = Default::default();
    for o in outcomes {
        let (Ok(boxes), Some(size)) = (&o.result, o.size) else {
            continue;
        };
        let stem = stem_of(&o.path);
        let Some(mask_path) = masks.get(&stem) else {
            continue;
        };
        let mask = match load_rgb(mask_path) {
            Ok(m) => image::GrayImage::from_fn(m.width(), m.height(), |x, y| {
                image::Luma([m.get_pixel(x, y).0[0]])
            }),
            Err(e) => {
                eprintln!("{e}");
                *skipped.entry("unreadable".into()).or_default() += 1;
                continue;
            }
        };
        match leuko::isolate::score_against_mask(&stem, size, boxes, &mask) {
            Ok(s) => scores.push(s),
            Err(why) => {
                if why == leuko::isolate::MaskSkip::OtherSize {
                    eprintln!("{}: {why} ({})", mask_path.display(), o.path.display());
                }
                *skipped.entry(why.to_string()).or_default() += 1;
            }
        }
    }
    if !skipped.is_empty() {
        let list: Vec<String> = skipped.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!("masks not scored: {}", list.join(", "));
    }
    if scores.is_empty() {
        bail!(
            "--score-masks {}: no mask of one cell matches an INPUT photo (looked for <photo stem>.png)",
            dir.display()
        );
    }
    Ok(leuko::isolate::MaskReport::from_scores(scores))
}

/// Files to process: given files as they are, folders walked recursively for
/// photos (by extension), sorted. Paths that do not exist or cannot be
/// listed are reported on stderr and counted.
fn collect_inputs(inputs: &[PathBuf]) -> anyhow::Result<(Vec<PathBuf>, usize)> {
    let mut files = Vec::new();
    let mut bad = 0;
    for found in super::photos_of(inputs)? {
        match found {
            Ok(path) => files.push(path),
            Err((path, why)) => {
                eprintln!("{}: {why}", path.display());
                bad += 1;
            }
        }
    }
    Ok((files, bad))
}

/// Crops are named after the photo's stem, so two photos with one stem would
/// overwrite each other's crops.
fn check_unique_stems(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut seen: HashMap<String, &Path> = HashMap::new();
    for f in files {
        let stem = stem_of(f);
        if let Some(first) = seen.insert(stem.clone(), f) {
            bail!(
                "{} and {} have the same name stem {stem:?}: their crops and masks would overwrite each other \
                 in --out / --masks; isolate them into different folders",
                first.display(),
                f.display()
            );
        }
    }
    Ok(())
}

fn stem_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "photo".to_string())
}

/// Decode, isolate, write crops and overlay; the error is a reason in words.
fn process(
    path: &Path,
    a: &IsolateArgs,
    cfg: &IsolationConfig,
    crop_cfg: &CropConfig,
) -> Result<(Vec<FoundCell>, (u32, u32)), String> {
    let photo = load_rgb(path).map_err(|e| match e {
        leuko::LeukoError::Image { message, .. } => format!("cannot read image: {message}"),
        leuko::LeukoError::Io { error, .. } => format!("cannot read the file: {error}"),
        other => other.to_string(),
    })?;
    let iso = isolate_with_mask(&photo, cfg);
    let stem = stem_of(path);
    if let Some(dir) = &a.masks {
        let mut m = image::GrayImage::new(photo.width(), photo.height());
        for c in &iso.cells {
            c.paint_into(&mut m);
        }
        write_atomic_with(&dir.join(format!("{stem}.png")), |w| {
            m.write_to(w, image::ImageFormat::Png)
                .map_err(std::io::Error::other)
        })
        .map_err(|e| format!("cannot write its mask: {e}"))?;
    }
    if let Some(out) = &a.out {
        for (k, b) in iso.boxes.iter().enumerate() {
            let c = crop(&photo, b, crop_cfg);
            write_png(&out.join(format!("{stem}_{}.png", k + 1)), &c)?;
        }
        if a.overlay {
            write_png(
                &out.join(format!("{stem}_overlay.png")),
                &overlay(&photo, &iso),
            )?;
        }
    }
    Ok((iso.found(), photo.dimensions()))
}

fn write_png(path: &Path, img: &image::RgbImage) -> Result<(), String> {
    write_atomic_with(path, |w| {
        img.write_to(w, image::ImageFormat::Png)
            .map_err(std::io::Error::other)
    })
    .map_err(|e| format!("cannot write: {e}"))
}

fn write_boxes_csv(path: &Path, outcomes: &[Outcome]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "file",
        "cell",
        "x_min",
        "y_min",
        "x_max",
        "y_max",
        "cell_area_px",
        "nucleus_area_px",
        "nc_ratio",
        "nucleus_lobes",
        "circularity",
    ])?;
    for o in outcomes {
        let Ok(cells) = &o.result else { continue };
        let file = o.path.to_string_lossy();
        for (k, c) in cells.iter().enumerate() {
            let b = c.cell_box();
            let m = c.mask.morphometrics();
            w.write_record([
                file.to_string(),
                (k + 1).to_string(),
                b.x_min.to_string(),
                b.y_min.to_string(),
                b.x_max.to_string(),
                b.y_max.to_string(),
                m.cell_area_px.to_string(),
                m.nucleus_area_px.to_string(),
                format!("{:.4}", m.nc_ratio),
                m.nucleus_lobes.to_string(),
                format!("{:.4}", m.circularity),
            ])?;
        }
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    write_atomic(path, &bytes)?;
    Ok(())
}
