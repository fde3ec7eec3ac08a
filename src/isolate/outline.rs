//! Outlines of one leukocyte: which photo pixels are its nucleus and its cytoplasm, its tight
//! box, and the shape measures haematology reads off an outline (areas, N:C ratio, lobes,
//! circularity).
//!
//! The isolation finds cells at working resolution (a 640x480 photo at 214x160); a
//! [`CellMask`] brings one cell back to the photo's pixels by interpolating its working-pixel
//! membership bilinearly and keeping what is more than half inside, so outlines are smooth at
//! the photo's resolution instead of staircases of 3x3 blocks.

use super::boxes::LeukocyteBox;
use super::components::components;
use image::{GrayImage, Luma};
use serde::Serialize;

/// Mask value of a cytoplasm pixel in [`CellMask::pixels`] and in `leuko isolate --masks`.
pub const CYTOPLASM: u8 = 128;
/// Mask value of a nucleus pixel.
pub const NUCLEUS: u8 = 255;

/// One leukocyte's pixels in a window of the photo: 0 outside the cell, [`CYTOPLASM`],
/// [`NUCLEUS`]. The window's coordinates are photo pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellMask {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    /// Row-major, `width * height` values.
    pub pixels: Vec<u8>,
}

/// What the outline of one cell measures, in photo pixels (and micrometres when the scale is
/// known). Documented in `docs/file-formats.md`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Morphometrics {
    /// Pixels of the cell (nucleus and cytoplasm).
    pub cell_area_px: u64,
    pub nucleus_area_px: u64,
    /// Nucleus area over cell area, 0-1.
    pub nc_ratio: f64,
    /// Separate pieces of nucleus in the outline (each at least 5% of the nucleus): 1 for a
    /// round or kidney-shaped nucleus, 2-5 for a segmented one whose lobes the photo shows apart.
    pub nucleus_lobes: u32,
    /// `4 pi area / perimeter^2` of the cell outline: 1 for a disc, lower for irregular or
    /// elongated cells.
    pub circularity: f64,
}

/// [`Morphometrics`] in micrometres, for a photo of known scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MorphometricsUm {
    pub cell_area_um2: f64,
    pub nucleus_area_um2: f64,
    /// Diameter of the disc of the cell's area.
    pub cell_diameter_um: f64,
}

impl Morphometrics {
    pub fn in_um(&self, um_per_px: f64) -> MorphometricsUm {
        let a = um_per_px * um_per_px;
        let cell = self.cell_area_px as f64 * a;
        MorphometricsUm {
            cell_area_um2: cell,
            nucleus_area_um2: self.nucleus_area_px as f64 * a,
            cell_diameter_um: 2.0 * (cell / std::f64::consts::PI).sqrt(),
        }
    }
}

impl CellMask {
    /// An empty mask (no pixel in the cell) of the given window.
    pub fn empty(x: u32, y: u32, width: u32, height: u32) -> CellMask {
        CellMask {
            x,
            y,
            width,
            height,
            pixels: vec![0; width as usize * height as usize],
        }
    }

    /// The mask value at photo pixel `(px, py)` (0 outside the window).
    pub fn at(&self, px: u32, py: u32) -> u8 {
        if px < self.x || py < self.y || px >= self.x + self.width || py >= self.y + self.height {
            return 0;
        }
        self.pixels[((py - self.y) * self.width + (px - self.x)) as usize]
    }

