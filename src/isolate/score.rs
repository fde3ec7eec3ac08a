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

/// Mean, median and share >= 0.5 of IoUs sorted in ascending order (0 for none).
struct IouSummary {
    n: usize,
    mean: f64,
    median: f64,
    share_ge_half: f64,
}

impl IouSummary {
    fn of(sorted: &[f64]) -> IouSummary {
        let n = sorted.len();
        let median = match n {
            0 => 0.0,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        let mut s = IouSummary {
            n,
            mean: 0.0,
            median,
            share_ge_half: 0.0,
        };
        if n > 0 {
            s.mean = sorted.iter().sum::<f64>() / n as f64;
            s.share_ge_half = s.share_of(sorted.iter().filter(|&&v| v >= 0.5).count());
        }
        s
    }

    fn share_of(&self, k: usize) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            k as f64 / self.n as f64
        }
    }
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
        let s = IouSummary::of(&ious);
        ScoreReport {
            n,
            mean_iou: s.mean,
            median_iou: s.median,
            share_iou_ge_half: s.share_ge_half,
            share_none_found: s.share_of(images.iter().filter(|s| s.found.is_none()).count()),
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

/// One photo's outlines against its hand-made mask.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaskScore {
    /// The photo's file stem (the mask is `<stem>.png`).
    pub name: String,
    /// IoU of the largest found cell's box with the mask's bounding box; 0 when none found.
    pub box_iou: f64,
    /// The largest found cell's box (its outline's bounding box).
    pub found: Option<LeukocyteBox>,
    /// The bounding box of the mask's cell (cytoplasm and nucleus).
    pub truth: LeukocyteBox,
    /// Every found cell's pixels against the mask's cell pixels (nucleus and cytoplasm).
    pub cell: Overlap,
    /// Every found nucleus against the mask's nucleus pixels.
    pub nucleus: Overlap,
}

/// Dice and IoU of two sets of pixels; both 0 when either is empty and the other is not, both
/// 1 when both are empty.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Overlap {
    pub dice: f64,
    pub iou: f64,
}

impl Overlap {
    pub fn of(found: u64, truth: u64, both: u64) -> Overlap {
        if found + truth == 0 {
            return Overlap {
                dice: 1.0,
                iou: 1.0,
            };
        }
        Overlap {
            dice: 2.0 * both as f64 / (found + truth) as f64,
            iou: both as f64 / (found + truth - both) as f64,
        }
    }
}

/// Means and medians of [`Overlap`]s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OverlapSummary {
    pub mean_dice: f64,
    pub median_dice: f64,
    pub mean_iou: f64,
}

impl OverlapSummary {
    fn of(v: &[Overlap]) -> OverlapSummary {
        let sorted = |f: fn(&Overlap) -> f64| {
            let mut x: Vec<f64> = v.iter().map(f).collect();
            x.sort_by(f64::total_cmp);
            x
        };
        let (dice, iou) = (sorted(|o| o.dice), sorted(|o| o.iou));
        OverlapSummary {
            mean_dice: IouSummary::of(&dice).mean,
            median_dice: IouSummary::of(&dice).median,
            mean_iou: IouSummary::of(&iou).mean,
        }
    }
}

/// Summary of [`MaskScore`]s.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaskReport {
    /// Photos with a mask of one cell.
    pub n: usize,
    /// Share of them with a leukocyte found.
    pub share_found: f64,
    pub mean_box_iou: f64,
    pub median_box_iou: f64,
    pub share_box_iou_ge_half: f64,
    pub cell: OverlapSummary,
    pub nucleus: OverlapSummary,
    /// Every scored photo, worst first.
    pub photos: Vec<MaskScore>,
}

impl MaskReport {
    pub fn from_scores(mut photos: Vec<MaskScore>) -> MaskReport {
        photos.sort_by(|a, b| a.box_iou.total_cmp(&b.box_iou).then(a.name.cmp(&b.name)));
        let ious: Vec<f64> = photos.iter().map(|p| p.box_iou).collect();
        let s = IouSummary::of(&ious);
        MaskReport {
            n: photos.len(),
            share_found: s.share_of(photos.iter().filter(|p| p.found.is_some()).count()),
            mean_box_iou: s.mean,
            median_box_iou: s.median,
            share_box_iou_ge_half: s.share_ge_half,
            cell: OverlapSummary::of(&photos.iter().map(|p| p.cell).collect::<Vec<_>>()),
            nucleus: OverlapSummary::of(&photos.iter().map(|p| p.nucleus).collect::<Vec<_>>()),
            photos,
        }
    }

