//! One module per subcommand: argument struct (its doc comments are the `--help`
//! text) and a `run` function that calls into the library.

pub mod bench;
pub mod data;
pub mod isolate;
pub mod predict;
pub mod report;
pub mod serve;
pub mod split;
pub mod train;

use std::path::PathBuf;

/// Options shared by commands that read the BCCD data set.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// BCCD folder (labels.csv, JPEGImages/, Annotations/). Default: $LEUKO_DATA, else ../shared/data/bccd.
    #[arg(long, value_name = "DIR", global = true)]
    pub data: Option<PathBuf>,
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