    /// The bounding box of the cell's pixels in photo pixels (max exclusive); `area_px` is the
    /// nucleus area, as in the isolation's boxes. `None` for an empty mask.
    pub fn bbox(&self) -> Option<LeukocyteBox> {
        let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
        for (i, &v) in self.pixels.iter().enumerate() {
            if v != 0 {
                let (x, y) = (i as u32 % self.width, i as u32 / self.width);
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x + 1);
                y1 = y1.max(y + 1);
            }
        }
        (x1 > 0).then(|| LeukocyteBox {
            x_min: self.x + x0,
            y_min: self.y + y0,
            x_max: self.x + x1,
            y_max: self.y + y1,
            area_px: self.nucleus_area_px(),
        })
    }

    pub fn cell_area_px(&self) -> u64 {
        self.pixels.iter().filter(|&&v| v != 0).count() as u64
    }

    pub fn nucleus_area_px(&self) -> u64 {
        self.pixels.iter().filter(|&&v| v == NUCLEUS).count() as u64
    }

    pub fn morphometrics(&self) -> Morphometrics {
        let cell = self.cell_area_px();
        let nucleus = self.nucleus_area_px();
        Morphometrics {
            cell_area_px: cell,
            nucleus_area_px: nucleus,
            nc_ratio: if cell > 0 {
                nucleus as f64 / cell as f64
            } else {
                0.0
            },
            nucleus_lobes: self.nucleus_lobes(),
            circularity: self.circularity(),
        }
    }

    fn part(&self, nucleus_only: bool) -> GrayImage {
        GrayImage::from_fn(self.width, self.height, |x, y| {
            let v = self.pixels[(y * self.width + x) as usize];
            let on = if nucleus_only { v == NUCLEUS } else { v != 0 };
            Luma([if on { 255 } else { 0 }])
        })
    }

    fn nucleus_lobes(&self) -> u32 {
        let pieces = components(&self.part(true));
        let total: u64 = pieces.components.iter().map(|c| c.area_px as u64).sum();
        pieces
            .components
            .iter()
            .filter(|c| c.area_px as u64 * 20 >= total)
            .count() as u32
    }

    /// `4 pi A / P^2`, the perimeter estimated from the pixel edges between the cell and the
    /// rest (horizontal plus vertical) times pi/4: the Cauchy-Crofton estimate, which is right
    /// on average over a shape's orientations (a digital disc's edge count is 4/pi of its
    /// circumference).
    fn circularity(&self) -> f64 {
        let (w, h) = (self.width as usize, self.height as usize);
        let inside = |x: isize, y: isize| {
            x >= 0
                && y >= 0
                && (x as usize) < w
                && (y as usize) < h
                && self.pixels[y as usize * w + x as usize] != 0
        };
        let mut edges = 0u64;
        let mut area = 0u64;
        for y in 0..h as isize {
            for x in 0..w as isize {
                if inside(x, y) {
                    area += 1;
                    for (dx, dy) in [(1, 0), (-1, 0), (0, 1), (0, -1)] {
                        if !inside(x + dx, y + dy) {
                            edges += 1;
                        }
                    }
                }
            }
        }
        if edges == 0 {
            return 0.0;
        }
        let perimeter = edges as f64 * std::f64::consts::FRAC_PI_4;
        (4.0 * std::f64::consts::PI * area as f64 / (perimeter * perimeter)).min(1.0)
    }

    /// Writes this cell into a photo-size mask (0 / [`CYTOPLASM`] / [`NUCLEUS`]); a pixel
    /// already marked keeps the higher value (a nucleus is never overwritten by cytoplasm).
    pub fn paint_into(&self, photo_mask: &mut GrayImage) {
        let (pw, ph) = photo_mask.dimensions();
        for y in 0..self.height {
            let py = self.y + y;
            if py >= ph {
                break;
            }
            for x in 0..self.width {
                let px = self.x + x;
                if px >= pw {
                    break;
                }
                let v = self.pixels[(y * self.width + x) as usize];
                let cur = photo_mask.get_pixel(px, py).0[0];
                if v > cur {
                    photo_mask.put_pixel(px, py, Luma([v]));
                }
            }
        }
    }

    /// The mask of the same cell in a photo resized by `(fx, fy)` to `width x height`
    /// (nearest pixel), for cells found in a resized copy of a photo.
    pub fn resized(&self, fx: f64, fy: f64, width: u32, height: u32) -> CellMask {
        let x0 = ((self.x as f64 * fx).floor() as u32).min(width);
        let y0 = ((self.y as f64 * fy).floor() as u32).min(height);
        let x1 = (((self.x + self.width) as f64 * fx).ceil() as u32).clamp(x0, width);
        let y1 = (((self.y + self.height) as f64 * fy).ceil() as u32).clamp(y0, height);
        let mut out = CellMask::empty(x0, y0, x1 - x0, y1 - y0);
        for y in y0..y1 {
            let sy = ((y as f64 + 0.5) / fy).floor().max(0.0) as u32;
            for x in x0..x1 {
                let sx = ((x as f64 + 0.5) / fx).floor().max(0.0) as u32;
                out.pixels[((y - y0) * out.width + (x - x0)) as usize] = self.at(sx, sy);
            }
        }
        out
    }

    /// The outline of the cell and of each piece of its nucleus, as closed polygons of photo
    /// pixel corners (see [`Outline`]).
    pub fn outline(&self) -> Outline {
        let cell = trace(&self.part(false), self.x, self.y);
        let nucleus = trace(&self.part(true), self.x, self.y);
        Outline { cell, nucleus }
    }
}