    /// A plain-text summary plus the `worst` lowest photos.
    pub fn to_text(&self, worst: usize) -> String {
        let mut s = format!(
            "n = {} photos with a mask
found      {:.2}%
mean box IoU   {:.4}
median box IoU {:.4}
box IoU >= 0.5 {:.2}%
cell     Dice mean {:.4}  median {:.4}  IoU mean {:.4}
nucleus  Dice mean {:.4}  median {:.4}  IoU mean {:.4}
",
            self.n,
            100.0 * self.share_found,
            self.mean_box_iou,
            self.median_box_iou,
            100.0 * self.share_box_iou_ge_half,
            self.cell.mean_dice,
            self.cell.median_dice,
            self.cell.mean_iou,
            self.nucleus.mean_dice,
            self.nucleus.median_dice,
            self.nucleus.mean_iou,
        );
        let b = |b: &LeukocyteBox| format!("[{}, {}, {}, {})", b.x_min, b.y_min, b.x_max, b.y_max);
        if worst > 0 && self.n > 0 {
            s.push_str(&format!("{} worst by box IoU:\n", worst.min(self.n)));
            for p in &self.photos[..worst.min(self.n)] {
                s.push_str(&format!(
                    "  {}  IoU {:.3}  found {}  mask {}  Dice cell {:.3} nucleus {:.3}\n",
                    p.name,
                    p.box_iou,
                    p.found.as_ref().map_or("none".to_string(), b),
                    b(&p.truth),
                    p.cell.dice,
                    p.nucleus.dice,
                ));
            }
        }
        s
    }
}

/// Mask values above this are the cell (cytoplasm or nucleus): masks mark cytoplasm 128-155
/// and nuclei 255, and some carry JPEG-like noise near 0.
pub const MASK_CELL_MIN: u8 = 100;

/// Mask values above this are nucleus (255 in both mask sets; cytoplasm is 128-155).
pub const MASK_NUCLEUS_MIN: u8 = 200;

/// The cells of a hand-made mask: the bounding boxes (exclusive max) of the connected pieces
/// of pixels above [`MASK_CELL_MIN`], largest first, leaving out specks under 2% of the largest
/// piece (noise, not cells); `area_px` is each piece's pixel count.
pub fn mask_cells(mask: &image::GrayImage) -> Vec<LeukocyteBox> {
    let cell = image::GrayImage::from_fn(mask.width(), mask.height(), |x, y| {
        image::Luma([if mask.get_pixel(x, y).0[0] > MASK_CELL_MIN {
            255
        } else {
            0
        }])
    });
    let mut pieces: Vec<LeukocyteBox> = super::components(&cell)
        .components
        .iter()
        .map(|c| LeukocyteBox {
            x_min: c.x_min,
            y_min: c.y_min,
            x_max: c.x_max,
            y_max: c.y_max,
            area_px: c.area_px as u64,
        })
        .collect();
    pieces.sort_by_key(|p| std::cmp::Reverse(p.area_px));
    let largest = pieces.first().map_or(0, |p| p.area_px);
    pieces.retain(|p| p.area_px * 50 >= largest);
    pieces
}

/// Why a mask was not scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskSkip {
    /// No cell in it.
    Empty,
    /// Not the size of the photo.
    OtherSize,
    /// More than one cell (scores compare one cell with the largest box found).
    SeveralCells,
}

impl std::fmt::Display for MaskSkip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MaskSkip::Empty => "no cell in the mask",
            MaskSkip::OtherSize => "the mask is not the photo's size",
            MaskSkip::SeveralCells => "several cells in the mask",
        })
    }
}

/// Scores the cells found in photo `name` (largest first) against a mask of one cell: the
/// largest cell's box against the mask's bounding box, and every found cell's nucleus and
/// cytoplasm pixels against the mask's.
pub fn score_against_mask(
    name: &str,
    photo_size: (u32, u32),
    found: &[super::FoundCell],
    mask: &image::GrayImage,
) -> std::result::Result<MaskScore, MaskSkip> {
    if mask.dimensions() != photo_size {
        return Err(MaskSkip::OtherSize);
    }
    let truth = match mask_cells(mask).as_slice() {
        [] => return Err(MaskSkip::Empty),
        [one] => *one,
        _ => return Err(MaskSkip::SeveralCells),
    };
    let mut painted = image::GrayImage::new(photo_size.0, photo_size.1);
    for c in found {
        c.mask.paint_into(&mut painted);
    }
    let (mut cell, mut nucleus) = ([0u64; 3], [0u64; 3]);
    for (p, t) in painted.as_raw().iter().zip(mask.as_raw()) {
        let (pc, tc) = (*p != 0, *t > MASK_CELL_MIN);
        let (pn, tn) = (*p == super::outline::NUCLEUS, *t > MASK_NUCLEUS_MIN);
        cell[0] += pc as u64;
        cell[1] += tc as u64;
        cell[2] += (pc && tc) as u64;
        nucleus[0] += pn as u64;
        nucleus[1] += tn as u64;
        nucleus[2] += (pn && tn) as u64;
    }
    let largest = found.first().map(|c| c.cell_box());
    Ok(MaskScore {
        name: name.to_string(),
        box_iou: largest.map_or(0.0, |f| f.iou(&truth)),
        found: largest,
        truth,
        cell: Overlap::of(cell[0], cell[1], cell[2]),
        nucleus: Overlap::of(nucleus[0], nucleus[1], nucleus[2]),
    })
}

