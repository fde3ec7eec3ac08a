//! From network inputs to class probabilities: the views the network sees, the class prior
//! applied to its outputs, and the confidence below which a call goes to review. Training
//! (validation, the review threshold it records) and prediction share exactly this code.

use crate::error::{LeukoError, Result};
use crate::model::file::ModelMeta;
use crate::model::LeukoNet;
use crate::preprocess::{images_tensor, plain_batch, InputSet};
use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Confidence threshold used when a model file records none.
pub const DEFAULT_REVIEW_THRESHOLD: f32 = 0.7;

/// Review threshold rule (see [`choose_review_threshold`]): the cells
/// left unflagged should be at least 95% right on validation data, flagging at most a
/// quarter of them.
pub const REVIEW_TARGET_ACCURACY: f64 = 0.95;
pub const REVIEW_MAX_FLAGGED: f64 = 0.25;
/// The chosen threshold never goes below this: a validation part of some fifty
/// photos can be right on nearly every cell (then the rule above flags
/// nothing), which says little about smears the model has never seen.
pub const MIN_REVIEW_THRESHOLD: f32 = DEFAULT_REVIEW_THRESHOLD;

/// Which views of each input the network sees at prediction time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Views {
    /// The input as it is (fastest).
    #[default]
    Single,
    /// Test-time augmentation: the probabilities averaged over the input's
    /// flips and, for square inputs, its 90° rotations (8 views; 4 for
    /// non-square whole photos). Training augments with exactly these
    /// symmetries, so each view is a valid input; the average is steadier on
    /// borderline cells, at 8x the network's cost.
    Dihedral,
}

/// Which class frequencies a model's probabilities assume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Prior {
    /// The training photos' class frequencies, recorded in the model file.
    /// A network trained on an oversampled, balanced set estimates
    /// p(type | cell) as if every type were equally common; multiplying by
    /// the real frequencies (Bayes' rule) gives the posterior for samples
    /// like the training ones, and stops rare-but-oversampled types from
    /// taking borderline cells of common ones.
    #[default]
    Data,
    /// Every type equally likely a priori: the balanced network's outputs as
    /// they are (higher recall of rare types, lower accuracy on typical samples).
    Flat,
}

impl Prior {
    /// The class weights to apply for a model, if any.
    pub fn weights(self, meta: &ModelMeta) -> Option<&[f32]> {
        match self {
            Prior::Data => meta.class_prior.as_deref(),
            Prior::Flat => None,
        }
    }
}

/// Re-weights each probability vector by `prior` and renormalises it.
pub fn apply_prior(probs: &mut [Vec<f32>], prior: Option<&[f32]>) {
    let Some(prior) = prior else { return };
    for p in probs {
        let total: f32 = p.iter().zip(prior).map(|(a, b)| a * b).sum();
        if total > 0.0 && total.is_finite() {
            for (a, b) in p.iter_mut().zip(prior) {
                *a = *a * b / total;
            }
        }
    }
}

/// Class frequencies of a set's labels over `k` classes.
pub fn label_frequencies(labels: &[usize], k: usize) -> Vec<f32> {
    let mut counts = vec![0f32; k];
    for &l in labels {
        if l < k {
            counts[l] += 1.0;
        }
    }
    let n = labels.len().max(1) as f32;
    counts.iter().map(|c| c / n).collect()
}

/// Class probabilities for each image, in eval mode (no autodiff graph kept).
pub fn predict_probs(
    model: &LeukoNet,
    images: &[&RgbImage],
    batch: usize,
    views: Views,
) -> Result<Vec<Vec<f32>>> {
    predict_probs_valid(&model.valid(), images, batch, views)
}

/// [`predict_probs`] for a model already in eval mode (`model.valid()`), so
/// that repeated calls do not copy it.
pub fn predict_probs_valid(
    model: &LeukoNet,
    images: &[&RgbImage],
    batch: usize,
    views: Views,
) -> Result<Vec<Vec<f32>>> {
    let device = Device::flex();
    let mut out = Vec::with_capacity(images.len());
    // All views of a chunk go through the network together; keep that batch
    // (and its activations) as large as a single-view one.
    let per_chunk = match views {
        Views::Single => batch.max(1),
        Views::Dihedral => (batch / 8).max(1),
    };
    for chunk in images.chunks(per_chunk) {
        let (w, h) = (chunk[0].width(), chunk[0].height());
        let x = images_tensor(plain_batch(chunk), chunk.len(), w, h, &device);
        let probs = match views {
            Views::Single => softmax(model.forward(x), 1),
            Views::Dihedral => {
                let mut inputs = vec![x.clone(), x.clone().flip([3]), x.clone().flip([2])];
                inputs.push(x.clone().flip([2, 3]));
                if w == h {
                    let t = x.swap_dims(2, 3);
                    inputs.extend([
                        t.clone().flip([3]),
                        t.clone().flip([2]),
                        t.clone().flip([2, 3]),
                    ]);
                    inputs.push(t);
                }
                let n = inputs.len();
                // One forward over all views: batch statistics are not used in
                // eval mode, so stacking them changes nothing but speed.
                let logits = model.forward(Tensor::cat(inputs, 0));
                let p = softmax(logits, 1);
                let k = p.dims()[1];
                p.reshape([n, chunk.len(), k])
                    .mean_dim(0)
                    .reshape([chunk.len(), k])
            }
        };
        let k = probs.dims()[1];
        let v = tensor_to_vec(probs)?;
        out.extend(v.chunks(k).map(|c| c.to_vec()));
    }
    Ok(out)
}