/// What one working pixel is to the cell being outlined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Outside,
    Cytoplasm,
    Nucleus,
}

/// The photo-resolution mask of one cell from its working-resolution pixels: `part(x, y)` for
/// working pixels inside `work_box` (`x_min, y_min, x_max, y_max`, max exclusive) of a
/// `work_size` working image, each `factor x factor` pixels of a `photo_size` photo. A photo
/// pixel is in the cell when the bilinear interpolation of the cell's membership at its centre
/// is at least one half, and nucleus likewise; holes in the cell (pale cytoplasm the colour
/// cues missed, enclosed by the cell) are filled as cytoplasm.
pub fn from_working(
    part: impl Fn(u32, u32) -> Part,
    work_box: (u32, u32, u32, u32),
    work_size: (u32, u32),
    factor: u32,
    photo_size: (u32, u32),
) -> CellMask {
    let f = factor.max(1);
    let (ww, wh) = work_size;
    let (pw, ph) = photo_size;
    let (bx0, by0, bx1, by1) = work_box;
    // One working pixel of room on each side for the interpolation to fade out.
    let x0 = (bx0.saturating_sub(1) * f).min(pw);
    let y0 = (by0.saturating_sub(1) * f).min(ph);
    let x1 = ((bx1 + 1) * f).clamp(x0, pw);
    let y1 = ((by1 + 1) * f).clamp(y0, ph);
    let mut out = CellMask::empty(x0, y0, x1 - x0, y1 - y0);
    if ww == 0 || wh == 0 {
        return out;
    }
    let inside = |x: i64, y: i64| -> (f32, f32) {
        if x < bx0 as i64 || y < by0 as i64 || x >= bx1 as i64 || y >= by1 as i64 {
            return (0.0, 0.0);
        }
        let (x, y) = ((x as u32).min(ww - 1), (y as u32).min(wh - 1));
        match part(x, y) {
            Part::Outside => (0.0, 0.0),
            Part::Cytoplasm => (1.0, 0.0),
            Part::Nucleus => (1.0, 1.0),
        }
    };
    let ff = f as f32;
    for py in y0..y1 {
        let v = (py as f32 + 0.5) / ff - 0.5;
        let j = v.floor();
        let b = v - j;
        let j = j as i64;
        for px in x0..x1 {
            let u = (px as f32 + 0.5) / ff - 0.5;
            let i = u.floor();
            let a = u - i;
            let i = i as i64;
            let (c00, n00) = inside(i, j);
            let (c10, n10) = inside(i + 1, j);
            let (c01, n01) = inside(i, j + 1);
            let (c11, n11) = inside(i + 1, j + 1);
            let lerp = |p00: f32, p10: f32, p01: f32, p11: f32| {
                (p00 * (1.0 - a) + p10 * a) * (1.0 - b) + (p01 * (1.0 - a) + p11 * a) * b
            };
            let cell = lerp(c00, c10, c01, c11);
            let nuc = lerp(n00, n10, n01, n11);
            let value = if cell < 0.5 {
                0
            } else if nuc >= 0.5 {
                NUCLEUS
            } else {
                CYTOPLASM
            };
            out.pixels[((py - y0) * out.width + (px - x0)) as usize] = value;
        }
    }
    fill_holes(&mut out);
    out
}

