//! Per-image colour normalisation: shrink the photo, find its background
//! (white) colour, balance every pixel against it, and express each pixel as
//! brightness-free chromaticity features in percent of its mean intensity.
//!
//! Why: photos differ in exposure (darker, paler), in the colour of the lamp
//! and camera (warmer, cooler) and in how strongly the smear was stained.
//! Dividing each channel by the background's value removes the cast;
//! dividing each pixel's channel differences by its own mean removes
//! exposure; scaling by the photo's own stain strength removes the rest.
//! What is left is the kind of stain: erythrocytes lean to red, nuclei to
//! blue, the empty background is gray.

use super::config::IsolationConfig;
use image::RgbImage;

/// Integer shrink factor that brings the longer side to at most `max_side` (at least 1).
pub fn work_factor(width: u32, height: u32, max_side: u32) -> u32 {
    let longest = width.max(height).max(1);
    longest.div_ceil(max_side.max(1)).max(1)
}

/// Box-average shrink by an integer factor: every output pixel is the mean of
/// a `factor x factor` block (fewer at the right and bottom edges when the
/// size is not a multiple). The output is `ceil(w/f) x ceil(h/f)`.
pub fn downsample(img: &RgbImage, factor: u32) -> RgbImage {
    let f = factor.max(1) as usize;
    if f == 1 || img.width() == 0 || img.height() == 0 {
        return img.clone();
    }
    match f {
        2 if img.width() % 2 == 0 && img.height() % 2 == 0 => halve(img),
        2 => shrink_by::<2>(img),
        3 => shrink_by::<3>(img),
        4 => shrink_by::<4>(img),
        _ => shrink_any(img, f),
    }
}

/// Box-average shrink by a factor known at compile time (unrolled).
fn shrink_by<const F: usize>(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (w.div_ceil(F), h.div_ceil(F));
    let full_w = w / F;
    let src = img.as_raw();
    let stride = w * 3;
    let mut out = vec![0u8; ow * oh * 3];
    // Column sums of F rows fit 16 bits (F <= 4: 4 * 255), block sums too
    // (16 * 255).
    let mut rows = vec![0u16; stride];
    let mut blocks = vec![0u16; stride];
    let full = (F * F) as u32;
    // Rounded mean of a full block, (s + n/2) / n, as a 16-bit multiply-high:
    // exact for every sum up to 16 * 255 since m * n - 2^16 < n.
    let m = 65536u32.div_ceil(full).min(65535);
    for (oy, dst) in out.chunks_exact_mut(ow * 3).enumerate() {
        let (y0, y1) = (oy * F, ((oy + 1) * F).min(h));
        rows.fill(0);
        for y in y0..y1 {
            for (a, &v) in rows.iter_mut().zip(&src[y * stride..(y + 1) * stride]) {
                *a += v as u16;
            }
        }
        let n_rows = (y1 - y0) as u32;
        if n_rows as usize == F && full_w > 0 {
            // blocks[i] = rows[i] + rows[i+3] + ... (F terms), vectorised;
            // the block sum of pixel x, channel c, is blocks[3F x + c].
            let len = full_w * F * 3 - 3 * (F - 1);
            let b = &mut blocks[..len];
            b.copy_from_slice(&rows[..len]);
            for k in 1..F {
                let r = &rows[3 * k..3 * k + len];
                for i in 0..len {
                    b[i] += r[i];
                }
            }
            let (half, m) = (full as u16 / 2, m as u16);
            for v in b.iter_mut() {
                *v = (((*v + half) as u32 * m as u32) >> 16) as u16;
            }
            let d = &mut dst[..full_w * 3];
            for x in 0..full_w {
                d[3 * x] = b[3 * F * x] as u8;
                d[3 * x + 1] = b[3 * F * x + 1] as u8;
                d[3 * x + 2] = b[3 * F * x + 2] as u8;
            }
        } else {
            let n = n_rows * F as u32;
            for (d, s) in dst.chunks_exact_mut(3).zip(rows.chunks_exact(3 * F)) {
                let mut acc = [0u32; 3];
                for k in 0..F {
                    acc[0] += s[3 * k] as u32;
                    acc[1] += s[3 * k + 1] as u32;
                    acc[2] += s[3 * k + 2] as u32;
                }
                for c in 0..3 {
                    d[c] = ((acc[c] + n / 2) / n) as u8;
                }
            }
        }
        if full_w < ow {
            // The last, partial column of blocks.
            let mut acc = [0u32; 3];
            for px in rows[full_w * F * 3..].chunks_exact(3) {
                for c in 0..3 {
                    acc[c] += px[c] as u32;
                }
            }
            let n = n_rows * (w - full_w * F) as u32;
            for c in 0..3 {
                dst[full_w * 3 + c] = ((acc[c] + n / 2) / n) as u8;
            }
        }
    }
    RgbImage::from_raw(ow as u32, oh as u32, out).unwrap_or_else(|| img.clone())
}

