//! `leuko split`.

use super::data::{cell_dataset, groups_for, parse_classes};
use super::DataArgs;
use leuko::data::{class_counts, Dataset};
use leuko::split::{make_folds, make_split, Split};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Stratified by class, grouped by near-duplicates (see `leuko data audit`), seeded:
/// 25% test, then 80% train / 20% validation of the rest.
#[derive(Debug, clap::Args)]
pub struct SplitArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Seed of every random choice; the same seed gives a byte-identical file.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where to write the split (with --folds: FILE-fold1.json ... FILE-foldK.json).
    #[arg(long, default_value = "split.json", value_name = "FILE")]
    pub out: PathBuf,
    /// Make K cross-validation folds instead of one split.
    #[arg(long, value_name = "K")]
    pub folds: Option<usize>,
    /// Classes, comma-separated (default: BCCD's four trainable ones; for a labels CSV or class
    /// folders, every class of the labels).
    #[arg(long, value_name = "LIST")]
    pub classes: Option<String>,
    /// Near-duplicate groups from `leuko data audit --out` (default: run the audit now).
    #[arg(long, value_name = "groups.json")]
    pub groups: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `split.json` + fold 3 → `split-fold3.json`.
pub fn fold_path(out: &Path, fold: usize) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "split".into());
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "json".into());
    out.with_file_name(format!("{stem}-fold{fold}.{ext}"))
}

pub fn run(a: SplitArgs) -> anyhow::Result<ExitCode> {
    let (ds, group_of) = match a.data.source(a.quiet)? {
        super::Source::Bccd(dir) => {
            let classes = parse_classes(a.classes.as_deref())?;
            let ds = Dataset::load(&dir, &classes)?;
            let report = groups_for(&dir, a.groups.as_deref(), a.quiet)?;
            (ds, report.group_of())
        }
        super::Source::Cells(table) => {
            if a.groups.is_some() {
                anyhow::bail!(
                    "--groups reads BCCD's audit; a labels CSV or class folders are grouped by \
                     their `group` column and their own near-duplicate photos"
                );
            }
            cell_dataset(table, a.classes.as_deref(), a.quiet)?
        }
    };
    let classes = ds.classes.clone();
    let groups = {
        let mut g: Vec<usize> = group_of.values().copied().collect();
        g.sort_unstable();
        g.dedup();
        g.len()
    };
    let splits: Vec<(PathBuf, Split)> = match a.folds {
        None => vec![(a.out.clone(), make_split(&ds, &group_of, a.seed))],
        Some(k) => make_folds(&ds, &group_of, a.seed, k)?
            .into_iter()
            .enumerate()
            .map(|(i, s)| (fold_path(&a.out, i + 1), s))
            .collect(),
    };
    println!(
        "{} samples, {} groups kept whole, seed {}",
        ds.samples.len(),
        groups,
        a.seed
    );
    for (path, split) in &splits {
        split.write_for(path, &ds.source)?;
        println!("\n{}", path.display());
        print!("{:<6}", "part");
        for c in classes.labels() {
            print!(" {:>11}", c.as_str());
        }
        println!(" {:>6}", "total");
        for (name, part) in [
            ("train", &split.train),
            ("val", &split.val),
            ("test", &split.test),
        ] {
            print!("{name:<6}");
            for (_, n) in class_counts(part, &classes) {
                print!(" {n:>11}");
            }
            println!(" {:>6}", part.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}
