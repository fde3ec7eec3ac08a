//! Finding photos of the same field of view (the same leukocyte) taken twice.
//!
//! BCCD holds pairs of photos whose second copy is shifted by up to ~250 px and
//! sometimes brighter or differently white-balanced. A random split puts such
//! copies into both training and test and inflates every score, so splits are
//! grouped by what this module finds.
//!
//! Method, per pair of images (no hand-made list, annotations unused):
//! 1. grayscale, box-downscaled 8x (80x60), zero-mean, zero-padded to 128x96 so
//!    that shifts up to ±24 px (±190 px at full size) and beyond do not wrap onto each other;
//! 2. phase correlation (normalised cross-power spectrum) gives candidate shifts
//!    as its strongest peaks; phase-only correlation ignores brightness and contrast;
//! 3. each candidate is checked by normalised cross-correlation (NCC) of the two
//!    images over their overlap, first at 80x60, then refined at 160x120 (4x
//!    downscale) within ±1 px; NCC is invariant to gain and offset, so exposure
//!    and white-balance changes do not matter;
//! 4. pairs whose best NCC reaches the threshold are joined, transitively
//!    (union-find), into groups.

use crate::data::labels_csv::{read_labels, Category};
use crate::data::DataDir;
use crate::error::{LeukoError, Result};
use crate::imageio;
use rayon::prelude::*;
use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Settings of the near-duplicate search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AuditConfig {
    /// Two photos show the same field when their best overlap NCC is at least this.
    /// On BCCD, unrelated photos score at most 0.74 and copies at least 0.92
    /// (README, `leuko data audit --min-similarity 0.4`): 0.85 sits in the gap.
    pub min_similarity: f32,
    /// Overlaps smaller than this share of the image are not compared: too few
    /// pixels to tell a copy from a look-alike.
    pub min_overlap: f32,
    /// Phase-correlation peaks checked per pair.
    pub peaks: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            min_similarity: 0.85,
            min_overlap: 0.3,
            peaks: 3,
        }
    }
}

/// Two photos found to show the same field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicatePair {
    pub a: u32,
    pub b: u32,
    /// NCC over the overlap, in [-1, 1].
    pub similarity: f32,
    /// Shift of `b` relative to `a`, in pixels of the original photo: the content at
    /// (x, y) in `a` is at (x - dx, y - dy) in `b`.
    pub dx: i32,
    pub dy: i32,
}

/// A set of photos of one field (transitively joined pairs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicateGroup {
    /// Image ids, sorted.
    pub members: Vec<u32>,
    /// What `labels.csv` says of each member (`""` when unlabelled, `"-"` when it has no row).
    pub labels: BTreeMap<u32, String>,
    /// True when members carry different non-empty labels.
    pub conflict: bool,
    /// The pairs that joined the group.
    pub pairs: Vec<DuplicatePair>,
}

/// The outcome of an audit: the groups of two or more photos.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub config: AuditConfig,
    pub images_compared: usize,
    pub pairs_compared: usize,
    pub groups: Vec<DuplicateGroup>,
    /// Images that could not be read, with the reason; they are in no group.
    pub unreadable: Vec<(u32, String)>,
}

impl AuditReport {
    /// Number of groups whose members carry different labels.
    pub fn conflicts(&self) -> usize {
        self.groups.iter().filter(|g| g.conflict).count()
    }

    /// Maps every grouped image id to its group index.
    pub fn group_of(&self) -> HashMap<u32, usize> {
        let mut m = HashMap::new();
        for (gi, g) in self.groups.iter().enumerate() {
            for &id in &g.members {
                m.insert(id, gi);
            }
        }
        m
    }

    /// Reads a report written by `leuko data audit --out`.
    pub fn read(path: &std::path::Path) -> Result<AuditReport> {
        let text = std::fs::read_to_string(path).map_err(|e| LeukoError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| LeukoError::Json {
            path: path.to_path_buf(),
            message: format!("not an audit report: {e}"),
        })
    }
}

const FINE: usize = 4;
const PAD_W: usize = 128;
const PAD_H: usize = 96;

/// A grayscale picture stored row-major as f32.
#[derive(Debug, Clone)]
pub struct Gray {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<f32>,
}