/// One probability per class.
pub type Probabilities = Vec<f32>;
/// The pooled network features of one input ([`LeukoNet::forward_with_features`]).
pub type Features = Vec<f32>;

/// [`predict_probs_valid`], also returning each image's pooled network features
/// ([`LeukoNet::forward_with_features`], from the single view), which
/// [`crate::familiar`] compares with the training photos'.
pub fn predict_probs_and_features(
    model: &LeukoNet,
    images: &[&RgbImage],
    batch: usize,
    views: Views,
) -> Result<(Vec<Probabilities>, Vec<Features>)> {
    let device = Device::flex();
    let mut probs = Vec::with_capacity(images.len());
    let mut features = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch.max(1)) {
        let (w, h) = (chunk[0].width(), chunk[0].height());
        let x = images_tensor(plain_batch(chunk), chunk.len(), w, h, &device);
        let (logits, pooled) = model.forward_with_features(x);
        let c = pooled.dims()[1];
        let f = tensor_to_vec(pooled)?;
        features.extend(f.chunks(c.max(1)).map(|c| c.to_vec()));
        if views == Views::Single {
            let p = softmax(logits, 1);
            let k = p.dims()[1];
            let v = tensor_to_vec(p)?;
            probs.extend(v.chunks(k.max(1)).map(|c| c.to_vec()));
        }
    }
    if views != Views::Single {
        probs = predict_probs_valid(model, images, batch, views)?;
    }
    Ok((probs, features))
}

/// Measures `photo` as [`crate::familiar::Familiarity`] compares photos, with the isolation and
/// crops the model records (as prediction sees the photo).
pub fn measure_photo(
    model: &LeukoNet,
    meta: &ModelMeta,
    photo: &RgbImage,
) -> Result<crate::familiar::PhotoMeasure> {
    let look = crate::familiar::photo_look(photo);
    let Some(crop) = meta.input.crop_config() else {
        return Ok(crate::familiar::PhotoMeasure {
            look,
            cell_features: Vec::new(),
        });
    };
    let (_, crops) =
        crate::preprocess::cell_inputs(photo, &meta.isolation, &crop, &meta.input, 1.0);
    let refs: Vec<&RgbImage> = crops.iter().collect();
    let cell_features = if refs.is_empty() {
        Vec::new()
    } else {
        predict_probs_and_features(model, &refs, 32, Views::Single)?.1
    };
    Ok(crate::familiar::PhotoMeasure {
        look,
        cell_features,
    })
}

/// Photos profiled per part at most (evenly spaced): the profile's medians are steady long
/// before, and a large data set should not add minutes to training.
pub const MAX_PROFILED_PHOTOS: usize = 600;

/// The photos of `samples`, each once, in order.
pub fn photos_of(
    source: &crate::data::PhotoSource,
    samples: &[crate::data::Sample],
) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    samples
        .iter()
        .map(|s| source.photo_path(s.image_id))
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

/// What the `train` photos look like, with thresholds chosen on the `held_out` ones
/// ([`crate::familiar::Familiarity::fit`]); `None` without training photos.
pub fn profile(
    model: &LeukoNet,
    meta: &ModelMeta,
    train: &[PathBuf],
    held_out: &[PathBuf],
    quiet: bool,
) -> Result<Option<crate::familiar::Familiarity>> {
    let model = model.valid();
    let pick = |paths: &[PathBuf]| -> Vec<PathBuf> {
        let n = paths.len();
        let k = n.min(MAX_PROFILED_PHOTOS);
        (0..k).map(|i| paths[i * n / k.max(1)].clone()).collect()
    };
    let (train, held_out) = (pick(train), pick(held_out));
    let bar = crate::progress::bar(
        (train.len() + held_out.len()) as u64,
        "profiling photos",
        quiet,
    );
    let measure = |paths: &[PathBuf]| -> Result<Vec<crate::familiar::PhotoMeasure>> {
        paths
            .iter()
            .map(|p| {
                let photo = crate::imageio::load_rgb(p)?;
                bar.inc(1);
                measure_photo(&model, meta, &photo)
            })
            .collect()
    };
    let train = measure(&train)?;
    let held_out = measure(&held_out)?;
    bar.finish_and_clear();
    Ok(crate::familiar::Familiarity::fit(&train, &held_out))
}

