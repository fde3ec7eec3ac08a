//! Classifying the leukocytes of photos with a trained model: the core that
//! `leuko predict`, `leuko report` and `leuko serve` share.
//!
//! A photo goes through the same isolation and crop as training, every found
//! cell (not just the largest) is classified, and each gets a review flag when
//! a person should look at it. A photo without a leukocyte gives no cells.

use crate::data::ClassLabel;
use crate::error::{LeukoError, Result};
use crate::infer::{Prior, Views, DEFAULT_REVIEW_THRESHOLD};
use crate::isolate::{CropConfig, IsolationConfig, LeukocyteBox};
use crate::model::file::{model_from_bytes, ModelMeta};
use crate::model::LeukoNet;
use burn::module::Module;
use burn::tensor::Device;
use image::RgbImage;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// The default model, trained by the command in the README and embedded so
/// that prediction works with no `--model`.
pub static EMBEDDED_MODEL: &[u8] = include_bytes!("../models/default.leuko");

/// The split the default model was trained on (its test part gives the README's figures).
pub static EMBEDDED_SPLIT: &str = include_str!("../models/default.split.json");

/// Why a cell is flagged for review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewReason {
    /// The top class probability is below the model's review threshold.
    LowConfidence,
    /// The photo's border cuts off a large part of the cell ([`ReviewRules::max_cut_share`]).
    CutByBorder,
    /// The box is much smaller or larger than leukocytes usually are at this
    /// photo size (a fragment, a clump, or another magnification).
    UnusualSize,
    /// The photo looks unlike the model's training photos (another microscope, camera or
    /// stain: [`crate::familiar`]); every cell of it, and the photo, carry this reason.
    UnfamiliarPhoto,
    /// No leukocyte was found in the photo (a photo-level reason).
    NoLeukocyteFound,
}

impl ReviewReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewReason::LowConfidence => "low_confidence",
            ReviewReason::CutByBorder => "cut_by_border",
            ReviewReason::UnusualSize => "unusual_size",
            ReviewReason::UnfamiliarPhoto => "unfamiliar_photo",
            ReviewReason::NoLeukocyteFound => "no_leukocyte_found",
        }
    }
}

/// When a cell is flagged for review.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReviewRules {
    /// Flag cells whose top probability is below this.
    pub min_confidence: f32,
    /// A box edge within this many pixels of the photo edge touches the border.
    pub border_px: u32,
    /// A cell whose box touches the border is flagged when more than this share of its
    /// diameter is estimated to lie outside the photo ([`cut_share`]). A cell touching the
    /// border is no less often right when less is cut off: on the default model's validation
    /// photos 13 of 13 such cells are right, on its training photos 95.3% against 95.2% of
    /// the others; half a cell may have lost its nucleus.
    pub max_cut_share: f64,
    /// Accepted range of the box's geometric-mean side as a share of the
    /// photo's shorter side. BCCD's annotated leukocytes (372 boxes on
    /// 640x480 photos) span 0.21-0.59 from the 1st to the 99th percentile
    /// (median 0.39); the range below adds a margin on both sides.
    pub min_side_fraction: f64,
    pub max_side_fraction: f64,
}

impl ReviewRules {
    /// The rules for a model: its recorded threshold, or the default.
    pub fn for_model(meta: &ModelMeta) -> ReviewRules {
        ReviewRules {
            min_confidence: meta.review_threshold.unwrap_or(DEFAULT_REVIEW_THRESHOLD),
            border_px: 2,
            max_cut_share: 0.5,
            min_side_fraction: 0.15,
            max_side_fraction: 0.70,
        }
    }

