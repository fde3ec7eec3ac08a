//! One module per subcommand: argument struct (its doc comments are the `--help`
//! text) and a `run` function that calls into the library.

pub mod bench;
pub mod data;
pub mod isolate;
pub mod predict;
pub mod profile;
pub mod report;
pub mod serve;
pub mod split;
pub mod train;

use std::path::PathBuf;

/// Options shared by commands that read a data set.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// The labelled data: a labels CSV (file,class[,x_min,y_min,x_max,y_max][,group]), a folder
    /// of class folders (DIR/<class>/*.jpg), or the BCCD folder (labels.csv, JPEGImages/,
    /// Annotations/). Default: $LEUKO_DATA, else ../shared/data/bccd.
    #[arg(long, value_name = "PATH", global = true)]
    pub data: Option<PathBuf>,
    /// What --data is (default: detected: a file is a labels CSV, a folder with JPEGImages/ is
    /// BCCD, any other folder holds class folders).
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        value_name = "KIND",
        global = true
    )]
    pub data_format: Option<leuko::data::cells::SourceKind>,
}

/// A data set as `--data` names it.
pub enum Source {
    Bccd(leuko::data::DataDir),
    Cells(leuko::data::cells::CellTable),
}

impl DataArgs {
    /// Reads `--data` as its kind says. Rows of a cell table that cannot be used are printed on
    /// stderr (unless `quiet`), with their line and reason.
    pub fn source(&self, quiet: bool) -> anyhow::Result<Source> {
        use leuko::data::cells::{detect_kind, read_class_folders, read_labels_csv, SourceKind};
        let Some(path) = self.data.as_deref() else {
            if let Some(SourceKind::Csv | SourceKind::Folders) = self.data_format {
                anyhow::bail!("--data-format needs --data PATH");
            }
            return Ok(Source::Bccd(leuko::data::DataDir::resolve(None)?));
        };
        if !path.exists() {
            anyhow::bail!("--data {}: no such file or folder", path.display());
        }
        let table = match self.data_format.unwrap_or_else(|| detect_kind(path)) {
            SourceKind::Bccd => {
                return Ok(Source::Bccd(leuko::data::DataDir::resolve(Some(path))?))
            }
            SourceKind::Csv => read_labels_csv(path)?,
            SourceKind::Folders => read_class_folders(path)?,
        };
        if !quiet && !table.problems.is_empty() {
            eprintln!(
                "{}: {} left out:",
                path.display(),
                count(table.problems.len(), "row or file", "rows or files")
            );
            const SHOWN: usize = 10;
            for p in table.problems.iter().take(SHOWN) {
                eprintln!("  {}: {}", p.place, p.message);
            }
            if table.problems.len() > SHOWN {
                eprintln!(
                    "  ... and {} more (`leuko data --data {}` lists them all)",
                    table.problems.len() - SHOWN,
                    path.display()
                );
            }
        }
        if table.cells.is_empty() {
            anyhow::bail!("{}: no usable labelled cell", path.display());
        }
        Ok(Source::Cells(table))
    }
}

/// Output format of reports printed to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// Inputs that name no photo at all (an empty folder, a folder of other files): an error
/// with exit code 2, like unreadable inputs, so that a script does not take it for success.
#[derive(Debug)]
pub struct NoPhotos(pub String);

impl std::fmt::Display for NoPhotos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoPhotos {}

/// The photos of `inputs` (see [`leuko::data::photos::collect_photos`]), or [`NoPhotos`]
/// when they name none and nothing went wrong reading them.
pub fn photos_of(inputs: &[PathBuf]) -> anyhow::Result<Vec<Result<PathBuf, (PathBuf, String)>>> {
    let found = leuko::data::photos::collect_photos(inputs);
    if found.is_empty() && !inputs.is_empty() {
        return Err(NoPhotos(leuko::data::photos::no_photos_message(inputs)).into());
    }
    Ok(found)
}

pub use leuko::report::count;
