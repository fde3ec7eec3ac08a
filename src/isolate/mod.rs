//! Leukocyte isolation (issue 3): find every white blood cell in a smear
//! photo from colour alone and crop it for the network.
//!
//! The chain of steps, each a public function tested on its own:
//!
//! 1. [`colour::downsample`] to working size (a 640x480 photo is worked on at
//!    320x240), then [`colour::ColourFeatures`]: white balance against the
//!    photo's own background and brightness-free chromaticity, so darker,
//!    warmer or paler photos look alike;
//! 2. [`background_mask`] (gray), [`erythrocyte_mask`] (leaning to red) and
//!    [`leukocyte_mask`] (neither: the blue-stained nuclei);
//! 3. [`open`]: erosion then dilation, removes platelets and scraps;
//! 4. [`components`]: connected pieces; pieces too small to be a nucleus are
//!    not used as seeds;
//! 5. [`grow`]: each nucleus grows into the surrounding [`cytoplasm_mask`]
//!    (bluish, or eosinophil granules) so the box encloses the whole cell;
//!    lobes whose cytoplasm meets become one cell;
//! 6. [`merge_close`]: pieces whose boxes are close for their size merge;
//!    cells with too little nucleus are dropped; boxes are scaled back to the
//!    photo with a small margin for the cell's outline;
//! 7. [`crop`]: a box cut out and resized to 128x128.
//!
//! All settings live in [`IsolationConfig`]. Scoring against the annotations
//! is in [`score`]; it is evaluation only.
//!
//! ```
//! use leuko::isolate::{crop, isolate, CropConfig, IsolationConfig};
//! let photo = image::RgbImage::from_pixel(64, 48, image::Rgb([200, 200, 200]));
//! let boxes = isolate(&photo, &IsolationConfig::default());
//! assert!(boxes.is_empty()); // an empty smear: no leukocyte, not an error
//! ```

pub mod boxes;
pub mod colour;
pub mod components;
pub mod config;
pub mod crop;
pub mod grow;
pub mod masks;
pub mod morphology;
pub mod overlay;
pub mod score;

pub use boxes::{merge_close, LeukocyteBox, Piece};
pub use colour::{downsample, estimate_background, work_factor, ColourFeatures};
pub use components::{components, Component, Labelling};
pub use config::IsolationConfig;
pub use crop::{crop, resize, CropConfig};
pub use grow::{grow, GrownRegion, Growth};
pub use masks::{background_mask, cytoplasm_mask, erythrocyte_mask, leukocyte_mask};
pub use morphology::{dilate, erode, open};
pub use overlay::overlay;
pub use score::{iou_with_voc, score_dataset, ImageScore, ScoreReport};

use image::{GrayImage, RgbImage};

/// Everything [`isolate_with_mask`] found in one photo.
#[derive(Debug, Clone, PartialEq)]
pub struct Isolation {
    /// Every leukocyte, largest (by nucleus area) first; empty if none.
    pub boxes: Vec<LeukocyteBox>,
    /// The cells behind `boxes` (nucleus plus grown cytoplasm), 255 = in, at
    /// working resolution: one mask pixel is `scale x scale` photo pixels.
    pub mask: GrayImage,
    /// Photo pixels per mask pixel along each axis.
    pub scale: u32,
    /// The photo's background (white reference) colour.
    pub background: [u8; 3],
}

/// Every leukocyte in `photo`, largest first (training uses the first). A
/// photo without one gives an empty list. Never panics, for any photo size.
pub fn isolate(photo: &RgbImage, cfg: &IsolationConfig) -> Vec<LeukocyteBox> {
    isolate_with_mask(photo, cfg).boxes
}

