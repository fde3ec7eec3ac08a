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
//! checkpoint/     epoch-NNNNN/: the last epoch's weights, optimizer, best weights, averaged
//!                 epochs' weights and state, with a manifest of their checksums, for --resume
//! ```
//!
//! A checkpoint is one unit: its files are written into `epoch-NNNNN.partial/`, the manifest
//! last, and the folder is renamed into place; only then are older checkpoints removed. A kill
//! or a full disk at any moment leaves the previous complete checkpoint, and `--resume` checks
//! every file against the manifest before it uses one.

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

    fn checkpoints_dir(&self) -> PathBuf {
        self.root.join("checkpoint")
    }

    /// Saves one epoch's checkpoint as a unit (see the module documentation): `files` are
    /// (name, bytes) pairs, `state` the run's state.
    pub fn write_checkpoint<S: Serialize>(
        &self,
        epoch: usize,
        state: &S,
        files: &[(&str, &[u8])],
    ) -> Result<()> {
        let dir = self.checkpoints_dir();
        self.remove_partial_checkpoints()?;
        let partial = dir.join(format!("epoch-{epoch:05}.partial"));
        let done = dir.join(format!("epoch-{epoch:05}"));
        std::fs::create_dir_all(&partial).map_err(|e| LeukoError::io(&partial, e))?;
        let json =
            serde_json::to_vec_pretty(state).map_err(|e| LeukoError::Invalid(e.to_string()))?;
        let mut manifest = Manifest {
            epoch,
            files: Default::default(),
        };
        for (name, bytes) in files
            .iter()
            .copied()
            .chain([("state.json", json.as_slice())])
        {
            write_synced(&partial.join(name), bytes)?;
            fault_point();
            manifest.files.insert(
                name.to_string(),
                FileCheck {
                    bytes: bytes.len() as u64,
                    fnv1a64: format!("{:016x}", crate::model::file::fnv1a64(bytes)),
                },
            );
        }
        let m =
            serde_json::to_vec_pretty(&manifest).map_err(|e| LeukoError::Invalid(e.to_string()))?;
        write_synced(&partial.join(MANIFEST), &m)?;
        fault_point();
        if done.exists() {
            std::fs::remove_dir_all(&done).map_err(|e| LeukoError::io(&done, e))?;
        }
        std::fs::rename(&partial, &done).map_err(|e| LeukoError::io(&done, e))?;
        sync_dir(&dir);
        fault_point();
        // Older checkpoints, and the files of the earlier one-file-at-a-time layout.
        for (n, path) in self.checkpoint_dirs()? {
            if n != epoch {
                std::fs::remove_dir_all(&path).map_err(|e| LeukoError::io(&path, e))?;
            }
        }
        for old in ["last.leuko", "last.optim", "state.json", "average.bin"] {
            let _ = std::fs::remove_file(dir.join(old));
        }
        Ok(())
    }

    /// Removes half-written checkpoints and the temporary files of atomic writes (of a run
    /// killed while writing them); returns how many were removed.
    pub fn remove_partial_checkpoints(&self) -> Result<usize> {
        let mut n = 0;
        for dir in [self.checkpoints_dir(), self.root.clone()] {
            n += remove_partials_in(&dir)?;
        }
        Ok(n)
    }

    /// Complete checkpoint folders, newest first.
    fn checkpoint_dirs(&self) -> Result<Vec<(usize, PathBuf)>> {
        let dir = self.checkpoints_dir();
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(out);
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_prefix("epoch-")
                .and_then(|n| n.parse::<usize>().ok())
            {
                out.push((n, e.path()));
            }
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.0));
        Ok(out)
    }

    /// The newest checkpoint whose every file matches its manifest: its epoch, state and files
    /// by name, and the checkpoints skipped because they were damaged (newest first, with the
    /// reason). `None` when the run directory holds no checkpoint.
    #[allow(clippy::type_complexity)]
    pub fn read_checkpoint<S: DeserializeOwned>(
        &self,
    ) -> Result<Option<(Checkpoint<S>, Vec<(PathBuf, String)>)>> {
        let mut skipped = Vec::new();
        for (_, path) in self.checkpoint_dirs()? {
            match read_unit::<S>(&path) {
                Ok(c) => return Ok(Some((c, skipped))),
                Err(why) => skipped.push((path, why)),
            }
        }
        if !skipped.is_empty() {
            return Err(LeukoError::Invalid(format!(
                "{}: no complete checkpoint to resume from ({}); start the run afresh",
                self.checkpoints_dir().display(),
                skipped
                    .iter()
                    .map(|(p, why)| format!("{}: {why}", p.display()))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        Ok(None)
    }
}

fn remove_partials_in(dir: &Path) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name.ends_with(".partial") && path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(|err| LeukoError::io(&path, err))?;
            n += 1;
        } else if name.starts_with('.') && name.ends_with(".tmp") {
            std::fs::remove_file(&path).map_err(|err| LeukoError::io(&path, err))?;
            n += 1;
        }
    }
    Ok(n)
}

/// A checkpoint read back and verified.
#[derive(Debug)]
pub struct Checkpoint<S> {
    pub epoch: usize,
    pub state: S,
    pub files: std::collections::BTreeMap<String, Vec<u8>>,
}

const MANIFEST: &str = "manifest.json";

#[derive(Debug, Serialize, serde::Deserialize)]
struct Manifest {
    epoch: usize,
    files: std::collections::BTreeMap<String, FileCheck>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
struct FileCheck {
    bytes: u64,
    fnv1a64: String,
}

fn read_unit<S: DeserializeOwned>(dir: &Path) -> std::result::Result<Checkpoint<S>, String> {
    let m = std::fs::read(dir.join(MANIFEST)).map_err(|e| format!("no manifest: {e}"))?;
    let manifest: Manifest =
        serde_json::from_slice(&m).map_err(|e| format!("damaged manifest: {e}"))?;
    let mut files = std::collections::BTreeMap::new();
    for (name, check) in &manifest.files {
        let bytes = std::fs::read(dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
        let sum = format!("{:016x}", crate::model::file::fnv1a64(&bytes));
        if bytes.len() as u64 != check.bytes || sum != check.fnv1a64 {
            return Err(format!("{name} does not match the manifest"));
        }
        files.insert(name.clone(), bytes);
    }
    let state_bytes = files
        .remove("state.json")
        .ok_or_else(|| "no state.json".to_string())?;
    let state = serde_json::from_slice(&state_bytes).map_err(|e| format!("state.json: {e}"))?;
    Ok(Checkpoint {
        epoch: manifest.epoch,
        state,
        files,
    })
}

/// Writes `bytes` to `path` and flushes them to the disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| LeukoError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| LeukoError::io(path, e))
}

/// Flushes a folder's entries (a rename into it) to the disk, where the platform allows.
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// For the fault-injection test: with `LEUKO_FAULT_AT_CHECKPOINT_STEP=K`, the process stops at
/// once (exit status 137, nothing more written) at the K-th step of writing checkpoints (each
/// file, the manifest and the rename are steps), as a power cut or `kill -9` would stop it.
fn fault_point() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static STEP: AtomicUsize = AtomicUsize::new(0);
    let Some(k) = std::env::var("LEUKO_FAULT_AT_CHECKPOINT_STEP")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    if STEP.fetch_add(1, Ordering::SeqCst) + 1 == k {
        std::process::exit(137);
    }
}
