//! `leuko data` and `leuko data audit`.

use super::{count, DataArgs, Format};
use anyhow::Context;
use leuko::audit::{audit, AuditConfig, AuditReport};
use leuko::data::{ClassSet, DataDir, Dataset};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Per-class counts and unused rows of a data set (BCCD, a labels CSV or class folders).
#[derive(Debug, clap::Args)]
pub struct DataCommand {
    #[command(subcommand)]
    pub sub: Option<DataSub>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Output format.
    #[arg(long, value_enum, ignore_case = true, default_value_t)]
    pub format: Format,
    /// Also write a bar chart of the class counts (PNG).
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
    /// Classes to use, comma-separated (default NEUTROPHIL,EOSINOPHIL,LYMPHOCYTE,MONOCYTE; BASOPHIL can be added).
    #[arg(long, value_name = "LIST")]
    pub classes: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum DataSub {
    /// Find photos of the same field of view (same cell) taken twice, shifted or re-exposed.
    Audit(AuditArgs),
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Output format.
    #[arg(long, value_enum, ignore_case = true, default_value_t)]
    pub format: Format,
    /// Write the groups as JSON (read by `leuko split --groups`).
    #[arg(long, value_name = "groups.json")]
    pub out: Option<PathBuf>,
    /// Minimum overlap similarity (normalised cross-correlation) for two photos to count as one field.
    #[arg(long, default_value_t = AuditConfig::default().min_similarity)]
    pub min_similarity: f32,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn parse_classes(list: Option<&str>) -> anyhow::Result<ClassSet> {
    Ok(match list {
        Some(s) => ClassSet::parse_list(s).context("--classes")?,
        None => ClassSet::default_four(),
    })
}

pub fn run(cmd: DataCommand) -> anyhow::Result<ExitCode> {
    let dir = match cmd.data.source(true)? {
        super::Source::Bccd(dir) => dir,
        super::Source::Cells(table) => {
            return match cmd.sub {
                Some(DataSub::Audit(a)) => run_cell_audit(&table, a),
                None => run_cell_counts(table, &cmd),
            };
        }
    };
    match cmd.sub {
        Some(DataSub::Audit(a)) => run_audit(&dir, a),
        None => run_counts(&dir, &cmd),
    }
}

/// `leuko data --data CELLS`: cells per class of a labels CSV or class folders, and every row
/// or file that cannot be used, with its reason.
fn run_cell_counts(
    table: leuko::data::cells::CellTable,
    cmd: &DataCommand,
) -> anyhow::Result<ExitCode> {
    let origin = table.origin.clone();
    let problems = table.problems.clone();
    let classes = match cmd.classes.as_deref() {
        Some(list) => Some(ClassSet::parse_list(list).context("--classes")?),
        None => None,
    };
    let boxed = table.cells.iter().filter(|c| c.bbox.is_some()).count();
    let photos: std::collections::HashSet<_> = table.cells.iter().map(|c| &c.photo).collect();
    let photos = photos.len();
    let groups: std::collections::HashSet<_> = table
        .cells
        .iter()
        .filter_map(|c| c.group.as_ref())
        .collect();
    let groups = groups.len();
    let ds = Dataset::from_cells(table, classes.as_ref())?;
    let counts = ds.class_counts();
    match cmd.format {
        Format::Json => {
            let v = serde_json::json!({
                "data": origin,
                "classes": counts.iter().map(|(c, n)| (c.to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
                "total": ds.samples.len(),
                "photos": photos,
                "cells_with_box": boxed,
                "groups": groups,
                "class_not_selected": ds.excluded.len(),
                "problems": problems.iter().map(|p| serde_json::json!({"place": p.place, "problem": p.message})).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            println!("labelled cells from {}", origin.display());
            println!("{:<20} {:>7}", "class", "cells");
            for (c, n) in &counts {
                println!("{:<20} {:>7}", c.as_str(), n);
            }
            println!("{:<20} {:>7}", "total", ds.samples.len());
            println!(
                "\n{} in {}, {} with a box; {}",
                count(ds.samples.len(), "cell", "cells"),
                count(photos, "photo", "photos"),
                boxed,
                if groups == 0 {
                    "no groups (cells of one photo stay together in splits)".to_string()
                } else {
                    count(groups, "group", "groups")
                }
            );
            if !ds.excluded.is_empty() {
                println!("cells of classes not selected: {}", ds.excluded.len());
            }
            println!("rows or files not used: {}", problems.len());
            for p in &problems {
                println!("  {}: {}", p.place, p.message);
            }
            if let Some(&(c, n)) = counts.iter().min_by_key(|(_, n)| *n) {
                if n < leuko::split::MIN_PER_CLASS_FOR_VAL {
                    println!(
                        "\n{c} has {}: `leuko train --data` will train on every cell without a \
                         validation part ({} cells of every class are needed for one)",
                        count(n, "cell", "cells"),
                        leuko::split::MIN_PER_CLASS_FOR_VAL
                    );
                }
            }
        }
    }
    if let Some(path) = &cmd.plot {
        let labels: Vec<String> = counts.iter().map(|(c, _)| c.display_name()).collect();
        let values: Vec<f64> = counts.iter().map(|(_, n)| *n as f64).collect();
        let img = leuko::plot::bar_chart("Labelled cells per class", &labels, &values, "cells")?;
        leuko::plot::save_png(path, &img)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn run_counts(dir: &DataDir, cmd: &DataCommand) -> anyhow::Result<ExitCode> {
    let classes = parse_classes(cmd.classes.as_deref())?;
    let ds = Dataset::load(dir, &classes)?;
    let counts = ds.class_counts();
    let excluded = ds.excluded_counts();
    match cmd.format {
        Format::Json => {
            let v = serde_json::json!({
                "data_dir": dir.root(),
                "classes": counts.iter().map(|(c, n)| (c.to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
                "total": ds.samples.len(),
                "excluded": excluded.iter().map(|(r, n)| (serde_json::to_value(r).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
                "excluded_rows": ds.excluded,
                "images_without_row": ds.images_without_row,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            println!("BCCD data set at {}", dir.root().display());
            println!("{:<12} {:>7}", "class", "images");
            for (c, n) in &counts {
                println!("{:<12} {:>7}", c.as_str(), n);
            }
            println!("{:<12} {:>7}", "total", ds.samples.len());
            println!();
            println!("rows of labels.csv not used: {}", ds.excluded.len());
            for reason in [
                leuko::data::ExclusionReason::Unlabelled,
                leuko::data::ExclusionReason::MultiLabel,
                leuko::data::ExclusionReason::ClassNotSelected,
                leuko::data::ExclusionReason::ImageMissing,
                leuko::data::ExclusionReason::ImageUnreadable,
                leuko::data::ExclusionReason::MalformedRow,
            ] {
                let n = excluded.get(&reason).copied().unwrap_or(0);
                let rows: Vec<_> = ds.excluded.iter().filter(|e| e.reason == reason).collect();
                let detail = match reason {
                    leuko::data::ExclusionReason::ClassNotSelected
                    | leuko::data::ExclusionReason::ImageMissing
                    | leuko::data::ExclusionReason::ImageUnreadable => rows
                        .iter()
                        .map(|e| match e.image_id {
                            Some(id)
                                if reason == leuko::data::ExclusionReason::ClassNotSelected =>
                            {
                                format!("{id} {}", e.detail)
                            }
                            Some(id) => id.to_string(),
                            None => String::new(),
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    _ => String::new(),
                };
                let detail = if detail.is_empty() {
                    String::new()
                } else {
                    format!("  ({detail})")
                };
                println!("  {:<34} {:>4}{detail}", reason.describe(), n);
            }
            for e in ds.excluded.iter().filter(|e| {
                e.reason == leuko::data::ExclusionReason::MalformedRow
                    || e.reason == leuko::data::ExclusionReason::ImageUnreadable
            }) {
                eprintln!("warning: {}", e.detail);
            }
            if !ds.images_without_row.is_empty() {
                println!(
                    "photos in JPEGImages/ without a row in labels.csv: {} ({})",
                    ds.images_without_row.len(),
                    ds.images_without_row
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    if let Some(path) = &cmd.plot {
        // Title case: plotters' ab_glyph text drops each glyph's left bearing, which leaves gaps
        // around capitals such as T and Y ("NEU TROPHIL").
        let labels: Vec<String> = counts.iter().map(|(c, _)| c.display_name()).collect();
        let values: Vec<f64> = counts.iter().map(|(_, n)| *n as f64).collect();
        let img =
            leuko::plot::bar_chart("BCCD: usable photos per class", &labels, &values, "photos")?;
        leuko::plot::save_png(path, &img)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn run_audit(dir: &DataDir, a: AuditArgs) -> anyhow::Result<ExitCode> {
    let cfg = AuditConfig {
        min_similarity: a.min_similarity,
        ..AuditConfig::default()
    };
    let start = std::time::Instant::now();
    let report = audit(dir, &cfg, a.quiet)?;
    let secs = start.elapsed().as_secs_f64();
    if let Some(out) = &a.out {
        leuko::fsutil::write_atomic(out, serde_json::to_string_pretty(&report)?.as_bytes())?;
        eprintln!("wrote {}", out.display());
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => print_audit(&report, secs),
    }
    for (id, why) in &report.unreadable {
        eprintln!("warning: image {id} skipped: {why}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Labelled sets with at most this many photos are searched for near-duplicates before
/// training (the search compares every pair: about a minute at this size on two cores).
pub const MAX_AUTO_AUDIT_PHOTOS: usize = 1500;

/// The near-duplicate photos of a labelled set, searched before it is split (`None`, with a
/// message, when it has more than [`MAX_AUTO_AUDIT_PHOTOS`] photos).
pub fn cell_duplicates(
    table: &leuko::data::cells::CellTable,
    quiet: bool,
) -> anyhow::Result<Option<AuditReport>> {
    let (photos, labels) = table.photos();
    if photos.len() > MAX_AUTO_AUDIT_PHOTOS {
        eprintln!(
            "{} photos: not searched for near-duplicates (more than {MAX_AUTO_AUDIT_PHOTOS}); \
             give each slide or sample a `group` so that splits keep it together",
            photos.len()
        );
        return Ok(None);
    }
    let report = leuko::audit::audit_photos(&photos, &labels, &AuditConfig::default(), quiet)?;
    if !quiet && !report.groups.is_empty() {
        let n: usize = report.groups.iter().map(|g| g.members.len()).sum();
        eprintln!(
            "{} groups of near-duplicate photos ({n} photos) kept in one part each",
            report.groups.len()
        );
    }
    Ok(Some(report))
}

/// `leuko data audit --data CELLS`: near-duplicate photos of a labels CSV or class folders.
fn run_cell_audit(table: &leuko::data::cells::CellTable, a: AuditArgs) -> anyhow::Result<ExitCode> {
    let cfg = AuditConfig {
        min_similarity: a.min_similarity,
        ..AuditConfig::default()
    };
    let (photos, labels) = table.photos();
    let start = std::time::Instant::now();
    let report = leuko::audit::audit_photos(&photos, &labels, &cfg, a.quiet)?;
    let secs = start.elapsed().as_secs_f64();
    if let Some(out) = &a.out {
        leuko::fsutil::write_atomic(out, serde_json::to_string_pretty(&report)?.as_bytes())?;
        eprintln!("wrote {}", out.display());
    }
    let name: HashMap<u32, String> = photos
        .iter()
        .map(|(id, p)| {
            let file = table
                .cells
                .iter()
                .find(|c| &c.photo == p)
                .map(|c| c.file.clone())
                .unwrap_or_else(|| p.display().to_string());
            (*id, file)
        })
        .collect();
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => print_audit_named(&report, secs, &|id| {
            name.get(&id).cloned().unwrap_or_else(|| id.to_string())
        }),
    }
    for (id, why) in &report.unreadable {
        eprintln!(
            "warning: {} skipped: {why}",
            name.get(id).cloned().unwrap_or_else(|| id.to_string())
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_audit(report: &AuditReport, secs: f64) {
    print_audit_named(report, secs, &|id| id.to_string())
}

fn print_audit_named(report: &AuditReport, secs: f64, name: &dyn Fn(u32) -> String) {
    let photos: usize = report.groups.iter().map(|g| g.members.len()).sum();
    println!(
        "compared {} photos ({} pairs) in {:.1} s; same field when overlap similarity >= {:.2}",
        report.images_compared, report.pairs_compared, secs, report.config.min_similarity
    );
    println!(
        "{} groups of photos showing the same field ({} photos); {} with conflicting labels",
        report.groups.len(),
        photos,
        report.conflicts()
    );
    if report.groups.is_empty() {
        return;
    }
    println!();
    println!(
        "{:>5}  {:<28} {:<12} {:>10}  {:>11}  conflict",
        "group", "pair", "", "similarity", "shift px"
    );
    for (gi, g) in report.groups.iter().enumerate() {
        for (pi, p) in g.pairs.iter().enumerate() {
            let la = g.labels.get(&p.a).map(String::as_str).unwrap_or("");
            let lb = g.labels.get(&p.b).map(String::as_str).unwrap_or("");
            let show = |l: &str| {
                if l.is_empty() {
                    "unlabelled".to_string()
                } else {
                    l.to_string()
                }
            };
            println!(
                "{:>5}  {:>4} {:<23} {:>4} {:<23} {:>6.3}  {:>+5},{:>+4}  {}",
                if pi == 0 {
                    (gi + 1).to_string()
                } else {
                    String::new()
                },
                name(p.a),
                show(la),
                name(p.b),
                show(lb),
                p.similarity,
                p.dx,
                p.dy,
                if pi == 0 && g.conflict {
                    "CONFLICT"
                } else {
                    ""
                }
            );
        }
    }
}

/// Loads groups from `--groups FILE` or runs the audit; used by commands that split.
/// A lab's cells as a data set of the `--classes` given (default: every class of the labels),
/// and the groups a split keeps whole (the `group` column joined with near-duplicate photos).
pub fn cell_dataset(
    table: leuko::data::cells::CellTable,
    classes: Option<&str>,
    quiet: bool,
) -> anyhow::Result<(Dataset, std::collections::HashMap<u32, usize>)> {
    let classes = classes
        .map(|l| ClassSet::parse_list(l).context("--classes"))
        .transpose()?;
    let duplicates = cell_duplicates(&table, quiet)?;
    let origin = table.origin.clone();
    let ds = Dataset::from_cells(table, classes.as_ref())?;
    if let Some(c) = &classes {
        if let Some(missing) = c
            .labels()
            .iter()
            .find(|l| !ds.samples.iter().any(|s| s.label == **l))
        {
            anyhow::bail!(
                "--classes: no cell of {} is labelled {missing}",
                origin.display()
            );
        }
    }
    let groups = ds
        .cell_groups(duplicates.map(|r| r.group_of()).as_ref())
        .unwrap_or_default();
    Ok((ds, groups))
}

pub fn groups_for(
    dir: &DataDir,
    groups: Option<&std::path::Path>,
    quiet: bool,
) -> anyhow::Result<AuditReport> {
    Ok(match groups {
        Some(p) => AuditReport::read(p)?,
        None => audit(dir, &AuditConfig::default(), quiet)?,
    })
}
