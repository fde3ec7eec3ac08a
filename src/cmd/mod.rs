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