/// Box-average shrink by any factor.
fn shrink_any(img: &RgbImage, f: usize) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (w.div_ceil(f), h.div_ceil(f));
    let src = img.as_raw();
    let stride = w * 3;
    let mut out = vec![0u8; ow * oh * 3];
    let mut rows = vec![0u32; stride];
    for (oy, dst) in out.chunks_exact_mut(ow * 3).enumerate() {
        let (y0, y1) = (oy * f, ((oy + 1) * f).min(h));
        rows.fill(0);
        for y in y0..y1 {
            for (a, &v) in rows.iter_mut().zip(&src[y * stride..(y + 1) * stride]) {
                *a += v as u32;
            }
        }
        for (ox, d) in dst.chunks_exact_mut(3).enumerate() {
            let (x0, x1) = (ox * f, ((ox + 1) * f).min(w));
            let n = ((x1 - x0) * (y1 - y0)) as u32;
            let mut sum = [0u32; 3];
            for px in rows[x0 * 3..x1 * 3].chunks_exact(3) {
                sum[0] += px[0];
                sum[1] += px[1];
                sum[2] += px[2];
            }
            for c in 0..3 {
                d[c] = ((sum[c] + n / 2) / n) as u8;
            }
        }
    }
    RgbImage::from_raw(ow as u32, oh as u32, out).unwrap_or_else(|| img.clone())
}

/// Halving with even sides: sum the two rows (vectorised), then the pixel
/// pairs.
fn halve(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let (ow, oh) = (w as usize / 2, h as usize / 2);
    let src = img.as_raw();
    let stride = w as usize * 3;
    let mut out = vec![0u8; ow * oh * 3];
    let mut pair = vec![0u16; stride];
    for (oy, dst) in out.chunks_exact_mut(ow * 3).enumerate() {
        let top = &src[2 * oy * stride..(2 * oy + 1) * stride];
        let bottom = &src[(2 * oy + 1) * stride..(2 * oy + 2) * stride];
        for ((p, &t), &b) in pair.iter_mut().zip(top).zip(bottom) {
            *p = t as u16 + b as u16 + 1;
        }
        for (d, s) in dst.chunks_exact_mut(3).zip(pair.chunks_exact(6)) {
            d[0] = ((s[0] + s[3]) >> 2) as u8;
            d[1] = ((s[1] + s[4]) >> 2) as u8;
            d[2] = ((s[2] + s[5]) >> 2) as u8;
        }
    }
    RgbImage::from_raw(ow as u32, oh as u32, out).unwrap_or_else(|| img.clone())
}

/// Pixels of the shrunk photo that the colour statistics are taken from:
/// every fourth pixel of every fourth row (2160 of a 214x160 image), plenty
/// for a median and a percentile, and sixteen times cheaper.
const SAMPLE_STEP: usize = 4;

/// Calls `f` on every sampled pixel.
#[inline(always)]
fn for_each_sample(img: &RgbImage, mut f: impl FnMut([u8; 3])) {
    let w = img.width() as usize;
    if w == 0 || img.height() == 0 {
        return;
    }
    let raw = img.as_raw();
    for row in raw.chunks_exact(w * 3).step_by(SAMPLE_STEP) {
        for px in row.chunks_exact(3 * SAMPLE_STEP) {
            f([px[0], px[1], px[2]]);
        }
        if w % SAMPLE_STEP != 0 {
            // The chunks stop before the last sampled pixel.
            let i = (w - w % SAMPLE_STEP) * 3;
            f([row[i], row[i + 1], row[i + 2]]);
        }
    }
}