pub(crate) fn tensor_to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| LeukoError::Invalid(format!("reading a tensor: {e:?}")))
}

pub fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
        .0
}

/// Mean cross-entropy and predictions of a model on a prepared set, with
/// the probabilities re-weighted by `prior` when given.
pub fn evaluate_set(
    model: &LeukoNet,
    set: &InputSet,
    batch: usize,
    views: Views,
    prior: Option<&[f32]>,
) -> Result<(f64, Vec<usize>, Vec<Vec<f32>>)> {
    let refs: Vec<&RgbImage> = set.images.iter().collect();
    let mut probs = predict_probs(model, &refs, batch, views)?;
    apply_prior(&mut probs, prior);
    let loss = probs
        .iter()
        .zip(&set.labels)
        .map(|(p, &l)| -(p[l].max(1e-7) as f64).ln())
        .sum::<f64>()
        / probs.len().max(1) as f64;
    let preds = probs.iter().map(|p| argmax(p)).collect();
    Ok((loss, preds, probs))
}

/// The confidence threshold below which predictions are flagged, chosen on
/// validation predictions: the smallest threshold at which the cells kept
/// (confidence at or above it) are at least `target_accuracy` correct, while
/// flagging at most `max_flagged` of the cells. When the target cannot be
/// reached within that budget, the threshold flags exactly the budget.
/// `None` without validation predictions.
pub fn choose_review_threshold(
    confidences_and_correct: &[(f32, bool)],
    target_accuracy: f64,
    max_flagged: f64,
) -> Option<f32> {
    if confidences_and_correct.is_empty() {
        return None;
    }
    let mut v = confidences_and_correct.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = v.len();
    let budget = ((max_flagged * n as f64).floor() as usize).min(n - 1);
    // Flag the `f` least confident; keep the rest.
    for f in 0..=budget {
        let kept = &v[f..];
        let correct = kept.iter().filter(|x| x.1).count();
        if correct as f64 >= target_accuracy * kept.len() as f64 {
            return Some(if f == 0 {
                0.0
            } else {
                midpoint(v[f - 1].0, v[f].0)
            });
        }
    }
    if budget == 0 {
        return Some(0.0);
    }
    Some(midpoint(v[budget - 1].0, v[budget].0))
}

fn midpoint(a: f32, b: f32) -> f32 {
    (a + b) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_flags_least_confident_errors() {
        // Errors at low confidence: the threshold sits just above them.
        let v = vec![
            (0.40, false),
            (0.55, false),
            (0.60, true),
            (0.80, true),
            (0.90, true),
            (0.95, true),
            (0.97, true),
            (0.99, true),
        ];
        let t = choose_review_threshold(&v, 0.95, 0.5).unwrap();
        assert!((t - 0.575).abs() < 1e-6, "{t}");
        // Everything right: nothing flagged.
        let all: Vec<_> = v.iter().map(|x| (x.0, true)).collect();
        assert_eq!(choose_review_threshold(&all, 0.95, 0.5), Some(0.0));
        // Unreachable target: the budget (25% = 2 cells) is flagged.
        let bad: Vec<_> = v.iter().map(|x| (x.0, false)).collect();
        let t = choose_review_threshold(&bad, 0.95, 0.25).unwrap();
        assert!((t - 0.575).abs() < 1e-6, "{t}");
        assert_eq!(choose_review_threshold(&[], 0.95, 0.25), None);
    }

    #[test]
    fn prior_reweights_and_renormalises_by_bayes_rule() {
        // A balanced network unsure between two types (0.5 / 0.5) follows the
        // prior; a 0.2 / 0.8 call against a 0.8 / 0.2 prior becomes a tie
        // (0.16 / 0.16).
        let mut p = vec![vec![0.5, 0.5], vec![0.2, 0.8], vec![1.0, 0.0]];
        apply_prior(&mut p, Some(&[0.8, 0.2]));
        let want = [[0.8, 0.2], [0.5, 0.5], [1.0, 0.0]];
        for (got, want) in p.iter().zip(want) {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
            }
        }
        let mut q = vec![vec![0.3, 0.7]];
        apply_prior(&mut q, None);
        assert_eq!(q, vec![vec![0.3, 0.7]]);
        // All mass on classes the prior rules out: left as it is rather than NaN.
        let mut z = vec![vec![0.0, 1.0]];
        apply_prior(&mut z, Some(&[1.0, 0.0]));
        assert_eq!(z, vec![vec![0.0, 1.0]]);
    }

    #[test]
    fn label_frequencies_count_each_class() {
        assert_eq!(
            label_frequencies(&[0, 0, 1, 3], 4),
            vec![0.5, 0.25, 0.0, 0.25]
        );
        assert_eq!(label_frequencies(&[], 2), vec![0.0, 0.0]);
    }
}