    /// [`ReviewRules::reasons`] for a box `b` of a `w x h` photo taken at `magnification` times
    /// BCCD's: the box and the photo are judged as they would be at BCCD's magnification.
    pub fn reasons_at(
        &self,
        b: &LeukocyteBox,
        w: u32,
        h: u32,
        magnification: f32,
        confidence: f32,
    ) -> Vec<ReviewReason> {
        let m = f64::from(magnification);
        if m == 1.0 || !m.is_finite() || m <= 0.0 {
            return self.reasons(b, w, h, confidence);
        }
        let fw = ((w as f64 / m).round() as u32).max(1);
        let fh = ((h as f64 / m).round() as u32).max(1);
        let scaled = b.resized(
            fw as f64 / w.max(1) as f64,
            fh as f64 / h.max(1) as f64,
            fw,
            fh,
        );
        self.reasons(&scaled, fw, fh, confidence)
    }

    /// The reasons (possibly none) to flag a cell.
    pub fn reasons(
        &self,
        b: &LeukocyteBox,
        photo_w: u32,
        photo_h: u32,
        confidence: f32,
    ) -> Vec<ReviewReason> {
        let mut out = Vec::new();
        if confidence < self.min_confidence {
            out.push(ReviewReason::LowConfidence);
        }
        if cut_share(b, photo_w, photo_h, self.border_px) > self.max_cut_share {
            out.push(ReviewReason::CutByBorder);
        }
        let side = (b.width() as f64 * b.height() as f64).sqrt();
        let short = photo_w.min(photo_h).max(1) as f64;
        let f = side / short;
        if f < self.min_side_fraction || f > self.max_side_fraction {
            out.push(ReviewReason::UnusualSize);
        }
        out
    }
}

/// How much of a cell's diameter the photo's border cuts off, estimated from its box: a
/// leukocyte is about round, so a box cut by the left or right border keeps the cell's full
/// height, and `1 - width / height` of its width is missing (likewise for the top or bottom).
/// 0 for a box that touches no border (within `border_px`); 1 for one in a corner (cut on both
/// axes: nothing to measure by).
pub fn cut_share(b: &LeukocyteBox, photo_w: u32, photo_h: u32, border_px: u32) -> f64 {
    let x_cut = b.x_min <= border_px || b.x_max + border_px >= photo_w;
    let y_cut = b.y_min <= border_px || b.y_max + border_px >= photo_h;
    let (w, h) = (f64::from(b.width().max(1)), f64::from(b.height().max(1)));
    match (x_cut, y_cut) {
        (false, false) => 0.0,
        (true, false) => (1.0 - w / h).max(0.0),
        (false, true) => (1.0 - h / w).max(0.0),
        (true, true) => 1.0,
    }
}

/// One classified leukocyte.
#[derive(Debug, Clone, Serialize)]
pub struct CellPrediction {
    /// 1-based, in isolation order (largest nucleus first).
    pub cell: usize,
    /// The bounding box of the cell's outline.
    #[serde(rename = "box")]
    pub bbox: LeukocyteBox,
    /// The window the network input was cut from (the outline with the isolation's margin);
    /// the review rules for cells cut by the border and of unusual size read it.
    #[serde(skip)]
    pub crop_box: LeukocyteBox,
    /// The part of the photo [`CellPrediction::crop`] shows.
    #[serde(skip)]
    pub crop_window: crate::isolate::CropWindow,
    /// Nucleus and cytoplasm at the photo's resolution.
    #[serde(skip)]
    pub mask: crate::isolate::CellMask,
    pub morphometrics: crate::isolate::Morphometrics,
    /// The same in micrometres, when the photo's scale is known ([`Classifier::set_um_per_px`]).
    pub morphometrics_um: Option<crate::isolate::MorphometricsUm>,
    pub class: ClassLabel,
    /// Probability of `class`.
    pub confidence: f32,
    /// One probability per class of the model, in [`Classifier::classes`] order.
    pub probabilities: Vec<f32>,
    pub review: bool,
    pub review_reasons: Vec<ReviewReason>,
    /// The network input (crop) this prediction was made on.
    #[serde(skip)]
    pub crop: RgbImage,
}