/// The smear's background colour: the per-channel median of the brightest
/// `top_fraction` of pixels (by R+G+B), on a regular sample of the pixels
/// (every fourth of every fourth row). Channels are at least 1.
pub fn estimate_background(img: &RgbImage, top_fraction: f64) -> [u8; 3] {
    let mut hist = [0u32; 766];
    let mut n = 0u64;
    for_each_sample(img, |px| {
        hist[px[0] as usize + px[1] as usize + px[2] as usize] += 1;
        n += 1;
    });
    if n == 0 {
        return [255, 255, 255];
    }
    let frac = if top_fraction.is_finite() {
        top_fraction.clamp(0.0, 1.0)
    } else {
        0.2
    };
    let want = ((n as f64 * frac).ceil() as u64).max(1);
    let mut threshold = 0usize;
    let mut seen = 0u64;
    for s in (0..766).rev() {
        seen += hist[s] as u64;
        if seen >= want {
            threshold = s;
            break;
        }
    }
    let mut ch = [[0u32; 256]; 3];
    let mut count = 0u64;
    for_each_sample(img, |px| {
        if px[0] as usize + px[1] as usize + px[2] as usize >= threshold {
            ch[0][px[0] as usize] += 1;
            ch[1][px[1] as usize] += 1;
            ch[2][px[2] as usize] += 1;
            count += 1;
        }
    });
    let mut out = [255u8; 3];
    for c in 0..3 {
        let half = count.div_ceil(2);
        let mut acc = 0u64;
        for (v, &k) in ch[c].iter().enumerate() {
            acc += k as u64;
            if acc >= half {
                out[c] = v as u8;
                break;
            }
        }
        out[c] = out[c].max(1);
    }
    out
}

/// How one photo's colours are normalised; every colour feature and mask is
/// defined through it.
///
/// For a pixel `(R, G, B)` the balanced channels are `R' = R * gain_R` etc.
/// (the background becomes neutral gray), `S = R' + G' + B'`, and with the
/// contrast factor `k`:
///
/// * blueness `= 300 k (B' - R') / S` percent of the mean: leukocyte stain is
///   strongly positive, erythrocytes negative, background ~0;
/// * magenta `= 150 k (R' + B' - 2 G') / S`: how strongly a pixel is stained
///   at all (every stain absorbs green);
/// * chroma `= 300 k (max - min) / S`: distance from gray.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColourModel {
    /// The white reference (background colour) of this photo.
    pub background: [u8; 3],
    /// Per-channel white-balance factor, fixed point (256 = 1).
    pub channel_gain: [u32; 3],
    /// Contrast factor `k` (fixed point, 256 = 1), see [`ColourModel::estimate`].
    pub contrast_gain: u32,
}

impl ColourModel {
    /// White balance against `background`, no contrast normalisation.
    pub fn with_background(background: [u8; 3]) -> ColourModel {
        let bg = background.map(|c| c.max(1) as u32);
        let gray = bg[0] + bg[1] + bg[2];
        ColourModel {
            background,
            channel_gain: bg.map(|c| (256 * gray + 3 * c / 2) / (3 * c)),
            contrast_gain: 256,
        }
    }

    /// The model of a (shrunk) photo: white balance against its own
    /// background ([`estimate_background`]), then the contrast factor
    /// `reference / stain` (clamped to the config's limits), where `stain` is
    /// the photo's [`ColourModel::stain_chroma_pct`]. Every photo thus gets
    /// the same stain contrast: a pale or washed-out photo (thin stain,
    /// another camera, a bright lamp) is judged like a normally stained one,
    /// and a vivid one does not push erythrocytes over the cytoplasm
    /// thresholds.
    pub fn estimate(img: &RgbImage, cfg: &IsolationConfig) -> ColourModel {
        let mut m = Self::with_background(estimate_background(img, cfg.background_top_fraction));
        let stain = m.stain_chroma_pct(img).max(1) as f64;
        let lo = finite_or(cfg.min_contrast_gain, 1.0).clamp(0.1, 1.0);
        let hi = finite_or(cfg.max_contrast_gain, 1.0).clamp(1.0, 10.0);
        let k = (cfg.stain_reference_chroma_pct as f64 / stain).clamp(lo, hi);
        m.contrast_gain = (k * 256.0).round() as u32;
        m
    }