impl Gray {
    /// Luma of an RGB image, box-averaged over `factor`x`factor` blocks.
    pub fn downscaled(img: &image::RgbImage, factor: usize) -> Gray {
        let width = img.width() as usize / factor;
        let height = img.height() as usize / factor;
        let mut pixels = vec![0f32; width * height];
        let raw = img.as_raw();
        let stride = img.width() as usize * 3;
        let scale = 1.0 / (factor * factor) as f32;
        for y in 0..height {
            for x in 0..width {
                let mut s = 0f32;
                for yy in y * factor..(y + 1) * factor {
                    let row =
                        &raw[yy * stride + x * factor * 3..yy * stride + (x + 1) * factor * 3];
                    for p in row.chunks_exact(3) {
                        s += 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
                    }
                }
                pixels[y * width + x] = s * scale;
            }
        }
        Gray {
            width,
            height,
            pixels,
        }
    }

    /// The picture minus its box-blurred self (radius `r` pixels): its detail only.
    fn detail(&self, r: usize) -> Gray {
        let (w, h) = (self.width, self.height);
        // Summed-area table for the box means.
        let mut sat = vec![0f64; (w + 1) * (h + 1)];
        for y in 0..h {
            let mut row = 0f64;
            for x in 0..w {
                row += f64::from(self.pixels[y * w + x]);
                sat[(y + 1) * (w + 1) + x + 1] = sat[y * (w + 1) + x + 1] + row;
            }
        }
        let mut pixels = vec![0f32; w * h];
        for y in 0..h {
            let (y0, y1) = (y.saturating_sub(r), (y + r + 1).min(h));
            for x in 0..w {
                let (x0, x1) = (x.saturating_sub(r), (x + r + 1).min(w));
                let sum = sat[y1 * (w + 1) + x1] - sat[y0 * (w + 1) + x1] - sat[y1 * (w + 1) + x0]
                    + sat[y0 * (w + 1) + x0];
                let mean = sum / ((y1 - y0) * (x1 - x0)) as f64;
                pixels[y * w + x] = self.pixels[y * w + x] - mean as f32;
            }
        }
        Gray {
            width: w,
            height: h,
            pixels,
        }
    }

    /// Halves the resolution by 2x2 averaging.
    fn halved(&self) -> Gray {
        let width = self.width / 2;
        let height = self.height / 2;
        let mut pixels = vec![0f32; width * height];
        for y in 0..height {
            for x in 0..width {
                let i = 2 * y * self.width + 2 * x;
                pixels[y * width + x] = 0.25
                    * (self.pixels[i]
                        + self.pixels[i + 1]
                        + self.pixels[i + self.width]
                        + self.pixels[i + self.width + 1]);
            }
        }
        Gray {
            width,
            height,
            pixels,
        }
    }
}

/// Normalised cross-correlation of `a` and `b` over their overlap when `b` is
/// shifted by (dx, dy): pixel (x, y) of `a` meets (x - dx, y - dy) of `b`.
/// `None` when the overlap is below `min_overlap` of the image or flat.
pub fn overlap_ncc(a: &Gray, b: &Gray, dx: i32, dy: i32, min_overlap: f32) -> Option<f32> {
    let (w, h) = (a.width as i32, a.height as i32);
    let x0 = dx.max(0);
    let x1 = (w + dx).min(w);
    let y0 = dy.max(0);
    let y1 = (h + dy).min(h);
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    let n = ((x1 - x0) * (y1 - y0)) as f32;
    if n < min_overlap * (w * h) as f32 {
        return None;
    }
    let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for y in y0..y1 {
        let ra = &a.pixels[(y * w + x0) as usize..(y * w + x1) as usize];
        let by = y - dy;
        let rb = &b.pixels[(by * w + x0 - dx) as usize..(by * w + x1 - dx) as usize];
        // Per-row f32 sums keep the inner loop vectorisable; rows are short.
        let (mut ra_s, mut rb_s, mut raa, mut rbb, mut rab) = (0f32, 0f32, 0f32, 0f32, 0f32);
        for (&p, &q) in ra.iter().zip(rb) {
            ra_s += p;
            rb_s += q;
            raa += p * p;
            rbb += q * q;
            rab += p * q;
        }
        sa += ra_s as f64;
        sb += rb_s as f64;
        saa += raa as f64;
        sbb += rbb as f64;
        sab += rab as f64;
    }
    let n = n as f64;
    let cov = sab - sa * sb / n;
    let va = saa - sa * sa / n;
    let vb = sbb - sb * sb / n;
    if va <= 1e-6 * n || vb <= 1e-6 * n {
        return None;
    }
    Some((cov / (va * vb).sqrt()) as f32)
}