/// Marks as cytoplasm every outside pixel that the window's border cannot reach through
/// outside pixels (4-connected).
fn fill_holes(m: &mut CellMask) {
    let (w, h) = (m.width as usize, m.height as usize);
    if w == 0 || h == 0 {
        return;
    }
    let mut reached = vec![false; w * h];
    let mut stack: Vec<usize> = Vec::new();
    for x in 0..w {
        stack.push(x);
        stack.push((h - 1) * w + x);
    }
    for y in 0..h {
        stack.push(y * w);
        stack.push(y * w + w - 1);
    }
    while let Some(i) = stack.pop() {
        if reached[i] || m.pixels[i] != 0 {
            continue;
        }
        reached[i] = true;
        let (x, y) = (i % w, i / w);
        if x > 0 {
            stack.push(i - 1);
        }
        if x + 1 < w {
            stack.push(i + 1);
        }
        if y > 0 {
            stack.push(i - w);
        }
        if y + 1 < h {
            stack.push(i + w);
        }
    }
    for (v, r) in m.pixels.iter_mut().zip(reached) {
        if *v == 0 && !r {
            *v = CYTOPLASM;
        }
    }
}

/// Polygons of a cell's outline, in photo pixel coordinates (corners of pixels, so a polygon
/// encloses exactly the pixels of its piece). `cell` has one polygon per separate piece of the
/// cell (almost always one), `nucleus` one per piece of nucleus, largest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Outline {
    pub cell: Vec<Vec<[u32; 2]>>,
    pub nucleus: Vec<Vec<[u32; 2]>>,
}

