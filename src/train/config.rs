//! Experiment configuration (`experiments/*.toml`): what goes into the network,
//! its shape, and how it is trained. The run directory keeps the exact config used.

use crate::augment::AugmentConfig;
use crate::error::{LeukoError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use crate::preprocess::InputConfig;

/// The network's shape (the class count comes from the data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    pub blocks: Vec<usize>,
    #[serde(default = "crate::model::default_dropout")]
    pub dropout: f64,
    /// Batch-norm momentum, burn convention (0.1 = Keras 0.9).
    #[serde(default = "crate::model::default_bn_momentum")]
    pub bn_momentum: f64,
    #[serde(default = "crate::model::default_bn_epsilon")]
    pub bn_epsilon: f64,
}

/// Optimiser and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// Upper bound on epochs; early stopping usually ends sooner.
    pub epochs: usize,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Adam's initial learning rate.
    #[serde(default = "d_lr")]
    pub learning_rate: f64,
    /// Exponential decay: the rate is multiplied by `lr_decay_rate` every
    /// `lr_decay_steps` optimizer steps (smoothly, per step, as Keras ExponentialDecay).
    #[serde(default = "d_decay_rate")]
    pub lr_decay_rate: f64,
    #[serde(default = "d_decay_steps")]
    pub lr_decay_steps: usize,
    /// Epochs without a better validation loss before stopping.
    pub patience: usize,
    /// Balance classes in training by random oversampling up to the largest class.
    #[serde(default)]
    pub oversample: bool,
    /// After each epoch, recompute the batch-norm running statistics exactly over
    /// this many training batches (0 = keep the exponential running averages).
    #[serde(default)]
    pub precise_bn_batches: usize,
    /// Keep the mean of the weights of the last this many epochs run (up to the budget or
    /// the early stop) instead of the epoch with the lowest validation loss (stochastic
    /// weight averaging), with the batch-norm statistics recomputed over all training
    /// batches; 0 = off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub average_epochs: usize,
    /// Label smoothing of the training loss: targets put `1 - s` on the label and
    /// spread `s` over all classes; 0 = plain cross-entropy. Validation loss (early
    /// stopping) stays plain.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub label_smoothing: f64,
    /// At most this many training images (epochs x inputs per epoch, oversampling included):
    /// fewer epochs than `epochs` on a large set, so that fine-tuning on a few hundred cells
    /// stays within minutes. 0 = no limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_images: usize,
}

