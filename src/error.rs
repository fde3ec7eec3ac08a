//! Typed errors of the library. Every variant that concerns a file names it,
//! so that the message alone tells a person what to fix.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = LeukoError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum LeukoError {
    #[error("{0}")]
    DataNotFound(String),

    /// The OS error is part of the message and not also a `source` (a field of that name would
    /// be one): error chains printed with `{:#}` would otherwise say it twice.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// A malformed row of a CSV file; `line` is 1-based as an editor shows it.
    #[error("{path}, line {line}: {message}")]
    CsvRow {
        path: PathBuf,
        line: u64,
        message: String,
    },

    #[error("{path}: {message}")]
    Csv { path: PathBuf, message: String },

    #[error("{path}: malformed VOC annotation: {message}")]
    Voc { path: PathBuf, message: String },

    #[error("{path}: cannot read image: {message}")]
    Image { path: PathBuf, message: String },

    #[error("{path}: invalid split file: {message}")]
    Split { path: PathBuf, message: String },

    #[error("{path}: {message}")]
    Json { path: PathBuf, message: String },

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("{0}")]
    Invalid(String),
}

impl LeukoError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LeukoError::Io {
            path: path.into(),
            error: source,
        }
    }
}