    /// How strongly the photo is stained: the 90th percentile of balanced
    /// chroma (before contrast normalisation), on the same sample as
    /// the background. In a smear the most chromatic 10-40% of pixels are
    /// mostly erythrocytes, so this measures the stain and how much contrast
    /// the camera kept, whatever the photo's leukocytes look like.
    pub fn stain_chroma_pct(&self, img: &RgbImage) -> u16 {
        let unit = ColourModel {
            contrast_gain: 256,
            ..*self
        };
        let mut hist = [0u32; 301];
        let mut n = 0u64;
        let g = unit.channel_gain.map(|v| v as f32);
        for_each_sample(img, |px| {
            let (r, gg, b) = (
                px[0] as f32 * g[0],
                px[1] as f32 * g[1],
                px[2] as f32 * g[2],
            );
            let spread = r.max(gg).max(b) - r.min(gg).min(b);
            let c = 300.0 * spread / (r + gg + b).max(1.0);
            hist[(c as usize).min(300)] += 1;
            n += 1;
        });
        let want = (n - n / 10).max(1);
        let mut seen = 0u64;
        for (v, &c) in hist.iter().enumerate() {
            seen += c as u64;
            if seen >= want {
                return v as u16;
            }
        }
        0
    }

    #[inline(always)]
    fn balanced(&self, px: [u8; 3]) -> [i64; 3] {
        [
            px[0] as i64 * self.channel_gain[0] as i64,
            px[1] as i64 * self.channel_gain[1] as i64,
            px[2] as i64 * self.channel_gain[2] as i64,
        ]
    }

    #[inline(always)]
    fn scale(&self, px: [u8; 3]) -> (f32, [i64; 3]) {
        let b = self.balanced(px);
        let s = (b[0] + b[1] + b[2]).max(1) as f32;
        (self.contrast_gain as f32 * 300.0 / 256.0 / s, b)
    }

    /// Blueness of one pixel, percent (see the type's documentation).
    pub fn blueness_pct(&self, px: [u8; 3]) -> f32 {
        let (k, b) = self.scale(px);
        (b[2] - b[0]) as f32 * k
    }

    /// Magenta of one pixel, percent.
    pub fn magenta_pct(&self, px: [u8; 3]) -> f32 {
        let (k, b) = self.scale(px);
        (b[0] + b[2] - 2 * b[1]) as f32 * k * 0.5
    }

    /// Chroma of one pixel, percent.
    pub fn chroma_pct(&self, px: [u8; 3]) -> f32 {
        let (k, b) = self.scale(px);
        (b[0].max(b[1]).max(b[2]) - b[0].min(b[1]).min(b[2])) as f32 * k
    }

    /// Darkness of one pixel, percent: how much less light it passes than the photo's
    /// background after white balance (0 = as bright as the background, 100 = black;
    /// brighter than the background counts as 0). Independent of the contrast factor.
    #[inline(always)]
    pub fn darkness_pct(&self, px: [u8; 3]) -> f32 {
        let b = self.balanced(px);
        let bg = (self.background[0] as i64 + self.background[1] as i64 + self.background[2] as i64)
            .max(1) as f32
            * 256.0;
        (100.0 * (1.0 - (b[0] + b[1] + b[2]) as f32 / bg)).clamp(0.0, 100.0)
    }

    /// `blueness > t` in exact integer arithmetic: one linear form in
    /// `R, G, B`, `cr R + cg G + cb B > 0`, returned as `[cr, cg, cb]`.
    /// Strict, so that black pixels (no light, blueness undefined) are never in.
    pub fn blueness_above(&self, t_pct: i64) -> [i64; 3] {
        let k = 300 * self.contrast_gain as i64;
        let t = 256 * t_pct;
        let g = self.channel_gain.map(|v| v as i64);
        [-(k + t) * g[0], -t * g[1], (k - t) * g[2]]
    }

    /// `chroma > t` in exact integer arithmetic (black pixels: never).
    #[inline(always)]
    pub fn chroma_above(&self, px: [u8; 3], t_pct: i64) -> bool {
        let b = self.balanced(px);
        let spread = b[0].max(b[1]).max(b[2]) - b[0].min(b[1]).min(b[2]);
        300 * self.contrast_gain as i64 * spread > 256 * t_pct * (b[0] + b[1] + b[2])
    }
}

