//! Training a classifier: Adam with exponential learning-rate decay, shuffled and
//! optionally oversampled / augmented batches, early stopping on validation loss
//! with the best weights restored, checkpoints written atomically, `--resume`.

pub mod average;
pub mod config;
pub mod plots;
mod run;
pub mod run_dir;

pub use run::{
    check_resumable, prepare, started_with, train, Prepared, Run, RunMetrics, Silent, TrainEvent,
    TrainObserver,
};

use crate::data::ClassLabel;
use crate::error::{LeukoError, Result};
use crate::metrics::Metrics;
use crate::model::file::ModelMeta;
use crate::model::LeukoNet;
use crate::preprocess::{images_tensor, plain_batch, InputSet};
use burn::tensor::Device;
use image::RgbImage;
pub use run_dir::RunDir;
use serde::{Deserialize, Serialize};

/// One row of `history.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub train_kappa: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_kappa: f64,
    pub learning_rate: f64,
    pub seconds: f64,
}

/// How a training run is carried out (not what is trained: that is the config).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub run_dir: RunDir,
    /// Continue an interrupted run in `run_dir`.
    pub resume: bool,
    /// No progress bars or per-epoch lines.
    pub quiet: bool,
    /// Batch size for evaluation passes.
    pub eval_batch: usize,
    /// Start from this model's weights instead of fresh ones (fine-tuning).
    pub init: Option<InitModel>,
}

/// A model file a run starts from (`leuko train --init`).
#[derive(Debug, Clone)]
pub struct InitModel {
    /// "embedded default model" or the file's path.
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The result of a finished run.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub model: LeukoNet,
    pub meta: ModelMeta,
    pub history: Vec<EpochRecord>,
    pub best_epoch: usize,
    /// Wall time of the training epochs (not counting input preparation).
    pub train_seconds: f64,
    /// Test metrics with the model's class prior applied (as `predict` classifies); `None`
    /// when the split has no test part.
    pub test: Option<Metrics>,
    /// Test metrics of the raw balanced outputs, when a prior was recorded.
    pub test_flat: Option<Metrics>,
    pub param_count: usize,
}

/// State saved after every epoch so that `--resume` can continue.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ResumeState {
    epochs_done: usize,
    steps_done: usize,
    best_epoch: usize,
    best_val_loss: f64,
    since_best: usize,
    train_seconds: f64,
    history: Vec<EpochRecord>,
    /// Epochs in the weight window (`[train] average_epochs`).
    #[serde(default)]
    averaged: usize,
}

/// The CPU training device (flex backend with autodiff).
pub fn training_device() -> Device {
    Device::flex().autodiff()
}

/// Replaces the batch-norm running statistics by their exact average over
/// `batches` training batches under the current weights ("precise BN").
///
/// With 10-15 optimizer steps per epoch the exponential running averages mix
/// statistics of weights that no longer exist, and eval-mode predictions can
/// collapse to one class (the Keras twin's finding). Averaging fresh batch
/// statistics (momentum 1/k for the k-th batch) removes that lag; the weights are
/// untouched and the usual momentum is restored afterwards.
pub fn recalibrate(
    model: LeukoNet,
    set: &InputSet,
    order: &[usize],
    batch: usize,
    batches: usize,
    device: &Device,
) -> LeukoNet {
    if batches == 0 || order.is_empty() {
        return model;
    }
    let momentum = model.bn_momentum();
    let mut model = model;
    let (w, h) = (set.images[0].width(), set.images[0].height());
    for (k, chunk) in order.chunks(batch.max(1)).take(batches).enumerate() {
        model = model.with_bn_momentum(1.0 / (k as f64 + 1.0));
        let imgs: Vec<&RgbImage> = chunk.iter().map(|&i| &set.images[i]).collect();
        let x = images_tensor(plain_batch(&imgs), imgs.len(), w, h, device);
        // Train-mode forward updates the running statistics; the output (and its graph) is dropped.
        drop(model.forward(x));
    }
    model.with_bn_momentum(momentum)
}

fn write_history(rd: &RunDir, history: &[EpochRecord]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in history {
        w.serialize(r)
            .map_err(|e| LeukoError::Invalid(e.to_string()))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| LeukoError::Invalid(e.to_string()))?;
    crate::fsutil::write_atomic(&rd.history(), &bytes)
}

/// The class labels of a model's outputs.
pub fn class_names(classes: &[ClassLabel]) -> Vec<String> {
    classes.iter().map(|c| c.to_string()).collect()
}