/// Everything found in one photo.
#[derive(Debug, Clone, Serialize)]
pub struct PhotoPrediction {
    pub width: u32,
    pub height: u32,
    /// Empty when no leukocyte was found.
    pub cells: Vec<CellPrediction>,
    /// How unlike the model's training photos this one is
    /// ([`crate::familiar::Familiarity::unfamiliarity`]: above 1, unfamiliar); `None` when the
    /// model file records no profile of its training photos.
    pub unfamiliarity: Option<f32>,
    /// Whether a person should look at the photo: no leukocyte found, or unfamiliar.
    pub review: bool,
    /// [`ReviewReason::NoLeukocyteFound`] and / or [`ReviewReason::UnfamiliarPhoto`].
    pub review_reasons: Vec<ReviewReason>,
}

impl PhotoPrediction {
    /// A photo the model's training photos do not resemble.
    pub fn unfamiliar(&self) -> bool {
        self.review_reasons.contains(&ReviewReason::UnfamiliarPhoto)
    }
}

/// A loaded model ready to classify photos. Cheap to share between threads
/// (`&Classifier` is all [`Classifier::classify`] needs).
pub struct Classifier {
    model: LeukoNet,
    meta: ModelMeta,
    isolation: IsolationConfig,
    crop: CropConfig,
    rules: ReviewRules,
    views: Views,
    /// Class weights applied to the network's probabilities (see [`Prior`]).
    prior: Option<Vec<f32>>,
    /// The photos' magnification relative to BCCD's (see [`Classifier::set_magnification`]).
    magnification: f32,
    /// Micrometres per photo pixel, when known (see [`Classifier::set_um_per_px`]).
    um_per_px: Option<f64>,
    /// Where the model came from, for messages ("embedded default model" or a path).
    origin: String,
}

impl Classifier {
    /// The model embedded in the binary.
    pub fn embedded() -> Result<Classifier> {
        Classifier::from_bytes(EMBEDDED_MODEL, "embedded default model")
    }

    /// A model file written by `leuko train`.
    pub fn from_file(path: &Path) -> Result<Classifier> {
        let bytes = std::fs::read(path).map_err(|e| LeukoError::io(path, e))?;
        Classifier::from_bytes(&bytes, &path.display().to_string())
    }