/// Nearest integer (halves up) without a libm call; values are percentages
/// well inside +-4000.
#[inline(always)]
fn round_i16(v: f32) -> i16 {
    ((v + 4096.5) as i32 - 4096).clamp(-4096, 4096) as i16
}

fn finite_or(v: f64, default: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        default
    }
}

/// A rectangle of the working image (exclusive max).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Window {
    /// The whole of a `width x height` image.
    pub fn whole(width: u32, height: u32) -> Window {
        Window {
            x: 0,
            y: 0,
            width,
            height,
        }
    }

    /// Grown by `by` on every side, clipped to a `width x height` image.
    pub fn grown(&self, by: u32, width: u32, height: u32) -> Window {
        let x = self.x.saturating_sub(by);
        let y = self.y.saturating_sub(by);
        let x1 = (self.x + self.width).saturating_add(by).min(width);
        let y1 = (self.y + self.height).saturating_add(by).min(height);
        Window {
            x,
            y,
            width: x1.saturating_sub(x),
            height: y1.saturating_sub(y),
        }
    }
}

/// Blueness and magenta planes (see [`ColourModel`]) of a window of the
/// shrunk photo, rounded to whole percent.
#[derive(Debug, Clone, PartialEq)]
pub struct ColourFeatures {
    pub width: u32,
    pub height: u32,
    pub blueness_pct: Vec<i16>,
    pub magenta_pct: Vec<i16>,
}

impl ColourFeatures {
    /// Features of the whole image.
    pub fn compute(img: &RgbImage, model: &ColourModel) -> ColourFeatures {
        Self::compute_in(img, model, Window::whole(img.width(), img.height()))
    }

    /// Features of the pixels in `win` (which must lie inside `img`).
    pub fn compute_in(img: &RgbImage, model: &ColourModel, win: Window) -> ColourFeatures {
        let n = win.width as usize * win.height as usize;
        let mut blueness = Vec::with_capacity(n);
        let mut magenta = Vec::with_capacity(n);
        let w = img.width() as usize;
        let raw = img.as_raw();
        let g = model.channel_gain.map(|v| v as f32);
        let k = model.contrast_gain as f32 * 300.0 / 256.0;
        for y in win.y as usize..(win.y + win.height) as usize {
            let row =
                &raw[(y * w + win.x as usize) * 3..(y * w + (win.x + win.width) as usize) * 3];
            for px in row.chunks_exact(3) {
                let r = px[0] as f32 * g[0];
                let gg = px[1] as f32 * g[1];
                let b = px[2] as f32 * g[2];
                let inv = k / (r + gg + b).max(1.0);
                blueness.push(round_i16((b - r) * inv));
                magenta.push(round_i16((r + b - 2.0 * gg) * inv * 0.5));
            }
        }
        ColourFeatures {
            width: win.width,
            height: win.height,
            blueness_pct: blueness,
            magenta_pct: magenta,
        }
    }
}

