//! Leukocyte isolation: find every white blood cell in a smear
//! photo from colour alone and crop it for the network.
//!
//! The chain of steps, each a public function tested on its own:
//!
//! 1. [`downsample`] to working size (a 640x480 photo is worked on at
//!    214x160), then [`ColourModel::estimate`]: white balance against the
//!    photo's own background, brightness-free chromaticity, and a common
//!    stain contrast, so darker, warmer, paler or more vivid photos look alike;
//! 2. [`background_mask`] (gray), [`erythrocyte_mask`] (stained, leaning to
//!    red) and [`leukocyte_mask`] (neither: the blue-stained nuclei);
//! 3. [`open`]: erosion then dilation by an octagon, removes platelets and
//!    scraps and rounds the shapes;
//! 4. [`components`]: connected pieces; pieces too small to be a nucleus do
//!    not seed a cell;
//! 5. [`grow`]: each nucleus grows into the surrounding [`cytoplasm_mask`]
//!    (bluish, or eosinophil granules), so the box encloses the whole cell
//!    and not just its nucleus; lobes whose cytoplasm meets become one cell;
//!    [`trim`] cuts the thin leaks of that growth;
//! 6. [`merge_close`]: pieces whose boxes touch or nearly touch merge; cells
//!    with too little nucleus are dropped; boxes are scaled back to the
//!    photo, pushed out to the cell's outline, largest nucleus first;
//! 7. [`crop`]: a box cut out and resized to 128x128.
//!
//! All settings live in [`IsolationConfig`]. Scoring against the data set's
//! annotations is in [`score`]; it is evaluation only. On BCCD (344 photos
//! with one annotated leukocyte) the largest box has a mean IoU of 0.858
//! with the annotation (`leuko isolate --score`).
//!
//! ```
//! use leuko::isolate::{crop, isolate, CropConfig, IsolationConfig};
//! let photo = image::RgbImage::from_pixel(64, 48, image::Rgb([200, 200, 200]));
//! let boxes = isolate(&photo, &IsolationConfig::default());
//! assert!(boxes.is_empty()); // an empty smear: no leukocyte, not an error
//! if let Some(cell) = boxes.first() {
//!     let input = crop(&photo, cell, &CropConfig::default()); // 128x128
//!     assert_eq!(input.dimensions(), (128, 128));
//! }
//! ```

pub mod boxes;
pub mod colour;
pub mod components;
pub mod config;
pub mod crop;
pub mod grow;
pub mod masks;
pub mod morphology;
pub mod outline;
pub mod overlay;
pub mod score;

pub use boxes::{merge_close, LeukocyteBox, Piece};
pub use colour::{
    downsample, estimate_background, work_factor, ColourFeatures, ColourModel, Window,
};
pub use components::{components, Component, Labelling};
pub use config::IsolationConfig;
pub use crop::{crop, crop_window, resize, CropConfig, CropWindow};
pub use grow::{grow, trim, GrownRegion, Growth};
pub use masks::{background_mask, cytoplasm_mask, erythrocyte_mask, leukocyte_mask};
pub use morphology::{close, dilate, erode, open};
pub use outline::{CellMask, Morphometrics, MorphometricsUm, Outline, CYTOPLASM, NUCLEUS};
pub use overlay::overlay;
pub use score::{
    iou_with_voc, mask_cells, mask_photo_stem, score_against_mask, score_dataset,
    score_dataset_with, ImageScore, MaskReport, MaskScore, MaskSkip, ScoreReport,
};

use image::{GrayImage, RgbImage};

/// [`isolate`] for a photo taken at `magnification` times BCCD's (its cells that many times as
/// large as in a BCCD photo of the same size), boxes in `photo`'s pixels.
///
/// The isolation's radii and minimum areas are set for cells of BCCD's size, so the photo is
/// first resized by `1 / magnification` (cells at BCCD's size, the field of view larger or
/// smaller than BCCD's) and isolated with [`IsolationConfig::at_scale`], which keeps cells at
/// BCCD's size in working pixels too. If nothing is found that way, the photo is isolated as it
/// is. A factor of 1 (or one that is not a positive number) is plain [`isolate`].
pub fn isolate_at(
    photo: &RgbImage,
    cfg: &IsolationConfig,
    magnification: f32,
) -> Vec<LeukocyteBox> {
    cells_at(photo, cfg, magnification)
        .into_iter()
        .map(|c| c.crop_box)
        .collect()
}