/// The outer boundary of each 8-connected piece of `mask` (non-zero pixels) as a polygon of pixel
/// corners, offset by `(ox, oy)`; collinear corners dropped. Pieces under 4 pixels are left out.
fn trace(mask: &GrayImage, ox: u32, oy: u32) -> Vec<Vec<[u32; 2]>> {
    let lab = components(mask);
    let (w, h) = (mask.width() as i64, mask.height() as i64);
    let mut order: Vec<usize> = (0..lab.components.len())
        .filter(|&k| lab.components[k].area_px >= 4)
        .collect();
    order.sort_by_key(|&k| std::cmp::Reverse(lab.components[k].area_px));
    let mut out = Vec::new();
    for k in order {
        let label = k as u32 + 1;
        let on = |x: i64, y: i64| {
            x >= 0 && y >= 0 && x < w && y < h && lab.labels[(y * w + x) as usize] == label
        };
        // Start at the top-left corner of the piece's first pixel in raster order, walking
        // the boundary with the piece on the right (clockwise in image coordinates).
        let c = &lab.components[k];
        let Some(start_x) = (c.x_min..c.x_max).find(|&x| on(x as i64, c.y_min as i64)) else {
            continue;
        };
        let start = (start_x as i64, c.y_min as i64);
        // Directions: 0 right, 1 down, 2 left, 3 up.
        const D: [(i64, i64); 4] = [(1, 0), (0, 1), (-1, 0), (0, -1)];
        let (mut p, mut dir) = (start, 0usize);
        let mut poly: Vec<[u32; 2]> = Vec::new();
        // Every boundary edge is walked once; the bound only guards against a bug looping.
        for _ in 0..4 * (w * h) as usize + 8 {
            // The pixels on the right and on the left of the edge leaving p in direction dir.
            let (right_px, left_px) = match dir {
                0 => ((p.0, p.1), (p.0, p.1 - 1)),
                1 => ((p.0 - 1, p.1), (p.0, p.1)),
                2 => ((p.0 - 1, p.1 - 1), (p.0 - 1, p.1)),
                _ => ((p.0, p.1 - 1), (p.0 - 1, p.1 - 1)),
            };
            let new_dir = if on(left_px.0, left_px.1) {
                // 8-connected: a diagonal neighbour belongs to the piece, turn left onto it.
                (dir + 3) % 4
            } else if on(right_px.0, right_px.1) {
                dir
            } else {
                (dir + 1) % 4
            };
            if new_dir != dir || poly.is_empty() {
                poly.push([(p.0 + ox as i64) as u32, (p.1 + oy as i64) as u32]);
            }
            dir = new_dir;
            p = (p.0 + D[dir].0, p.1 + D[dir].1);
            if p == start {
                break;
            }
        }
        poly.dedup();
        if poly.len() >= 3 {
            out.push(poly);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mask whose pixel `(x, y)` (window coordinates) is `f(x, y)`.
    fn mask_from(x: u32, y: u32, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> CellMask {
        let mut m = CellMask::empty(x, y, w, h);
        for j in 0..h {
            for i in 0..w {
                m.pixels[(j * w + i) as usize] = f(i, j);
            }
        }
        m
    }

    /// A disc of radius `r` (pixel centres within `r` of the centre) in a window at (10, 20),
    /// with a nucleus disc of radius `r / 2`.
    fn disc(r: f64) -> (CellMask, (f64, f64)) {
        let size = (2.0 * r).ceil() as u32 + 4;
        let c = size as f64 / 2.0;
        let m = mask_from(10, 20, size, size, |i, j| {
            let d = ((i as f64 + 0.5 - c).powi(2) + (j as f64 + 0.5 - c).powi(2)).sqrt();
            if d <= r / 2.0 {
                NUCLEUS
            } else if d <= r {
                CYTOPLASM
            } else {
                0
            }
        });
        (m, (10.0 + c, 20.0 + c))
    }

    /// Twice the signed area of a closed polygon (shoelace).
    fn area(poly: &[[u32; 2]]) -> f64 {
        let n = poly.len();
        let s: i64 = (0..n)
            .map(|k| {
                let (a, b) = (poly[k], poly[(k + 1) % n]);
                a[0] as i64 * b[1] as i64 - b[0] as i64 * a[1] as i64
            })
            .sum();
        s.abs() as f64 / 2.0
    }

    #[test]
    fn a_discs_outline_lies_within_one_pixel_of_its_circle() {
        for r in [5.0, 12.5, 40.0] {
            let (m, (cx, cy)) = disc(r);
            let o = m.outline();
            assert_eq!(o.cell.len(), 1, "radius {r}: one cell polygon");
            for p in &o.cell[0] {
                let d = ((p[0] as f64 - cx).powi(2) + (p[1] as f64 - cy).powi(2)).sqrt();
                assert!(
                    (d - r).abs() <= 1.0,
                    "radius {r}: corner {p:?} at {d:.2} from the centre"
                );
            }
            assert_eq!(area(&o.cell[0]), m.cell_area_px() as f64, "radius {r}");
            assert_eq!(o.nucleus.len(), 1);
            assert_eq!(
                area(&o.nucleus[0]),
                m.nucleus_area_px() as f64,
                "radius {r}"
            );
            let mm = m.morphometrics();
            assert!(
                mm.circularity > 0.9,
                "radius {r}: circularity {}",
                mm.circularity
            );
            assert!(
                (mm.nc_ratio - 0.25).abs() < 0.08,
                "radius {r}: N:C {}",
                mm.nc_ratio
            );
            assert_eq!(mm.nucleus_lobes, 1);
        }
    }

    #[test]
    fn an_elongated_cell_is_less_circular_than_a_disc() {
        let m = mask_from(0, 0, 80, 20, |i, j| {
            let (u, v) = (
                (i as f64 + 0.5 - 40.0) / 38.0,
                (j as f64 + 0.5 - 10.0) / 8.0,
            );
            if u * u + v * v <= 1.0 {
                CYTOPLASM
            } else {
                0
            }
        });
        let c = m.morphometrics().circularity;
        assert!(c < 0.75, "a 4:1 ellipse's circularity is {c}");
    }

    #[test]
    fn separate_nucleus_pieces_are_lobes_and_specks_are_not() {
        // Three 10x10 lobes and one 2x2 speck inside a 60x20 cell.
        let m = mask_from(0, 0, 60, 20, |i, j| {
            let lobe =
                (5..15).contains(&j) && [2, 22, 42].iter().any(|&x0| (x0..x0 + 10).contains(&i));
            let speck = (1..3).contains(&j) && (30..32).contains(&i);
            if lobe || speck {
                NUCLEUS
            } else {
                CYTOPLASM
            }
        });
        assert_eq!(m.morphometrics().nucleus_lobes, 3);
        let o = m.outline();
        // The outline still draws the speck, smallest last.
        assert_eq!(o.nucleus.len(), 4);
        for p in &o.nucleus[..3] {
            assert_eq!(area(p), 100.0);
        }
        assert_eq!(area(&o.nucleus[3]), 4.0);
    }

    #[test]
    fn diagonal_pixels_are_one_traced_piece_enclosing_its_pixels() {
        // An 8-connected staircase plus a block: the polygon touches itself at the diagonal
        // corners and still encloses exactly the pixels.
        let m = mask_from(5, 7, 12, 12, |i, j| {
            let stair = i == j && i < 6;
            let block = (6..11).contains(&i) && (6..11).contains(&j);
            if stair || block {
                CYTOPLASM
            } else {
                0
            }
        });
        let o = m.outline();
        assert_eq!(o.cell.len(), 1);
        assert_eq!(area(&o.cell[0]), m.cell_area_px() as f64);
        let (xs, ys): (Vec<u32>, Vec<u32>) = o.cell[0].iter().map(|p| (p[0], p[1])).unzip();
        assert_eq!(*xs.iter().min().unwrap(), 5);
        assert_eq!(*ys.iter().min().unwrap(), 7);
        assert_eq!(*xs.iter().max().unwrap(), 5 + 11);
        assert_eq!(*ys.iter().max().unwrap(), 7 + 11);
    }

    #[test]
    fn cells_built_from_working_pixels_keep_the_nucleus_inside_the_cell_and_fill_holes() {
        // A 9x9 working cell (factor 3) with a hole of cytoplasm the cues missed, in a 30x30
        // working image of a 90x90 photo.
        let part = |x: u32, y: u32| {
            let (dx, dy) = (x as i32 - 14, y as i32 - 14);
            if dx.abs() <= 1 && dy.abs() <= 1 {
                Part::Nucleus
            } else if dx.abs() == 3 && dy.abs() == 3 {
                Part::Outside
            } else if dx.abs() <= 4 && dy.abs() <= 4 && !(dx == 2 && dy == -2) {
                Part::Cytoplasm
            } else {
                Part::Outside
            }
        };
        let m = from_working(part, (10, 10, 19, 19), (30, 30), 3, (90, 90));
        let b = m.bbox().expect("a cell");
        assert!(
            b.x_min >= 30 && b.y_min >= 30 && b.x_max <= 57 && b.y_max <= 57,
            "{b:?}"
        );
        assert!(m.nucleus_area_px() > 0 && m.nucleus_area_px() < m.cell_area_px());
        // The missed working pixel (2, -2) is enclosed, so it is cytoplasm in the photo mask.
        assert_eq!(m.at(3 * 16 + 1, 3 * 12 + 1), CYTOPLASM);
        // Every nucleus pixel's working pixel is nucleus or next to one.
        for y in m.y..m.y + m.height {
            for x in m.x..m.x + m.width {
                if m.at(x, y) == NUCLEUS {
                    let (wx, wy) = (x as i32 / 3 - 14, y as i32 / 3 - 14);
                    assert!(
                        wx.abs() <= 2 && wy.abs() <= 2,
                        "nucleus at photo ({x}, {y})"
                    );
                }
            }
        }
    }

    #[test]
    fn a_resized_mask_scales_its_areas() {
        let (m, _) = disc(10.0);
        let big = m.resized(2.0, 2.0, 200, 200);
        assert_eq!(big.cell_area_px(), 4 * m.cell_area_px());
        assert_eq!(big.nucleus_area_px(), 4 * m.nucleus_area_px());
        let um = m.morphometrics().in_um(0.5);
        assert!((um.cell_area_um2 - m.cell_area_px() as f64 * 0.25).abs() < 1e-9);
        assert!(
            (um.cell_diameter_um - 10.0).abs() < 0.5,
            "{}",
            um.cell_diameter_um
        );
    }
}
