//! Scoring the isolation against the data set's VOC annotations (evaluation
//! only: the annotations never reach the algorithm).
//!
//! On every photo with exactly one `WBC` box, the largest found box is
//! compared with it by intersection over union. VOC boxes have inclusive
//! maxima; they are converted to exclusive ones (`+1`) as the reference
//! implementation (`isolate.py`'s `iou()`) does.

use super::boxes::LeukocyteBox;
use super::config::IsolationConfig;
use crate::data::voc::{read_annotation, VocBox};
use crate::data::DataDir;
use crate::error::Result;
use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;

/// IoU of a found box (exclusive max) and a VOC box (inclusive max).
pub fn iou_with_voc(found: &LeukocyteBox, truth: &VocBox) -> f64 {
    let (ax0, ay0, ax1, ay1) = (
        found.x_min as i64,
        found.y_min as i64,
        found.x_max as i64,
        found.y_max as i64,
    );
    let (bx0, by0) = (truth.x_min as i64, truth.y_min as i64);
    let (bx1, by1) = (truth.x_max as i64 + 1, truth.y_max as i64 + 1);
    let iw = (ax1.min(bx1) - ax0.max(bx0)).max(0);
    let ih = (ay1.min(by1) - ay0.max(by0)).max(0);
    let inter = iw * ih;
    let union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter;
    if union > 0 {
        inter as f64 / union as f64
    } else {
        0.0
    }
}

/// The result on one photo.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageScore {
    pub image_id: u32,
    /// IoU of the largest found box with the annotated one; 0 when none found.
    pub iou: f64,
    /// The largest found box, if any.
    pub found: Option<LeukocyteBox>,
    /// How many leukocytes were found.
    pub n_found: usize,
    /// The annotated `WBC` box (inclusive max, as in the file).
    pub truth: [i32; 4],
}

/// Summary over the scored photos.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreReport {
    /// Photos with exactly one annotated leukocyte.
    pub n: usize,
    pub mean_iou: f64,
    pub median_iou: f64,
    /// Share of photos with IoU >= 0.5.
    pub share_iou_ge_half: f64,
    /// Share of photos where no leukocyte was found.
    pub share_none_found: f64,
    /// Every scored photo, worst first.
    pub images: Vec<ImageScore>,
}

impl ScoreReport {
    /// Summarises per-photo scores (any order).
    pub fn from_scores(mut images: Vec<ImageScore>) -> ScoreReport {
        images.sort_by(|a, b| a.iou.total_cmp(&b.iou).then(a.image_id.cmp(&b.image_id)));
        let n = images.len();
        let ious: Vec<f64> = images.iter().map(|s| s.iou).collect();
        let share = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
        let median = match n {
            0 => 0.0,
            _ if n % 2 == 1 => ious[n / 2],
            _ => (ious[n / 2 - 1] + ious[n / 2]) / 2.0,
        };
        ScoreReport {
            n,
            mean_iou: if n == 0 {
                0.0
            } else {
                ious.iter().sum::<f64>() / n as f64
            },
            median_iou: median,
            share_iou_ge_half: share(ious.iter().filter(|&&v| v >= 0.5).count()),
            share_none_found: share(images.iter().filter(|s| s.found.is_none()).count()),
            images,
        }
    }

    /// The `k` photos with the lowest IoU.
    pub fn worst(&self, k: usize) -> &[ImageScore] {
        &self.images[..k.min(self.images.len())]
    }

    /// A plain-text summary plus the `worst` lowest photos.
    pub fn to_text(&self, worst: usize) -> String {
        let mut s = format!(
            "n = {} photos with exactly one WBC box\nmean IoU   {:.4}\nmedian IoU {:.4}\nIoU >= 0.5 {:.2}%\nnone found {:.2}%\n",
            self.n,
            self.mean_iou,
            self.median_iou,
            100.0 * self.share_iou_ge_half,
            100.0 * self.share_none_found
        );
        if worst > 0 && self.n > 0 {
            s.push_str(&format!("{} worst by IoU:\n", worst.min(self.n)));
            for w in self.worst(worst) {
                let found = match &w.found {
                    Some(b) => format!("[{}, {}, {}, {})", b.x_min, b.y_min, b.x_max, b.y_max),
                    None => "none".to_string(),
                };
                s.push_str(&format!(
                    "  BloodImage_{:05}  IoU {:.3}  found {}  annotated [{}, {}, {}, {}]  ({} found)\n",
                    w.image_id, w.iou, found, w.truth[0], w.truth[1], w.truth[2], w.truth[3], w.n_found
                ));
            }
        }
        s
    }
}