/// [`isolate_at`] with each cell's outline ([`FoundCell`]), in `photo`'s pixels.
pub fn cells_at(photo: &RgbImage, cfg: &IsolationConfig, magnification: f32) -> Vec<FoundCell> {
    let m = f64::from(magnification);
    let (w, h) = photo.dimensions();
    if !(m.is_finite() && m > 0.0) || (m - 1.0).abs() < 1e-6 || w == 0 || h == 0 {
        return isolate_with_mask(photo, cfg).found();
    }
    let sw = ((w as f64 / m).round() as u32).max(1);
    let sh = ((h as f64 / m).round() as u32).max(1);
    let scaled = image::imageops::resize(photo, sw, sh, image::imageops::FilterType::Triangle);
    let (fx, fy) = (w as f64 / sw as f64, h as f64 / sh as f64);
    let cells: Vec<FoundCell> = isolate_with_mask(&scaled, &cfg.at_scale(1.0 / m))
        .found()
        .into_iter()
        .map(|c| FoundCell {
            crop_box: c.crop_box.resized(fx, fy, w, h),
            mask: c.mask.resized(fx, fy, w, h),
        })
        .collect();
    if cells.is_empty() {
        // Resized down, a photo whose few cells fill the field of view can come out with
        // nothing found (measured at 2x-3x); as it is, its cells are at least boxed in part.
        isolate_with_mask(photo, cfg).found()
    } else {
        cells
    }
}

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
    /// The outline of each cell of `boxes`, in the same order, at the photo's resolution.
    pub cells: Vec<CellMask>,
}

/// One leukocyte found in a photo: the box its network input is cut from, and its outline.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundCell {
    /// The crop window: the cell's outline pushed out by the isolation's edge and margin
    /// ([`IsolationConfig::edge_px`], [`IsolationConfig::box_margin_fraction`]), the framing
    /// the network was trained on.
    pub crop_box: LeukocyteBox,
    /// Nucleus and cytoplasm at the photo's resolution; its [`CellMask::bbox`] is the cell's
    /// tight box.
    pub mask: CellMask,
}

impl FoundCell {
    /// The bounding box of the cell's outline (the crop box if the outline is empty).
    pub fn cell_box(&self) -> LeukocyteBox {
        self.mask.bbox().unwrap_or(self.crop_box)
    }
}

impl Isolation {
    /// The cells found, largest first.
    pub fn found(&self) -> Vec<FoundCell> {
        self.boxes
            .iter()
            .zip(&self.cells)
            .map(|(b, m)| FoundCell {
                crop_box: *b,
                mask: m.clone(),
            })
            .collect()
    }
}

/// Every leukocyte in `photo`, largest first (training uses the first). A
/// photo without one gives an empty list. Never panics, for any photo size.
pub fn isolate(photo: &RgbImage, cfg: &IsolationConfig) -> Vec<LeukocyteBox> {
    isolate_with_mask(photo, cfg).boxes
}

/// What tells nuclei and cytoplasm apart from the rest of the smear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cue {
    /// Blue nuclei, bluish or strongly stained cytoplasm (the first look).
    Colour,
    /// The darkest stained pixels (the second look, when colour finds nothing; see
    /// [`IsolationConfig::dark_nucleus_min_pct`]).
    Darkness,
}

/// The nuclei that seed cells: the leukocyte mask, opened, its pieces that
/// are large enough (smaller ones are platelets and scraps).
fn seeds(
    work: &RgbImage,
    model: &ColourModel,
    cfg: &IsolationConfig,
    cue: Cue,
) -> (GrayImage, Labelling, Vec<bool>) {
    let nucleus = match cue {
        Cue::Colour => leukocyte_mask(work, model, cfg),
        Cue::Darkness => {
            let m = masks::dark_nucleus_mask(work, model, cfg);
            // Nuclei are a small part of a field; a photo mostly "darker than its background"
            // has no background to measure against (a dark or blank frame).
            if masks::count(&m) * 2 > (work.width() as usize * work.height() as usize) {
                GrayImage::new(work.width(), work.height())
            } else {
                m
            }
        }
    };
    let opened = open(&nucleus, cfg.open_radius_px);
    let seeds = components(&opened);
    let area = work.width() as f64 * work.height() as f64;
    let seed_min = (fraction(cfg.seed_min_area_fraction) * area).max(1.0);
    let is_seed = seeds
        .components
        .iter()
        .map(|c| c.area_px as f64 >= seed_min)
        .collect();
    (nucleus, seeds, is_seed)
}

