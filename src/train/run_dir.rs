//! The run directory: everything one training run leaves behind.
//!
//! ```text
//! config.toml     the exact experiment config used
//! split.json      the split trained and tested on
//! model.leuko     best weights so far (written on each improvement)
//! history.csv     per epoch: losses, accuracy, kappa, learning rate, seconds
//! metrics.json    test metrics of the best epoch
//! curves.png      loss and kappa per epoch
//! confusion.png   test confusion matrix
//! test-errors.png the misclassified test photos' crops, true / predicted class, confidence
//! augmented.png   examples of augmented training inputs (when augmenting)
//! checkpoint/     last epoch's weights, optimizer and state (and the averaged epochs' weights), for --resume
//! ```

use crate::error::{LeukoError, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(self.root.join("checkpoint"))
            .map_err(|e| LeukoError::io(&self.root, e))
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn split(&self) -> PathBuf {
        self.root.join("split.json")
    }
    pub fn model(&self) -> PathBuf {
        self.root.join("model.leuko")
    }
    pub fn history(&self) -> PathBuf {
        self.root.join("history.csv")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.json")
    }
    pub fn curves(&self) -> PathBuf {
        self.root.join("curves.png")
    }
    pub fn confusion(&self) -> PathBuf {
        self.root.join("confusion.png")
    }
    pub fn test_errors(&self) -> PathBuf {
        self.root.join("test-errors.png")
    }
    pub fn augment_grid(&self) -> PathBuf {
        self.root.join("augmented.png")
    }
    fn checkpoint(&self, name: &str) -> PathBuf {
        self.root.join("checkpoint").join(name)
    }

    /// Saves the last epoch's state. The state file is written last, so a crash
    /// in between leaves the previous, consistent checkpoint in place.
    pub fn write_resume<S: Serialize>(&self, state: &S, model: &[u8], optim: &[u8]) -> Result<()> {
        crate::fsutil::write_atomic(&self.checkpoint("last.leuko"), model)?;
        crate::fsutil::write_atomic(&self.checkpoint("last.optim"), optim)?;
        let json =
            serde_json::to_vec_pretty(state).map_err(|e| LeukoError::Invalid(e.to_string()))?;
        crate::fsutil::write_atomic(&self.checkpoint("state.json"), &json)
    }

    /// The weights of the epochs `[train] average_epochs` averages, saved before the state.
    pub fn average_checkpoint(&self) -> PathBuf {
        self.checkpoint("average.bin")
    }

    /// The saved state, model and optimizer bytes; `None` when nothing was saved.
    #[allow(clippy::type_complexity)]
    pub fn read_resume<S: DeserializeOwned>(&self) -> Result<Option<(S, Vec<u8>, Vec<u8>)>> {
        let state_path = self.checkpoint("state.json");
        if !state_path.exists() {
            return Ok(None);
        }
        let text = std::fs::read(&state_path).map_err(|e| LeukoError::io(&state_path, e))?;
        let state = serde_json::from_slice(&text).map_err(|e| LeukoError::Json {
            path: state_path.clone(),
            message: format!("corrupt checkpoint state: {e}"),
        })?;
        let read = |p: PathBuf| std::fs::read(&p).map_err(|e| LeukoError::io(&p, e));
        Ok(Some((
            state,
            read(self.checkpoint("last.leuko"))?,
            read(self.checkpoint("last.optim"))?,
        )))
    }
}