/// Sum of a plane over the `(2r+1)^2` window around each pixel, edges
/// replicated (so every window has the same pixel count).
pub fn box_sum(plane: &[i16], width: u32, height: u32, radius: u32) -> Vec<i32> {
    let (w, h) = (width as usize, height as usize);
    let r = radius as usize;
    let mut horiz = vec![0i32; w * h];
    if w == 0 || h == 0 {
        return horiz;
    }
    // Rows: running sums over a copy padded with the edge values.
    let mut padded = vec![0i32; w + 2 * r];
    for y in 0..h {
        let row = &plane[y * w..(y + 1) * w];
        padded[..r].fill(row[0] as i32);
        padded[r + w..].fill(row[w - 1] as i32);
        for (p, &v) in padded[r..r + w].iter_mut().zip(row) {
            *p = v as i32;
        }
        let out = &mut horiz[y * w..(y + 1) * w];
        let mut acc: i32 = padded[..2 * r + 1].iter().sum();
        out[0] = acc;
        for (x, o) in out.iter_mut().enumerate().skip(1) {
            acc += padded[x + 2 * r] - padded[x - 1];
            *o = acc;
        }
    }
    // Columns: running sums of whole rows (vectorised), edges replicated.
    let clamp = |i: isize| i.clamp(0, h as isize - 1) as usize;
    let mut out = vec![0i32; w * h];
    let mut acc: Vec<i32> = vec![0; w];
    for d in -(r as isize)..=r as isize {
        let src = &horiz[clamp(d) * w..(clamp(d) + 1) * w];
        acc.iter_mut().zip(src).for_each(|(a, s)| *a += s);
    }
    out[..w].copy_from_slice(&acc);
    for y in 1..h {
        let add = &horiz[clamp(y as isize + r as isize) * w..][..w];
        let sub = &horiz[clamp(y as isize - r as isize - 1) * w..][..w];
        for ((a, &p), &m) in acc.iter_mut().zip(add).zip(sub) {
            *a += p - m;
        }
        out[y * w..(y + 1) * w].copy_from_slice(&acc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn work_factor_halves_bccd_photos_and_never_is_zero() {
        assert_eq!(work_factor(640, 480, 320), 2);
        assert_eq!(work_factor(320, 240, 320), 1);
        assert_eq!(work_factor(640, 480, 240), 3);
        assert_eq!(work_factor(1, 1, 320), 1);
        assert_eq!(work_factor(1920, 1080, 320), 6);
        assert_eq!(work_factor(0, 0, 0), 1);
    }

    #[test]
    fn downsample_averages_blocks_including_partial_edges() {
        let img = RgbImage::from_fn(5, 3, |x, y| Rgb([(x * 10) as u8, (y * 10) as u8, 7]));
        let small = downsample(&img, 2);
        assert_eq!(small.dimensions(), (3, 2));
        // Block (0,0): x 0..2, y 0..2 → mean x*10 = 5, y*10 = 5.
        assert_eq!(small.get_pixel(0, 0).0, [5, 5, 7]);
        // Partial block at the right edge: x = 4 only.
        assert_eq!(small.get_pixel(2, 0).0, [40, 5, 7]);
        // Partial block at the bottom: y = 2 only.
        assert_eq!(small.get_pixel(0, 1).0, [5, 20, 7]);
        // The fast path agrees with the general one.
        let even = RgbImage::from_fn(6, 4, |x, y| Rgb([(x * 31 + y) as u8, (y * 17) as u8, 9]));
        let general = {
            let mut out = RgbImage::new(3, 2);
            for (x, y, p) in out.enumerate_pixels_mut() {
                for c in 0..3 {
                    let s: u32 = [(0, 0), (1, 0), (0, 1), (1, 1)]
                        .iter()
                        .map(|(dx, dy)| even.get_pixel(2 * x + dx, 2 * y + dy).0[c] as u32)
                        .sum();
                    p.0[c] = ((s + 2) / 4) as u8;
                }
            }
            out
        };
        assert_eq!(downsample(&even, 2), general);
    }

    #[test]
    fn every_shrink_path_agrees_with_the_general_one() {
        for (w, h) in [(13u32, 7u32), (12, 9), (1, 5), (640, 480), (641, 481)] {
            let img = RgbImage::from_fn(w, h, |x, y| {
                Rgb([(x * 7 + y) as u8, (y * 13 + x * x) as u8, (x ^ y) as u8])
            });
            for f in 2..=5usize {
                assert_eq!(
                    downsample(&img, f as u32),
                    shrink_any(&img, f),
                    "{w}x{h} by {f}"
                );
            }
        }
    }

    #[test]
    fn background_is_the_median_of_the_brightest_pixels() {
        // 70% dark red "cells", 30% light gray background with one glint.
        let mut img = RgbImage::from_pixel(10, 10, Rgb([150, 90, 100]));
        for (i, p) in img.pixels_mut().enumerate() {
            if i < 30 {
                *p = Rgb([200, 205, 198]);
            }
        }
        img.put_pixel(0, 0, Rgb([255, 255, 255]));
        assert_eq!(estimate_background(&img, 0.2), [200, 205, 198]);
    }

    #[test]
    fn features_ignore_exposure_and_colour_cast() {
        // The same scene under a neutral and a warm, dim lamp.
        let scene = [[200u8, 200, 200], [150, 100, 220], [190, 150, 160]];
        let warm = |p: [u8; 3]| {
            [
                (p[0] as u32 * 80 / 100) as u8,
                (p[1] as u32 * 68 / 100) as u8,
                (p[2] as u32 * 56 / 100) as u8,
            ]
        };
        let neutral = RgbImage::from_fn(3, 1, |x, _| Rgb(scene[x as usize]));
        let cast = RgbImage::from_fn(3, 1, |x, _| Rgb(warm(scene[x as usize])));
        let a = ColourFeatures::compute(&neutral, &ColourModel::with_background(scene[0]));
        let b = ColourFeatures::compute(&cast, &ColourModel::with_background(warm(scene[0])));
        for i in 0..3 {
            assert!(
                (a.blueness_pct[i] - b.blueness_pct[i]).abs() <= 2,
                "{a:?} {b:?}"
            );
            assert!(
                (a.magenta_pct[i] - b.magenta_pct[i]).abs() <= 2,
                "{a:?} {b:?}"
            );
        }
        assert_eq!(a.blueness_pct[0], 0);
        assert!(a.blueness_pct[1] > 40, "nucleus is blue: {a:?}");
        assert!(a.blueness_pct[2] < 0, "erythrocyte is red: {a:?}");
    }

    /// A smear-like test card: gray background, reddish disks, a blue blob.
    fn card(pale: f32) -> RgbImage {
        let fade = |c: u8| (c as f32 + (255.0 - c as f32) * pale).round() as u8;
        RgbImage::from_fn(64, 48, |x, y| {
            let p = if (x as i32 - 40).pow(2) + (y as i32 - 24).pow(2) < 64 {
                [146, 100, 215]
            } else if (x / 8 + y / 8) % 2 == 0 {
                [190, 150, 160]
            } else {
                [203, 204, 203]
            };
            Rgb(p.map(fade))
        })
    }

    #[test]
    fn contrast_normalisation_makes_a_pale_photo_look_normal() {
        let cfg = IsolationConfig::default();
        let normal = card(0.0);
        let pale = card(0.4);
        let mn = ColourModel::estimate(&normal, &cfg);
        let mp = ColourModel::estimate(&pale, &cfg);
        assert!(mp.stain_chroma_pct(&pale) < mn.stain_chroma_pct(&normal));
        assert!(mp.contrast_gain > mn.contrast_gain);
        let nucleus = |img: &RgbImage, m: &ColourModel| m.blueness_pct(img.get_pixel(40, 24).0);
        let (a, b) = (nucleus(&normal, &mn), nucleus(&pale, &mp));
        assert!((a - b).abs() < 0.15 * a, "normal {a}, pale {b}");
    }

    #[test]
    fn integer_tests_agree_with_the_features() {
        let cfg = IsolationConfig::default();
        let img = card(0.2);
        let m = ColourModel::estimate(&img, &cfg);
        for t in [-10i64, 0, 5, 20, 40] {
            let c = m.blueness_above(t);
            for p in img.pixels() {
                let [r, g, b] = p.0.map(|v| v as i64);
                let exact = c[0] * r + c[1] * g + c[2] * b > 0;
                let approx = m.blueness_pct(p.0);
                if (approx - t as f32).abs() > 0.01 {
                    assert_eq!(exact, approx > t as f32, "{p:?} t={t} blueness={approx}");
                }
                if (m.chroma_pct(p.0) - t as f32).abs() > 0.01 {
                    assert_eq!(m.chroma_above(p.0, t), m.chroma_pct(p.0) > t as f32);
                }
            }
        }
        // Black has no colour: never chromatic (never blue: see the masks).
        assert!(!m.chroma_above([0, 0, 0], 6));
    }

    #[test]
    fn box_sum_matches_brute_force() {
        let (w, h) = (7u32, 5u32);
        let plane: Vec<i16> = (0..w * h).map(|i| ((i * 37) % 23) as i16 - 11).collect();
        for r in 0..4u32 {
            let fast = box_sum(&plane, w, h, r);
            for y in 0..h as isize {
                for x in 0..w as isize {
                    let mut s = 0i32;
                    for dy in -(r as isize)..=r as isize {
                        for dx in -(r as isize)..=r as isize {
                            let xx = (x + dx).clamp(0, w as isize - 1);
                            let yy = (y + dy).clamp(0, h as isize - 1);
                            s += plane[(yy * w as isize + xx) as usize] as i32;
                        }
                    }
                    assert_eq!(fast[(y * w as isize + x) as usize], s, "r={r} x={x} y={y}");
                }
            }
        }
    }
}