/// Like [`isolate`], and also returns the mask (for overlays and debugging).
pub fn isolate_with_mask(photo: &RgbImage, cfg: &IsolationConfig) -> Isolation {
    let (w, h) = photo.dimensions();
    let factor = work_factor(w, h, cfg.work_max_side_px);
    let work = downsample(photo, factor);
    let features = ColourFeatures::compute(&work, cfg);
    let (ww, wh) = work.dimensions();
    let work_area = ww as f64 * wh as f64;

    // Nuclei: the leukocyte mask, opened; pieces large enough seed a cell.
    let nucleus = leukocyte_mask(&features, cfg);
    let opened = open(&nucleus, cfg.open_radius_px);
    let seeds = components(&opened);
    let seed_min = fraction(cfg.seed_min_area_fraction) * work_area;
    let is_seed: Vec<bool> = seeds
        .components
        .iter()
        .map(|c| c.area_px as f64 >= seed_min.max(1.0))
        .collect();

    // Cells: seeds grown into their cytoplasm.
    let cytoplasm = cytoplasm_mask(&features, cfg);
    let growth = grow(
        &seeds,
        &is_seed,
        &cytoplasm,
        &nucleus,
        cfg.grow_max_px,
        cfg.open_radius_px.saturating_add(1),
    );
    let growth = grow::trim(&growth, cfg.fill_radius_px, cfg.trim_radius_px);
    let pieces: Vec<Piece> = growth
        .regions
        .iter()
        .map(|r| Piece {
            x_min: r.extent.x_min,
            y_min: r.extent.y_min,
            x_max: r.extent.x_max,
            y_max: r.extent.y_max,
            nucleus_area_px: r.nucleus_area_px,
        })
        .collect();
    let (cells, owner) = merge_close(&pieces, cfg.merge_gap_fraction);

    // Keep cells with enough nucleus; scale to the photo; largest first.
    let min_area = fraction(cfg.min_area_fraction) * w as f64 * h as f64;
    let mut kept: Vec<(usize, LeukocyteBox)> = cells
        .iter()
        .enumerate()
        .map(|(k, c)| (k, boxes::to_photo(c, factor, w, h, cfg.box_margin_fraction)))
        .filter(|(_, b)| b.area_px as f64 >= min_area.max(1.0) && b.box_area_px() > 0)
        .collect();
    kept.sort_by(|a, b| {
        b.1.area_px
            .cmp(&a.1.area_px)
            .then(a.1.y_min.cmp(&b.1.y_min))
            .then(a.1.x_min.cmp(&b.1.x_min))
    });

    let mut keep_cell = vec![false; cells.len()];
    for (k, _) in &kept {
        keep_cell[*k] = true;
    }
    let mask_data: Vec<u8> = growth
        .labels
        .iter()
        .map(|&l| {
            let keep = l != 0 && keep_cell[owner[l as usize - 1]];
            if keep {
                masks::IN
            } else {
                0
            }
        })
        .collect();
    let mask = GrayImage::from_raw(ww, wh, mask_data).unwrap_or_else(|| GrayImage::new(ww, wh));
    Isolation {
        boxes: kept.into_iter().map(|(_, b)| b).collect(),
        mask,
        scale: factor,
        background: features.background,
    }
}

/// A share in 0..=1 (NaN and out-of-range values clamped), for config fields.
fn fraction(v: f32) -> f64 {
    if v.is_finite() {
        v.clamp(0.0, 1.0) as f64
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// Gray background, reddish disks, purple blobs with lilac cytoplasm.
    pub(crate) fn smear(w: u32, h: u32, cells: &[(i64, i64, i64)]) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (x, y) = (x as i64, y as i64);
            for &(cx, cy, r) in cells {
                let d2 = (x - cx).pow(2) + (y - cy).pow(2);
                if d2 <= (r / 2).pow(2) {
                    return Rgb([146, 100, 215]);
                }
                if d2 <= r * r {
                    return Rgb([196, 188, 214]);
                }
            }
            if (x / 60 + y / 60) % 2 == 0 && (x % 60 - 30).pow(2) + (y % 60 - 30).pow(2) < 22 * 22 {
                return Rgb([190, 150, 160]);
            }
            Rgb([203, 204, 203])
        })
    }

    #[test]
    fn finds_a_cell_with_its_cytoplasm() {
        let img = smear(320, 240, &[(160, 120, 40)]);
        let iso = isolate_with_mask(&img, &IsolationConfig::default());
        assert_eq!(iso.boxes.len(), 1, "{:?}", iso.boxes);
        let b = iso.boxes[0];
        // The cell is 80 px across; the margin adds 3% on each side.
        for (got, want) in [
            (b.x_min, 120),
            (b.y_min, 80),
            (b.x_max, 201),
            (b.y_max, 161),
        ] {
            assert!((got as i64 - want).abs() <= 5, "{b:?}");
        }
        assert_eq!(iso.scale, 1);
        assert!(masks::count(&iso.mask) > 4000);
    }

    #[test]
    fn blank_and_tiny_photos_give_no_cells() {
        let cfg = IsolationConfig::default();
        for (w, h) in [(1, 1), (2, 1), (1, 300), (640, 480)] {
            assert!(isolate(&RgbImage::from_pixel(w, h, Rgb([255, 255, 255])), &cfg).is_empty());
        }
        assert!(isolate(&RgbImage::new(0, 0), &cfg).is_empty());
        assert!(isolate(&RgbImage::from_pixel(5, 5, Rgb([0, 0, 0])), &cfg).is_empty());
    }
}