/// An image prepared for comparison.
struct Prepared {
    fine: Gray,
    coarse: Gray,
    /// Spectrum of the zero-mean, zero-padded coarse image (transposed layout).
    spectrum: Vec<Complex32>,
    /// Working pixels per photo pixel.
    scale: f32,
}

struct Fft2 {
    row_fwd: Arc<dyn Fft<f32>>,
    col_fwd: Arc<dyn Fft<f32>>,
    row_inv: Arc<dyn Fft<f32>>,
    col_inv: Arc<dyn Fft<f32>>,
}

impl Fft2 {
    fn new() -> Self {
        let mut p = FftPlanner::new();
        Fft2 {
            row_fwd: p.plan_fft_forward(PAD_W),
            col_fwd: p.plan_fft_forward(PAD_H),
            row_inv: p.plan_fft_inverse(PAD_W),
            col_inv: p.plan_fft_inverse(PAD_H),
        }
    }

    /// Forward 2-D FFT of a row-major PAD_H x PAD_W buffer; result is transposed (PAD_W x PAD_H).
    fn forward(&self, buf: &mut [Complex32], scratch: &mut [Complex32]) {
        self.row_fwd.process(buf);
        transpose(buf, scratch, PAD_H, PAD_W);
        self.col_fwd.process(scratch);
        buf.copy_from_slice(scratch);
    }

    /// Inverse of [`Fft2::forward`]: takes the transposed layout, returns row-major.
    fn inverse(&self, buf: &mut [Complex32], scratch: &mut [Complex32]) {
        self.col_inv.process(buf);
        transpose(buf, scratch, PAD_W, PAD_H);
        self.row_inv.process(scratch);
        buf.copy_from_slice(scratch);
    }
}