/// Where the growing happens: one window per group of seeds whose
/// surroundings overlap. `outer` is the seeds' box plus `margin` (growth,
/// closing and opening cannot reach beyond it, so outside nothing changes);
/// `inner` is the seeds' box plus `reach` (where the growth can go, so
/// where the cytoplasm mask is needed).
#[derive(Debug, Clone, Copy)]
struct SeedWindow {
    outer: Window,
    inner: Window,
}

fn seed_windows(seeds: &Labelling, is_seed: &[bool], reach: u32, margin: u32) -> Vec<SeedWindow> {
    let (w, h) = (seeds.width, seeds.height);
    let boxes: Vec<Window> = seeds
        .components
        .iter()
        .zip(is_seed)
        .filter(|(_, &s)| s)
        .map(|(c, _)| Window {
            x: c.x_min,
            y: c.y_min,
            width: c.x_max - c.x_min,
            height: c.y_max - c.y_min,
        })
        .collect();
    let union = |a: Window, b: Window| {
        let (x, y) = (a.x.min(b.x), a.y.min(b.y));
        let x1 = (a.x + a.width).max(b.x + b.width);
        let y1 = (a.y + a.height).max(b.y + b.height);
        Window {
            x,
            y,
            width: x1 - x,
            height: y1 - y,
        }
    };
    let overlaps = |a: &Window, b: &Window| {
        a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height
    };
    // (outer window, union of the seed boxes in it)
    let mut groups: Vec<(Window, Window)> =
        boxes.iter().map(|b| (b.grown(margin, w, h), *b)).collect();
    loop {
        let mut joined = false;
        'outer: for i in 0..groups.len() {
            for j in i + 1..groups.len() {
                if overlaps(&groups[i].0, &groups[j].0) {
                    let (a, b) = (groups[i], groups[j]);
                    groups[i] = (union(a.0, b.0), union(a.1, b.1));
                    groups.remove(j);
                    joined = true;
                    break 'outer;
                }
            }
        }
        if !joined {
            break;
        }
    }
    groups
        .into_iter()
        .map(|(outer, seeds_box)| SeedWindow {
            outer,
            inner: seeds_box.grown(reach, w, h),
        })
        .collect()
}

/// Like [`isolate`], and also returns the mask (for overlays and debugging).
///
/// Equivalent to running the step functions on the whole working image
/// (see the module documentation); the growing steps only look at windows
/// around the nuclei, which gives the same result in a fraction of the time.
/// When the colour cues find no leukocyte, the photo gets a second look by darkness
/// ([`IsolationConfig::dark_nucleus_min_pct`]).
pub fn isolate_with_mask(photo: &RgbImage, cfg: &IsolationConfig) -> Isolation {
    let (w, h) = photo.dimensions();
    let factor = work_factor(w, h, cfg.work_max_side_px);
    let work = downsample(photo, factor);
    let model = ColourModel::estimate(&work, cfg);
    let first = isolate_by(&work, &model, (w, h), factor, cfg, Cue::Colour);
    // Darkness is measured against the background: a dim frame has none worth the name.
    let lit = model.background.iter().map(|&c| c as u32).sum::<u32>() >= 3 * 64;
    if cfg.dark_nucleus_min_pct > 0 && lit {
        let second = isolate_by(&work, &model, (w, h), factor, cfg, Cue::Darkness);
        if first.boxes.is_empty() {
            if !second.boxes.is_empty() {
                return second;
            }
        } else {
            return overrule(first, second);
        }
    }
    first
}

/// How much more nucleus a cell of the second look needs than the first look's cells it
/// overlaps to replace them.
const OVERRULE_FACTOR: u64 = 2;

/// The least circularity of a second-look cell that overrules the first look: leukocytes are
/// round to oval (the second look's outlines of Jiangxi Tecom leukocytes: mostly 0.7-1.0),
/// while in a dark photo darkness can also join a leukocyte to the erythrocytes around it, a
/// ragged outline (0.06-0.3 on darkened BCCD photos).
const OVERRULE_MIN_CIRCULARITY: f64 = 0.5;