    /// `--model FILE` when given, else the embedded model.
    pub fn from_option(path: Option<&Path>) -> Result<Classifier> {
        match path {
            Some(p) => Classifier::from_file(p),
            None => Classifier::embedded(),
        }
    }

    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Classifier> {
        let (model, meta) = model_from_bytes(bytes, origin, &Device::flex())?;
        let Some(crop) = meta.input.crop_config() else {
            return Err(LeukoError::Invalid(format!(
                "{origin}: this model classifies whole photos (experiment '{}'), not isolated \
                 cells; prediction needs a model trained on crops (e.g. experiments/final.toml)",
                meta.experiment
            )));
        };
        let rules = ReviewRules::for_model(&meta);
        let prior = Prior::Data.weights(&meta).map(<[f32]>::to_vec);
        Ok(Classifier {
            model: model.valid(),
            isolation: meta.isolation.clone(),
            meta,
            crop,
            rules,
            views: Views::Single,
            prior,
            magnification: 1.0,
            um_per_px: None,
            origin: origin.to_string(),
        })
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The model's classes, in probability order.
    pub fn classes(&self) -> &[ClassLabel] {
        &self.meta.classes
    }

    pub fn rules(&self) -> &ReviewRules {
        &self.rules
    }

    pub fn set_rules(&mut self, rules: ReviewRules) {
        self.rules = rules;
    }

    /// Single view (default) or test-time augmentation over 8 views. The
    /// model's review threshold was chosen on single-view confidences.
    pub fn set_views(&mut self, views: Views) {
        self.views = views;
    }

    /// The training frequencies recorded in the model (default) or a flat
    /// prior. The model's review threshold was chosen with the recorded prior.
    pub fn set_prior(&mut self, prior: Prior) {
        self.prior = prior.weights(&self.meta).map(<[f32]>::to_vec);
    }

    /// Photos taken at `m` times BCCD's magnification (cells `m` times as large in a photo of
    /// the same size, e.g. 2 for cells twice as wide as BCCD's): the isolation runs on each
    /// photo resized by `1 / m` ([`crate::isolate::isolate_at`]) and the unusual-size review
    /// rule judges boxes at that scale; boxes stay in the photo's own pixels. Default 1.
    pub fn set_magnification(&mut self, m: crate::preprocess::Magnification) {
        self.magnification = m.0;
    }

    /// The photos' scale in micrometres per pixel: each cell's morphometrics are then also
    /// given in micrometres ([`CellPrediction::morphometrics_um`]). `None` (default) or a value
    /// that is not a positive number gives pixels only.
    pub fn set_um_per_px(&mut self, um_per_px: Option<f64>) {
        self.um_per_px = um_per_px.filter(|v| v.is_finite() && *v > 0.0);
    }

    /// Finds, crops and classifies every leukocyte in a photo.
    pub fn classify(&self, photo: &RgbImage) -> Result<PhotoPrediction> {
        self.classify_timed(photo).map(|(p, _)| p)
    }

    /// [`Classifier::classify`], also timing its two stages (for `leuko bench predict`).
    pub fn classify_timed(&self, photo: &RgbImage) -> Result<(PhotoPrediction, StageTimes)> {
        let t0 = Instant::now();
        let (found, crops) = crate::preprocess::cell_inputs(
            photo,
            &self.isolation,
            &self.crop,
            &self.meta.input,
            self.magnification,
        );
        let t1 = Instant::now();
        let refs: Vec<&RgbImage> = crops.iter().collect();
        let (mut probs, features) = if refs.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            crate::infer::predict_probs_and_features(&self.model, &refs, 32, self.views)?
        };
        if probs.iter().flatten().any(|p| !p.is_finite()) {
            return Err(LeukoError::Invalid(format!(
                "{}: the network gives probabilities that are not numbers (NaN or infinite): \
                 the model's weights are damaged",
                self.origin
            )));
        }
        crate::infer::apply_prior(&mut probs, self.prior.as_deref());
        let t2 = Instant::now();
        let unfamiliarity = self.meta.familiarity.as_ref().map(|f| {
            f.unfamiliarity(&crate::familiar::PhotoMeasure {
                look: crate::familiar::photo_look(photo),
                cell_features: features,
            })
        });
        let unfamiliar = unfamiliarity.is_some_and(|u| u > 1.0);
        let times = StageTimes {
            isolate_ms: (t1 - t0).as_secs_f64() * 1e3 + t2.elapsed().as_secs_f64() * 1e3,
            network_ms: (t2 - t1).as_secs_f64() * 1e3,
        };
        let cells: Vec<CellPrediction> = found
            .into_iter()
            .zip(crops)
            .zip(probs)
            .enumerate()
            .map(|(i, ((found, crop), p))| {
                let (k, &confidence) =
                    p.iter()
                        .enumerate()
                        .fold((0, &f32::MIN), |b, x| if x.1 > b.1 { x } else { b });
                let mut reasons = self.rules.reasons_at(
                    &found.crop_box,
                    photo.width(),
                    photo.height(),
                    self.magnification,
                    confidence,
                );
                if unfamiliar {
                    reasons.push(ReviewReason::UnfamiliarPhoto);
                }
                let morphometrics = found.mask.morphometrics();
                CellPrediction {
                    cell: i + 1,
                    bbox: found.cell_box(),
                    crop_window: crate::isolate::crop_window(
                        photo.width(),
                        photo.height(),
                        &found.crop_box,
                        &self.crop,
                    )
                    .unwrap_or_default(),
                    crop_box: found.crop_box,
                    morphometrics_um: self.um_per_px.map(|s| morphometrics.in_um(s)),
                    morphometrics,
                    mask: found.mask,
                    class: self.meta.classes[k],
                    confidence,
                    probabilities: p,
                    review: !reasons.is_empty(),
                    review_reasons: reasons,
                    crop,
                }
            })
            .collect();
        let mut photo_reasons = Vec::new();
        if cells.is_empty() {
            photo_reasons.push(ReviewReason::NoLeukocyteFound);
        }
        if unfamiliar {
            photo_reasons.push(ReviewReason::UnfamiliarPhoto);
        }
        let prediction = PhotoPrediction {
            width: photo.width(),
            height: photo.height(),
            cells,
            unfamiliarity,
            review: !photo_reasons.is_empty(),
            review_reasons: photo_reasons,
        };
        Ok((prediction, times))
    }