/// Scores `cfg` on every photo of `dir` that has an annotation with exactly
/// one `WBC` box (all cores). A photo or annotation that cannot be read is
/// an error: the data set is expected to be intact.
pub fn score_dataset(dir: &DataDir, cfg: &IsolationConfig) -> Result<ScoreReport> {
    score_dataset_with(dir, cfg, |_| {})
}

/// Like [`score_dataset`], with every photo passed through `alter` first
/// (e.g. made paler or warmer, to check the isolation holds for photos from
/// other microscopes).
pub fn score_dataset_with(
    dir: &DataDir,
    cfg: &IsolationConfig,
    alter: impl Fn(&mut RgbImage) + Sync,
) -> Result<ScoreReport> {
    let ids = dir.image_ids_on_disk()?;
    let scores: Vec<Option<ImageScore>> = ids
        .par_iter()
        .map(|&id| -> Result<Option<ImageScore>> {
            let ann_path = dir.annotation_path(id);
            if !ann_path.exists() {
                return Ok(None);
            }
            let wbc = read_annotation(&ann_path)?.wbc_boxes();
            let [truth] = wbc.as_slice() else {
                return Ok(None);
            };
            let mut photo = crate::imageio::load_rgb(&dir.image_path(id))?;
            alter(&mut photo);
            let boxes = super::isolate(&photo, cfg);
            let found = boxes.first().copied();
            Ok(Some(ImageScore {
                image_id: id,
                iou: found.map(|b| iou_with_voc(&b, truth)).unwrap_or(0.0),
                found,
                n_found: boxes.len(),
                truth: [truth.x_min, truth.y_min, truth.x_max, truth.y_max],
            }))
        })
        .collect::<Result<_>>()?;
    Ok(ScoreReport::from_scores(
        scores.into_iter().flatten().collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voc_boxes_are_inclusive() {
        let found = LeukocyteBox {
            x_min: 10,
            y_min: 10,
            x_max: 20,
            y_max: 20,
            area_px: 1,
        };
        let same = VocBox {
            x_min: 10,
            y_min: 10,
            x_max: 19,
            y_max: 19,
        };
        assert_eq!(iou_with_voc(&found, &same), 1.0);
        let half = VocBox {
            x_min: 15,
            y_min: 10,
            x_max: 24,
            y_max: 19,
        };
        assert!((iou_with_voc(&found, &half) - 50.0 / 150.0).abs() < 1e-12);
    }

    #[test]
    fn summary_counts_misses_and_orders_worst_first() {
        let s = |id, iou, found: bool| ImageScore {
            image_id: id,
            iou,
            found: found.then_some(LeukocyteBox {
                x_min: 0,
                y_min: 0,
                x_max: 1,
                y_max: 1,
                area_px: 1,
            }),
            n_found: found as usize,
            truth: [0, 0, 0, 0],
        };
        let r = ScoreReport::from_scores(vec![
            s(1, 0.9, true),
            s(2, 0.0, false),
            s(3, 0.6, true),
            s(4, 0.4, true),
        ]);
        assert_eq!(r.n, 4);
        assert!((r.mean_iou - 0.475).abs() < 1e-12);
        assert!((r.median_iou - 0.5).abs() < 1e-12);
        assert_eq!(r.share_iou_ge_half, 0.5);
        assert_eq!(r.share_none_found, 0.25);
        assert_eq!(
            r.worst(2).iter().map(|w| w.image_id).collect::<Vec<_>>(),
            [2, 4]
        );
        assert!(r.to_text(10).contains("BloodImage_00002"));
    }
}