/// The photo stem a mask file belongs to: its stem without a `_mask` / `-mask` word (any
/// case), so `BloodImage_Mask_00012.png` and `BloodImage_00012_mask.png` both belong to
/// `BloodImage_00012`, and `012.png` to `012`.
pub fn mask_photo_stem(mask_stem: &str) -> String {
    let lower = mask_stem.to_ascii_lowercase();
    for word in ["_mask", "-mask"] {
        if let Some(i) = lower.find(word) {
            return format!("{}{}", &mask_stem[..i], &mask_stem[i + word.len()..]);
        }
    }
    mask_stem.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_is_scored_by_the_box_of_its_one_cell() {
        let mut mask = image::GrayImage::new(40, 20);
        for y in 2..12 {
            for x in 4..16 {
                mask.put_pixel(x, y, image::Luma([if x < 10 { 255 } else { 155 }]));
            }
        }
        // JPEG-like noise below the cell threshold, and a speck: neither is a cell.
        mask.put_pixel(35, 18, image::Luma([40]));
        mask.put_pixel(0, 0, image::Luma([255]));
        let cells = mask_cells(&mask);
        assert_eq!(cells.len(), 1, "{cells:?}");
        let truth = cells[0];
        assert_eq!(
            (
                truth.x_min,
                truth.y_min,
                truth.x_max,
                truth.y_max,
                truth.area_px
            ),
            (4, 2, 16, 12, 120)
        );
        let found = LeukocyteBox {
            x_min: 4,
            y_min: 2,
            x_max: 10,
            y_max: 12,
            area_px: 1,
        };
        // The found cell covers the left half of the true cell; its nucleus the left half of
        // the true nucleus.
        let mut outline = crate::isolate::CellMask::empty(4, 2, 6, 10);
        for (i, v) in outline.pixels.iter_mut().enumerate() {
            *v = if i % 6 < 3 {
                crate::isolate::NUCLEUS
            } else {
                crate::isolate::CYTOPLASM
            };
        }
        let found = [crate::isolate::FoundCell {
            crop_box: LeukocyteBox { x_max: 14, ..found },
            mask: outline,
        }];
        let s = score_against_mask("a", (40, 20), &found, &mask).unwrap();
        // The box scored is the outline's, not the wider crop box.
        assert!((s.box_iou - 0.5).abs() < 1e-12);
        // Pixels are scored over the whole photo, the speck (a nucleus pixel) included: 121
        // true cell pixels, 61 true nucleus pixels.
        assert!((s.cell.dice - 120.0 / 181.0).abs() < 1e-9, "{:?}", s.cell);
        assert!((s.cell.iou - 60.0 / 121.0).abs() < 1e-9);
        assert!(
            (s.nucleus.dice - 60.0 / 91.0).abs() < 1e-9,
            "{:?}",
            s.nucleus
        );
        assert!((s.nucleus.iou - 30.0 / 61.0).abs() < 1e-9);
        let none = score_against_mask("b", (40, 20), &[], &mask).unwrap();
        assert_eq!((none.cell.dice, none.nucleus.dice), (0.0, 0.0));
        assert_eq!(none.box_iou, 0.0);
        assert_eq!(
            score_against_mask("a", (10, 10), &found, &mask),
            Err(MaskSkip::OtherSize)
        );
        let mut two = mask.clone();
        for y in 12..18 {
            for x in 24..30 {
                two.put_pixel(x, y, image::Luma([155]));
            }
        }
        assert_eq!(
            score_against_mask("a", (40, 20), &found, &two),
            Err(MaskSkip::SeveralCells)
        );
        assert_eq!(
            score_against_mask("a", (3, 3), &[], &image::GrayImage::new(3, 3)),
            Err(MaskSkip::Empty)
        );
        let r = MaskReport::from_scores(vec![s, none]);
        assert_eq!((r.n, r.share_found, r.share_box_iou_ge_half), (2, 0.5, 0.5));
        assert!(r.to_text(5).contains("b  IoU 0.000  found none"));
    }

    #[test]
    fn mask_files_are_matched_to_photos_by_name() {
        assert_eq!(mask_photo_stem("BloodImage_Mask_00012"), "BloodImage_00012");
        assert_eq!(mask_photo_stem("BloodImage_00012_mask"), "BloodImage_00012");
        assert_eq!(mask_photo_stem("cell-MASK"), "cell");
        assert_eq!(mask_photo_stem("012"), "012");
    }

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