impl TrainParams {
    /// The epochs a run over `per_epoch` inputs trains: `epochs`, capped by `max_images`.
    pub fn epochs_for(&self, per_epoch: usize) -> usize {
        if self.max_images == 0 || per_epoch == 0 {
            return self.epochs;
        }
        self.epochs.min((self.max_images / per_epoch).max(1))
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

fn d_batch() -> usize {
    32
}
fn d_lr() -> f64 {
    1e-3
}
fn d_decay_rate() -> f64 {
    0.9
}
fn d_decay_steps() -> usize {
    100
}

/// One experiment of the case study (or any user-defined one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    pub name: String,
    /// Seed of every random choice (split, shuffling, oversampling, augmentation, initialisation).
    #[serde(default = "d_seed")]
    pub seed: u64,
    pub input: InputConfig,
    pub net: NetSpec,
    pub train: TrainParams,
    /// Augmentation of training batches; absent = none.
    #[serde(default)]
    pub augment: Option<AugmentConfig>,
}

fn d_seed() -> u64 {
    42
}

impl ExperimentConfig {
    /// Reads and validates a TOML config; errors name the file and the field.
    pub fn read(path: &Path) -> Result<ExperimentConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| LeukoError::io(path, e))?;
        Self::parse(&text).map_err(|e| LeukoError::Config(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> std::result::Result<ExperimentConfig, String> {
        let cfg: ExperimentConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as TOML (the run directory's `config.toml`).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self)
            .map_err(|e| LeukoError::Config(format!("cannot write the config as TOML: {e}")))
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let (w, h) = self.input.dims();
        self.input.validate()?;
        let min = 1u32 << self.net.blocks.len().min(31);
        if w < min || h < min {
            return Err(format!(
                "input {w}x{h} is too small for {} blocks (each halves the size)",
                self.net.blocks.len()
            ));
        }
        self.net_config(2).validate()?;
        let t = &self.train;
        if t.epochs == 0 {
            return Err("train.epochs must be at least 1".into());
        }
        if t.batch_size == 0 {
            return Err("train.batch_size must be at least 1".into());
        }
        if !(t.learning_rate > 0.0 && t.learning_rate.is_finite()) {
            return Err(format!(
                "train.learning_rate must be positive, got {}",
                t.learning_rate
            ));
        }
        if !(t.lr_decay_rate > 0.0 && t.lr_decay_rate <= 1.0) {
            return Err(format!(
                "train.lr_decay_rate must be in (0, 1], got {}",
                t.lr_decay_rate
            ));
        }
        if t.lr_decay_steps == 0 {
            return Err("train.lr_decay_steps must be at least 1".into());
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            return Err(format!(
                "train.label_smoothing must be in [0, 1), got {}",
                t.label_smoothing
            ));
        }
        if let Some(a) = &self.augment {
            a.validate()?;
        }
        Ok(())
    }

    /// The network for `num_classes` classes.
    pub fn net_config(&self, num_classes: usize) -> crate::model::NetConfig {
        crate::model::NetConfig {
            blocks: self.net.blocks.clone(),
            num_classes,
            dropout: self.net.dropout,
            bn_momentum: self.net.bn_momentum,
            bn_epsilon: self.net.bn_epsilon,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name = "t"
[input]
kind = "crop"
size = 128
[net]
blocks = [16, 32]
[train]
epochs = 3
patience = 2
"#;

    #[test]
    fn parses_with_defaults() {
        let c = ExperimentConfig::parse(OK).unwrap();
        assert_eq!(c.train.batch_size, 32);
        assert_eq!(c.net.bn_momentum, 0.1);
        assert_eq!(c.seed, 42);
        assert!(c.augment.is_none());
        let again = ExperimentConfig::parse(&c.to_toml().unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn unknown_fields_and_impossible_values_are_clear_errors() {
        let e = ExperimentConfig::parse(&OK.replace("patience = 2", "patience = 2\nwarp = 9"))
            .unwrap_err();
        assert!(e.contains("warp"), "{e}");
        let e = ExperimentConfig::parse(&OK.replace("[16, 32]", "[]")).unwrap_err();
        assert!(e.contains("at least one block"), "{e}");
        let e = ExperimentConfig::parse(&OK.replace("size = 128", "size = 0")).unwrap_err();
        assert!(e.contains("input size must be 8-1024"), "{e}");
        let e = ExperimentConfig::parse(&OK.replace("size = 128", "size = 20000")).unwrap_err();
        assert!(e.contains("input size must be 8-1024"), "{e}");
        let e = ExperimentConfig::parse(&OK.replace("epochs = 3", "epochs = 0")).unwrap_err();
        assert!(e.contains("epochs"), "{e}");
        let e = ExperimentConfig::parse(
            &OK.replace("size = 128", "size = 128\nnormalise_stain = true"),
        )
        .unwrap_err();
        assert!(
            e.contains("normalise_stain needs input.white_balance"),
            "{e}"
        );
        let ok = OK.replace(
            "size = 128",
            "size = 128\nwhite_balance = true\nnormalise_stain = true",
        );
        assert!(ExperimentConfig::parse(&ok)
            .unwrap()
            .input
            .normalise_stain());
        let e = ExperimentConfig::parse(
            &OK.replace("patience = 2", "patience = 2\nlabel_smoothing = 1.0"),
        )
        .unwrap_err();
        assert!(e.contains("label_smoothing"), "{e}");
        let e = ExperimentConfig::parse(&format!("{OK}[augment]\nmixup = -0.5\n")).unwrap_err();
        assert!(e.contains("augment.mixup"), "{e}");
    }

    #[test]
    fn every_committed_experiment_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let c = ExperimentConfig::read(&path).unwrap();
                assert_eq!(
                    path.file_stem().unwrap().to_str().unwrap(),
                    c.name,
                    "{}: name should match the file (runs/<name>-<seed>)",
                    path.display()
                );
                n += 1;
            }
        }
        assert!(n >= 6, "found {n} configs");
    }

    #[test]
    fn max_images_caps_the_epochs_of_large_sets_only() {
        let mut t = ExperimentConfig::parse(OK).unwrap().train;
        t.epochs = 100;
        assert_eq!(t.epochs_for(240), 100);
        t.max_images = 9000;
        assert_eq!(t.epochs_for(80), 100);
        assert_eq!(t.epochs_for(240), 37);
        assert_eq!(t.epochs_for(20_000), 1);
    }
}