fn transpose(src: &[Complex32], dst: &mut [Complex32], rows: usize, cols: usize) {
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// Radius (fine pixels, 4 working pixels each) of the blur removed from photos of other sizes.
const DETAIL_RADIUS: usize = 3;

/// The size every photo is compared at: BCCD's (the padded spectra are sized for it).
const WORK_W: u32 = 640;
const WORK_H: u32 = 480;

fn prepare(img: &image::RgbImage, fft: &Fft2) -> Prepared {
    // Scaled to fit the working size, up or down, so that a 120-px crop and a 2000-px field are
    // compared at the resolution the search is tuned for. BCCD's photos stay as they are.
    let scale =
        (WORK_W as f32 / img.width().max(1) as f32).min(WORK_H as f32 / img.height().max(1) as f32);
    let resized;
    let img = if (scale - 1.0).abs() < 1e-6 {
        img
    } else {
        let w = ((img.width() as f32 * scale).round() as u32).clamp(2 * FINE as u32, WORK_W);
        let h = ((img.height() as f32 * scale).round() as u32).clamp(2 * FINE as u32, WORK_H);
        resized = image::imageops::resize(img, w, h, image::imageops::FilterType::Triangle);
        &resized
    };
    let mut fine = Gray::downscaled(img, FINE);
    if (scale - 1.0).abs() >= 1e-6 {
        // A photo of another size is mostly a crop around one cell, and two different cells,
        // centred on the same background, agree in their broad shape: only the detail left
        // after removing it tells a copy from a look-alike.
        fine = fine.detail(DETAIL_RADIUS);
    }
    let coarse = fine.halved();
    let mean = coarse.pixels.iter().sum::<f32>() / coarse.pixels.len() as f32;
    let mut buf = vec![Complex32::new(0.0, 0.0); PAD_W * PAD_H];
    for y in 0..coarse.height.min(PAD_H) {
        for x in 0..coarse.width.min(PAD_W) {
            buf[y * PAD_W + x] = Complex32::new(coarse.pixels[y * coarse.width + x] - mean, 0.0);
        }
    }
    let mut scratch = vec![Complex32::new(0.0, 0.0); PAD_W * PAD_H];
    fft.forward(&mut buf, &mut scratch);
    Prepared {
        fine,
        coarse,
        spectrum: buf,
        scale,
    }
}

/// Candidate shifts (coarse pixels) from the strongest phase-correlation peaks.
fn candidate_shifts(
    a: &Prepared,
    b: &Prepared,
    fft: &Fft2,
    peaks: usize,
    buf: &mut [Complex32],
    scratch: &mut [Complex32],
) -> Vec<(i32, i32)> {
    for ((o, x), y) in buf.iter_mut().zip(&a.spectrum).zip(&b.spectrum) {
        let c = x * y.conj();
        let m = c.norm();
        *o = if m > 1e-12 {
            c / m
        } else {
            Complex32::new(0.0, 0.0)
        };
    }
    fft.inverse(buf, scratch);
    let mut surface: Vec<f32> = buf.iter().map(|c| c.re).collect();
    let mut shifts = Vec::with_capacity(peaks);
    for _ in 0..peaks {
        let (idx, _) =
            surface.iter().enumerate().fold(
                (0, f32::MIN),
                |best, (i, &v)| if v > best.1 { (i, v) } else { best },
            );
        let (py, px) = ((idx / PAD_W) as i32, (idx % PAD_W) as i32);
        // Peak at p means a(x) ≈ b(x - p) modulo the padded size.
        let dx = if px > PAD_W as i32 / 2 {
            px - PAD_W as i32
        } else {
            px
        };
        let dy = if py > PAD_H as i32 / 2 {
            py - PAD_H as i32
        } else {
            py
        };
        shifts.push((dx, dy));
        for ny in -2..=2 {
            for nx in -2..=2 {
                let yy = (py + ny).rem_euclid(PAD_H as i32) as usize;
                let xx = (px + nx).rem_euclid(PAD_W as i32) as usize;
                surface[yy * PAD_W + xx] = f32::MIN;
            }
        }
    }
    shifts
}

/// Best overlap similarity and shift (original pixels) of a pair, if any candidate qualifies.
fn compare(
    a: &Prepared,
    b: &Prepared,
    cfg: &AuditConfig,
    fft: &Fft2,
    buf: &mut [Complex32],
    scratch: &mut [Complex32],
) -> Option<(f32, i32, i32)> {
    // A cheap first look at coarse resolution; only plausible shifts are refined.
    const COARSE_GATE: f32 = 0.5;
    let mut best: Option<(f32, i32, i32)> = None;
    for (dx, dy) in candidate_shifts(a, b, fft, cfg.peaks, buf, scratch) {
        let coarse = overlap_ncc(&a.coarse, &b.coarse, dx, dy, cfg.min_overlap);
        if coarse.is_none_or(|s| s < COARSE_GATE) {
            continue;
        }
        for ry in -1..=1 {
            for rx in -1..=1 {
                let (fx, fy) = (2 * dx + rx, 2 * dy + ry);
                if let Some(s) = overlap_ncc(&a.fine, &b.fine, fx, fy, cfg.min_overlap) {
                    if best.is_none_or(|(bs, _, _)| s > bs) {
                        best = Some((s, fx * FINE as i32, fy * FINE as i32));
                    }
                }
            }
        }
    }
    best
}

/// Compares every pair of photos in `JPEGImages/` and groups the copies.
pub fn audit(dir: &DataDir, cfg: &AuditConfig, quiet: bool) -> Result<AuditReport> {
    let photos: Vec<(u32, std::path::PathBuf)> = dir
        .image_ids_on_disk()?
        .into_iter()
        .map(|id| (id, dir.image_path(id)))
        .collect();
    audit_photos(&photos, &label_names(dir), cfg, quiet)
}

/// Compares every pair of `photos` (an id and a path each) and groups the copies; `labels`
/// names what each id is labelled (for label conflicts). Photos of any size: each is first
/// scaled to fit BCCD's 640x480 (shifts are reported in its own pixels).
pub fn audit_photos(
    photos: &[(u32, std::path::PathBuf)],
    labels: &HashMap<u32, String>,
    cfg: &AuditConfig,
    quiet: bool,
) -> Result<AuditReport> {
    let fft = Fft2::new();
    let bar = crate::progress::bar(photos.len() as u64, "reading", quiet);
    let loaded: Vec<(u32, std::result::Result<Prepared, String>)> = photos
        .par_iter()
        .map(|(id, path)| {
            let r = imageio::load_rgb(path)
                .map(|img| prepare(&img, &fft))
                .map_err(|e| e.to_string());
            bar.inc(1);
            (*id, r)
        })
        .collect();
    bar.finish_and_clear();

    let mut unreadable = Vec::new();
    let mut images = Vec::new();
    for (id, r) in loaded {
        match r {
            Ok(p) => images.push((id, p)),
            Err(e) => unreadable.push((id, e)),
        }
    }
    // Only same-sized photos can be copies of one another.
    let n = images.len();
    let bar = crate::progress::bar(n as u64, "comparing", quiet);
    let pairs: Vec<DuplicatePair> = (0..n)
        .into_par_iter()
        .map_init(
            || {
                (
                    vec![Complex32::new(0.0, 0.0); PAD_W * PAD_H],
                    vec![Complex32::new(0.0, 0.0); PAD_W * PAD_H],
                )
            },
            |(buf, scratch), i| {
                let (ida, a) = &images[i];
                let mut found = Vec::new();
                for (idb, b) in &images[i + 1..] {
                    if a.fine.width != b.fine.width || a.fine.height != b.fine.height {
                        continue;
                    }
                    if let Some((s, dx, dy)) = compare(a, b, cfg, &fft, buf, scratch) {
                        if s >= cfg.min_similarity {
                            let back = |d: i32| (d as f32 / a.scale).round() as i32;
                            found.push(DuplicatePair {
                                a: *ida,
                                b: *idb,
                                similarity: s,
                                dx: back(dx),
                                dy: back(dy),
                            });
                        }
                    }
                }
                bar.inc(1);
                found
            },
        )
        .flatten()
        .collect();
    bar.finish_and_clear();

    let groups = group_pairs(pairs, labels);
    Ok(AuditReport {
        config: *cfg,
        images_compared: n,
        pairs_compared: n * n.saturating_sub(1) / 2,
        groups,
        unreadable,
    })
}

/// Labels as written in labels.csv; a missing or broken file just leaves them empty.
fn label_names(dir: &DataDir) -> HashMap<u32, String> {
    let Ok(file) = read_labels(&dir.labels_csv()) else {
        return HashMap::new();
    };
    file.rows
        .into_iter()
        .map(|r| {
            let s = match r.category {
                Category::Unlabelled => String::new(),
                Category::Single(c) => c.to_string(),
                Category::Multi(v) => v.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "),
            };
            (r.image_id, s)
        })
        .collect()
}

/// Joins pairs transitively into groups, sorted by their smallest member.
pub fn group_pairs(
    pairs: Vec<DuplicatePair>,
    labels: &HashMap<u32, String>,
) -> Vec<DuplicateGroup> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    fn find(parent: &mut HashMap<u32, u32>, x: u32) -> u32 {
        let p = *parent.entry(x).or_insert(x);
        if p == x {
            return x;
        }
        let r = find(parent, p);
        parent.insert(x, r);
        r
    }
    for p in &pairs {
        let (ra, rb) = (find(&mut parent, p.a), find(&mut parent, p.b));
        if ra != rb {
            parent.insert(ra.max(rb), ra.min(rb));
        }
    }
    let mut by_root: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let ids: Vec<u32> = parent.keys().copied().collect();
    for id in ids {
        let r = find(&mut parent, id);
        by_root.entry(r).or_default().push(id);
    }
    let mut groups: Vec<DuplicateGroup> = by_root
        .into_values()
        .map(|mut members| {
            members.sort_unstable();
            let labels: BTreeMap<u32, String> = members
                .iter()
                .map(|id| (*id, labels.get(id).cloned().unwrap_or_else(|| "-".into())))
                .collect();
            let mut named: Vec<&String> = labels
                .values()
                .filter(|l| !l.is_empty() && l.as_str() != "-")
                .collect();
            named.sort();
            named.dedup();
            let mut group_pairs: Vec<DuplicatePair> = pairs
                .iter()
                .filter(|p| members.binary_search(&p.a).is_ok())
                .cloned()
                .collect();
            group_pairs.sort_by_key(|p| (p.a, p.b));
            DuplicateGroup {
                conflict: named.len() > 1,
                members,
                labels,
                pairs: group_pairs,
            }
        })
        .collect();
    groups.sort_by_key(|g| g.members[0]);
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn textured(w: u32, h: u32, seed: u32) -> image::RgbImage {
        // A deterministic pseudo-random smooth texture (sum of blobs) so that
        // shifted copies correlate only at the true shift.
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let blobs: Vec<(f32, f32, f32)> = (0..120)
            .map(|_| {
                (
                    (next() % w) as f32,
                    (next() % h) as f32,
                    (next() % 60) as f32 - 30.0,
                )
            })
            .collect();
        image::RgbImage::from_fn(w, h, |x, y| {
            let mut v = 150.0;
            for &(bx, by, amp) in &blobs {
                let d2 = (x as f32 - bx).powi(2) + (y as f32 - by).powi(2);
                v += amp * (-d2 / 800.0).exp();
            }
            let v = v.clamp(0.0, 255.0) as u8;
            image::Rgb([v, v.saturating_sub(20), v])
        })
    }

    fn shifted(img: &image::RgbImage, dx: i32, dy: i32, gain: f32) -> image::RgbImage {
        // Content at (x, y) of `img` appears at (x - dx, y - dy) of the result.
        let (w, h) = (img.width() as i32, img.height() as i32);
        image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let sx = (x as i32 + dx).clamp(0, w - 1);
            let sy = (y as i32 + dy).clamp(0, h - 1);
            let p = img.get_pixel(sx as u32, sy as u32).0;
            image::Rgb(p.map(|c| (c as f32 * gain).min(255.0) as u8))
        })
    }

    #[test]
    fn finds_shift_of_a_brighter_copy_and_rejects_unrelated_image() {
        let fft = Fft2::new();
        let cfg = AuditConfig::default();
        let base = textured(640, 480, 1);
        let copy = shifted(&base, 120, -64, 1.2);
        let other = textured(640, 480, 2);
        let (pa, pb, pc) = (
            prepare(&base, &fft),
            prepare(&copy, &fft),
            prepare(&other, &fft),
        );
        let mut buf = vec![Complex32::new(0.0, 0.0); PAD_W * PAD_H];
        let mut scratch = buf.clone();
        let (s, dx, dy) = compare(&pa, &pb, &cfg, &fft, &mut buf, &mut scratch).unwrap();
        assert!(s > 0.95, "similarity {s}");
        assert!(
            (dx - 120).abs() <= 4 && (dy + 64).abs() <= 4,
            "shift {dx},{dy}"
        );
        let unrelated = compare(&pa, &pc, &cfg, &fft, &mut buf, &mut scratch);
        assert!(
            unrelated.is_none_or(|(s, _, _)| s < cfg.min_similarity),
            "{unrelated:?}"
        );
    }

    #[test]
    fn ncc_ignores_gain_and_offset() {
        let a = Gray {
            width: 4,
            height: 2,
            pixels: vec![1.0, 5.0, 2.0, 8.0, 3.0, 3.0, 9.0, 0.0],
        };
        let b = Gray {
            pixels: a.pixels.iter().map(|v| 2.0 * v + 7.0).collect(),
            ..a.clone()
        };
        let s = overlap_ncc(&a, &b, 0, 0, 0.5).unwrap();
        assert!((s - 1.0).abs() < 1e-5);
        assert!(
            overlap_ncc(&a, &b, 3, 0, 0.5).is_none(),
            "overlap too small"
        );
    }

    #[test]
    fn groups_are_transitive_and_flag_conflicts() {
        let p = |a, b| DuplicatePair {
            a,
            b,
            similarity: 0.9,
            dx: 0,
            dy: 0,
        };
        let labels: HashMap<u32, String> = [
            (1, "NEUTROPHIL".to_string()),
            (2, "NEUTROPHIL".to_string()),
            (3, "EOSINOPHIL".to_string()),
            (7, "".to_string()),
            (8, "MONOCYTE".to_string()),
        ]
        .into();
        let groups = group_pairs(vec![p(1, 2), p(2, 3), p(7, 8)], &labels);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].members, vec![1, 2, 3]);
        assert!(groups[0].conflict);
        assert_eq!(groups[0].pairs.len(), 2);
        assert!(!groups[1].conflict, "unlabelled does not conflict");
    }
}