    /// Decodes an image file's bytes (with the same limits as every reader)
    /// and classifies it; the error names `name`.
    pub fn classify_bytes(&self, name: &str, bytes: &[u8]) -> Result<PhotoPrediction> {
        let photo = crate::imageio::decode_rgb(bytes).map_err(|message| LeukoError::Image {
            path: name.into(),
            message,
        })?;
        self.classify(&photo)
    }

    /// Reads and classifies an image file.
    pub fn classify_file(&self, path: &Path) -> Result<PhotoPrediction> {
        let photo = crate::imageio::load_rgb(path)?;
        self.classify(&photo)
    }
}

/// Time spent in the stages of [`Classifier::classify_timed`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTimes {
    /// Finding the leukocytes and cropping them, and measuring the photo's look.
    pub isolate_ms: f64,
    /// The network on all crops of the photo (one batch), softmax included.
    pub network_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(x0: u32, y0: u32, x1: u32, y1: u32) -> LeukocyteBox {
        LeukocyteBox {
            x_min: x0,
            y_min: y0,
            x_max: x1,
            y_max: y1,
            area_px: 1,
        }
    }

    fn rules() -> ReviewRules {
        ReviewRules {
            min_confidence: 0.7,
            border_px: 2,
            max_cut_share: 0.5,
            min_side_fraction: 0.15,
            max_side_fraction: 0.70,
        }
    }

    #[test]
    fn review_reasons() {
        let r = rules();
        // A typical cell in the middle of a 640x480 photo, confident.
        assert!(r
            .reasons(&bx(200, 150, 390, 340), 640, 480, 0.95)
            .is_empty());
        assert_eq!(
            r.reasons(&bx(200, 150, 390, 340), 640, 480, 0.5),
            vec![ReviewReason::LowConfidence]
        );
        // Cut by the left border by a little (a tenth of its diameter): not flagged.
        assert!(r.reasons(&bx(0, 150, 171, 340), 640, 480, 0.95).is_empty());
        // By a lot: more than half of it outside the photo, on either side or axis.
        assert_eq!(
            r.reasons(&bx(0, 150, 80, 340), 640, 480, 0.95),
            vec![ReviewReason::CutByBorder]
        );
        assert_eq!(
            r.reasons(&bx(560, 150, 640, 340), 640, 480, 0.95),
            vec![ReviewReason::CutByBorder]
        );
        assert_eq!(
            r.reasons(&bx(200, 400, 390, 480), 640, 480, 0.95),
            vec![ReviewReason::CutByBorder]
        );
        // In a corner: how much is missing cannot be told.
        assert_eq!(
            r.reasons(&bx(0, 0, 190, 190), 640, 480, 0.95),
            vec![ReviewReason::CutByBorder]
        );
        assert_eq!(
            r.reasons(&bx(300, 200, 340, 240), 640, 480, 0.95),
            vec![ReviewReason::UnusualSize]
        );
    }

    #[test]
    fn cut_share_follows_the_missing_part_of_a_round_cell() {
        assert_eq!(cut_share(&bx(100, 100, 200, 200), 640, 480, 2), 0.0);
        assert!((cut_share(&bx(0, 100, 75, 200), 640, 480, 2) - 0.25).abs() < 1e-9);
        assert!((cut_share(&bx(100, 430, 200, 480), 640, 480, 2) - 0.5).abs() < 1e-9);
        // A cell wider than tall touching a side border: nothing seems missing.
        assert_eq!(cut_share(&bx(0, 100, 120, 200), 640, 480, 2), 0.0);
    }
}