/// The first look's cells, except where the second look found a much larger cell: one that
/// overlaps first-look cells and has at least [`OVERRULE_FACTOR`] times the nucleus of the
/// largest of them (the colour cues caught a lobe or a corner of a cell whose nucleus is not
/// blue enough), or overlaps none and has at least that much more than the first look's largest
/// (the colour cues caught only a fragment beside the leukocyte).
fn overrule(first: Isolation, second: Isolation) -> Isolation {
    let overlaps = |a: &LeukocyteBox, b: &LeukocyteBox| {
        a.x_min < b.x_max && b.x_min < a.x_max && a.y_min < b.y_max && b.y_min < a.y_max
    };
    let largest_first = first.boxes.iter().map(|b| b.area_px).max().unwrap_or(0);
    let mut dropped = vec![false; first.boxes.len()];
    let mut taken = Vec::new();
    for (k, b) in second.boxes.iter().enumerate() {
        let hit: Vec<usize> = (0..first.boxes.len())
            .filter(|&i| overlaps(b, &first.boxes[i]))
            .collect();
        let rival = hit
            .iter()
            .map(|&i| first.boxes[i].area_px)
            .max()
            .unwrap_or(largest_first);
        if b.area_px >= OVERRULE_FACTOR * rival.max(1)
            && second.cells[k].morphometrics().circularity >= OVERRULE_MIN_CIRCULARITY
        {
            for i in hit {
                dropped[i] = true;
            }
            taken.push(k);
        }
    }
    if taken.is_empty() {
        return first;
    }
    let mut cells: Vec<(LeukocyteBox, CellMask)> = first
        .boxes
        .into_iter()
        .zip(first.cells)
        .zip(&dropped)
        .filter(|(_, &d)| !d)
        .map(|(c, _)| c)
        .collect();
    let second_cells: Vec<(LeukocyteBox, CellMask)> =
        second.boxes.into_iter().zip(second.cells).collect();
    cells.extend(taken.into_iter().map(|k| second_cells[k].clone()));
    cells.sort_by(|a, b| {
        b.0.area_px
            .cmp(&a.0.area_px)
            .then(a.0.y_min.cmp(&b.0.y_min))
            .then(a.0.x_min.cmp(&b.0.x_min))
    });
    let mut mask = first.mask;
    for (m, s) in mask.pixels_mut().zip(second.mask.pixels()) {
        m.0[0] = m.0[0].max(s.0[0]);
    }
    let (boxes, cells) = cells.into_iter().unzip();
    Isolation {
        boxes,
        mask,
        scale: first.scale,
        background: first.background,
        cells,
    }
}

/// The isolation of a working image `work` (the photo of `photo_size` shrunk by `factor`) by
/// one cue.
fn isolate_by(
    work: &RgbImage,
    model: &ColourModel,
    photo_size: (u32, u32),
    factor: u32,
    cfg: &IsolationConfig,
    cue: Cue,
) -> Isolation {
    let (w, h) = photo_size;
    let (ww, wh) = work.dimensions();
    let (nucleus, seeds, is_seed) = seeds(work, model, cfg, cue);

    // Grow each group of seeds into its cytoplasm, inside its window.
    let (fill, trim_r) = (cfg.fill_radius_px.min(1000), cfg.trim_radius_px.min(1000));
    let reach = cfg.grow_max_px.min(10_000) + 1;
    let margin = reach + 2 * fill + trim_r + 1;
    let mut growths: Vec<(Window, Growth)> = Vec::new();
    let mut pieces: Vec<Piece> = Vec::new();
    for SeedWindow { outer: win, inner } in seed_windows(&seeds, &is_seed, reach, margin) {
        let local = seeds.crop(win.x, win.y, win.width, win.height);
        let strong =
            image::imageops::crop_imm(&nucleus, win.x, win.y, win.width, win.height).to_image();
        // The cytoplasm mask where the growth can reach; nothing beyond.
        let mut cyto = GrayImage::new(win.width, win.height);
        let part = match cue {
            Cue::Colour => masks::cytoplasm_mask_in(work, model, cfg, inner),
            Cue::Darkness => masks::dark_cytoplasm_mask_in(work, model, cfg, inner),
        };
        image::imageops::replace(
            &mut cyto,
            &part,
            (inner.x - win.x) as i64,
            (inner.y - win.y) as i64,
        );
        let g = grow(
            &local,
            &is_seed,
            &cyto,
            &strong,
            cfg.grow_max_px,
            cfg.open_radius_px.saturating_add(1),
        );
        let g = trim(&g, fill, trim_r);
        pieces.extend(g.regions.iter().map(|r| Piece {
            x_min: r.extent.x_min + win.x,
            y_min: r.extent.y_min + win.y,
            x_max: r.extent.x_max + win.x,
            y_max: r.extent.y_max + win.y,
            nucleus_area_px: r.nucleus_area_px,
        }));
        growths.push((win, g));
    }
    let (cells, owner) = merge_close(&pieces, cfg.merge_gap_fraction);

    // Keep cells with enough nucleus; scale to the photo; largest first.
    let min_area = (fraction(cfg.min_area_fraction) * w as f64 * h as f64).max(1.0);
    let mut kept: Vec<(usize, LeukocyteBox)> = cells
        .iter()
        .enumerate()
        .map(|(k, c)| {
            (
                k,
                boxes::to_photo(c, factor, w, h, cfg.edge_px, cfg.box_margin_fraction),
            )
        })
        .filter(|(_, b)| b.area_px as f64 >= min_area && b.box_area_px() > 0)
        .collect();
    kept.sort_by(|a, b| {
        b.1.area_px
            .cmp(&a.1.area_px)
            .then(a.1.y_min.cmp(&b.1.y_min))
            .then(a.1.x_min.cmp(&b.1.x_min))
    });

    // The mask of the kept cells.
    let mut keep_cell = vec![false; cells.len()];
    for (k, _) in &kept {
        keep_cell[*k] = true;
    }
    let mut mask = GrayImage::new(ww, wh);
    // Which kept cell (1-based, in `kept` order) each working pixel belongs to.
    let mut rank = vec![0u32; cells.len()];
    for (r, (k, _)) in kept.iter().enumerate() {
        rank[*k] = r as u32 + 1;
    }
    let mut member = vec![0u32; (ww * wh) as usize];
    let mut first_piece = 0;
    for (win, g) in &growths {
        for (i, &l) in g.labels.iter().enumerate() {
            if l != 0 && keep_cell[owner[first_piece + l as usize - 1]] {
                let (x, y) = (
                    win.x + (i as u32 % win.width),
                    win.y + (i as u32 / win.width),
                );
                mask.put_pixel(x, y, image::Luma([masks::IN]));
                member[(y * ww + x) as usize] = rank[owner[first_piece + l as usize - 1]];
            }
        }
        first_piece += g.regions.len();
    }
    let outlines = kept
        .iter()
        .enumerate()
        .map(|(r, (k, _))| {
            let c = &cells[*k];
            let part = |x: u32, y: u32| {
                let i = (y * ww + x) as usize;
                if member[i] != r as u32 + 1 {
                    outline::Part::Outside
                } else if nucleus.as_raw()[i] != 0 {
                    outline::Part::Nucleus
                } else {
                    outline::Part::Cytoplasm
                }
            };
            let work_box = (c.x_min, c.y_min, c.x_max, c.y_max);
            outline::from_working(part, work_box, (ww, wh), factor, (w, h))
        })
        .collect();
    Isolation {
        boxes: kept.into_iter().map(|(_, b)| b).collect(),
        mask,
        scale: factor,
        background: model.background,
        cells: outlines,
    }
}

/// A share in 0..=1 (NaN and out-of-range values clamped), for config fields.
fn fraction(v: f64) -> f64 {
    if v.is_finite() {
        v.clamp(0.0, 1.0)
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
        assert_eq!(iso.boxes.len(), 1, "{:?} scale {}", iso.boxes, iso.scale);
        let b = iso.boxes[0];
        // The cell is 81 px across; the edge and margin add ~5 px on each side.
        for (got, want) in [
            (b.x_min, 120),
            (b.y_min, 80),
            (b.x_max, 201),
            (b.y_max, 161),
        ] {
            assert!((got as i64 - want).abs() <= 5, "{b:?}");
        }
        // 320 px is more than the 240 px working size: worked on at half size.
        assert_eq!(iso.scale, 2);
        assert!(masks::count(&iso.mask) > 1000);
    }

    /// The chain of whole-image step functions, without windows.
    fn isolate_by_steps(photo: &RgbImage, cfg: &IsolationConfig) -> Vec<LeukocyteBox> {
        let (w, h) = photo.dimensions();
        let factor = work_factor(w, h, cfg.work_max_side_px);
        let work = downsample(photo, factor);
        let model = ColourModel::estimate(&work, cfg);
        let (nucleus, seeds, is_seed) = seeds(&work, &model, cfg, Cue::Colour);
        let cyto = cytoplasm_mask(&work, &model, cfg);
        let g = grow(
            &seeds,
            &is_seed,
            &cyto,
            &nucleus,
            cfg.grow_max_px,
            cfg.open_radius_px + 1,
        );
        let g = trim(&g, cfg.fill_radius_px, cfg.trim_radius_px);
        let pieces: Vec<Piece> = g
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
        let (cells, _) = merge_close(&pieces, cfg.merge_gap_fraction);
        let mut out: Vec<LeukocyteBox> = cells
            .iter()
            .map(|c| boxes::to_photo(c, factor, w, h, cfg.edge_px, cfg.box_margin_fraction))
            .filter(|b| b.area_px as f64 >= cfg.min_area_fraction * (w * h) as f64)
            .collect();
        out.sort_by(|a, b| {
            b.area_px
                .cmp(&a.area_px)
                .then(a.y_min.cmp(&b.y_min))
                .then(a.x_min.cmp(&b.x_min))
        });
        out
    }

    #[test]
    fn windows_give_the_same_boxes_as_whole_image_steps() {
        let cfg = IsolationConfig::default();
        for cells in [
            vec![(160i64, 120i64, 40i64)],
            vec![(60, 60, 30), (250, 170, 45)],
            vec![(100, 100, 30), (150, 110, 30)],
        ] {
            let img = smear(320, 240, &cells);
            assert_eq!(
                isolate(&img, &cfg),
                isolate_by_steps(&img, &cfg),
                "{cells:?}"
            );
        }
    }

    /// A rapid-stain field: yellowish background, pale erythrocyte rings, and a leukocyte
    /// whose nucleus is dark reddish-purple (not blue) inside a pale brownish cytoplasm.
    fn rapid_stain(w: u32, h: u32, cell: Option<(i64, i64, i64)>) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (x, y) = (x as i64, y as i64);
            if let Some((cx, cy, r)) = cell {
                let d2 = (x - cx).pow(2) + (y - cy).pow(2);
                if d2 <= (r * 6 / 10).pow(2) {
                    return Rgb([150, 70, 100]);
                }
                if d2 <= r * r {
                    return Rgb([215, 190, 140]);
                }
            }
            let (ex, ey) = (x % 40 - 20, y % 40 - 20);
            let e2 = ex * ex + ey * ey;
            if (14 * 14..17 * 17).contains(&e2) {
                return Rgb([240, 225, 160]);
            }
            Rgb([255, 250, 180])
        })
    }

    #[test]
    fn a_dark_nucleus_that_is_not_blue_is_found_by_the_second_look() {
        let cfg = IsolationConfig::default();
        let img = rapid_stain(120, 120, Some((60, 60, 28)));
        // The colour cues alone miss it.
        let work = downsample(&img, 1);
        let model = ColourModel::estimate(&work, &cfg);
        assert!(isolate_by(&work, &model, (120, 120), 1, &cfg, Cue::Colour)
            .boxes
            .is_empty());
        let boxes = isolate(&img, &cfg);
        assert_eq!(boxes.len(), 1, "{boxes:?}");
        let b = boxes[0];
        // The whole cell (57 px across), not just its nucleus (33 px).
        let truth = LeukocyteBox {
            x_min: 32,
            y_min: 32,
            x_max: 89,
            y_max: 89,
            area_px: 0,
        };
        assert!(b.iou(&truth) > 0.8, "{b:?}");
        // Switched off, nothing is found.
        let off = IsolationConfig {
            dark_nucleus_min_pct: 0,
            ..cfg.clone()
        };
        assert!(isolate(&img, &off).is_empty());
    }

    #[test]
    fn pale_erythrocytes_alone_give_no_cell_in_the_second_look() {
        let img = rapid_stain(120, 120, None);
        assert!(isolate(&img, &IsolationConfig::default()).is_empty());
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
