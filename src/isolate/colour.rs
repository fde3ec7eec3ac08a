//! Per-image colour normalisation: shrink the photo, find its background
//! (white) colour, balance every pixel against it, and express each pixel as
//! brightness-free chromaticity features in percent of its mean intensity.
//!
//! Why: photos differ in exposure (darker, paler) and in the colour of the
//! lamp and camera (warmer, cooler). Dividing each channel by the background's
//! value removes the cast; dividing each pixel's channel differences by its
//! own mean removes exposure. What is left is the stain: erythrocytes lean to
//! red, nuclei to blue, the empty background is gray.

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
    let factor = factor.max(1);
    let (w, h) = img.dimensions();
    if factor == 1 || w == 0 || h == 0 {
        return img.clone();
    }
    if factor == 2 && w % 2 == 0 && h % 2 == 0 {
        return halve(img);
    }
    let (ow, oh) = (w.div_ceil(factor), h.div_ceil(factor));
    let src = img.as_raw();
    let mut out = vec![0u8; ow as usize * oh as usize * 3];
    let mut acc = vec![0u32; ow as usize * 3];
    let mut count_x = vec![0u32; ow as usize];
    for x in 0..w {
        count_x[(x / factor) as usize] += 1;
    }
    for oy in 0..oh {
        acc.iter_mut().for_each(|a| *a = 0);
        let y0 = oy * factor;
        let y1 = (y0 + factor).min(h);
        for y in y0..y1 {
            let row = &src[(y as usize * w as usize) * 3..(y as usize + 1) * w as usize * 3];
            for (x, px) in row.chunks_exact(3).enumerate() {
                let o = (x / factor as usize) * 3;
                acc[o] += px[0] as u32;
                acc[o + 1] += px[1] as u32;
                acc[o + 2] += px[2] as u32;
            }
        }
        let rows = y1 - y0;
        let dst = &mut out[oy as usize * ow as usize * 3..(oy as usize + 1) * ow as usize * 3];
        for ox in 0..ow as usize {
            let n = count_x[ox] * rows;
            for c in 0..3 {
                dst[ox * 3 + c] = ((acc[ox * 3 + c] + n / 2) / n) as u8;
            }
        }
    }
    RgbImage::from_raw(ow, oh, out).unwrap_or_else(|| img.clone())
}

/// The common case (640x480 → 320x240), written so the compiler vectorises it.
fn halve(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let (ow, oh) = (w as usize / 2, h as usize / 2);
    let src = img.as_raw();
    let stride = w as usize * 3;
    let mut out = vec![0u8; ow * oh * 3];
    for (oy, dst) in out.chunks_exact_mut(ow * 3).enumerate() {
        let top = &src[2 * oy * stride..(2 * oy + 1) * stride];
        let bottom = &src[(2 * oy + 1) * stride..(2 * oy + 2) * stride];
        for ((d, t), b) in dst
            .chunks_exact_mut(3)
            .zip(top.chunks_exact(6))
            .zip(bottom.chunks_exact(6))
        {
            for c in 0..3 {
                let s = t[c] as u16 + t[c + 3] as u16 + b[c] as u16 + b[c + 3] as u16;
                d[c] = ((s + 2) >> 2) as u8;
            }
        }
    }
    RgbImage::from_raw(ow as u32, oh as u32, out).unwrap_or_else(|| img.clone())
}

/// The smear's background colour: the per-channel median of the brightest
/// `top_fraction` of pixels (by R+G+B). Channels are at least 1.
pub fn estimate_background(img: &RgbImage, top_fraction: f32) -> [u8; 3] {
    let raw = img.as_raw();
    let n = raw.len() / 3;
    if n == 0 {
        return [255, 255, 255];
    }
    let mut hist = [0u32; 766];
    for px in raw.chunks_exact(3) {
        hist[px[0] as usize + px[1] as usize + px[2] as usize] += 1;
    }
    let frac = if top_fraction.is_finite() {
        top_fraction.clamp(0.0, 1.0)
    } else {
        0.2
    };
    let want = ((n as f64 * frac as f64).ceil() as u64).max(1);
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
    for px in raw.chunks_exact(3) {
        if px[0] as usize + px[1] as usize + px[2] as usize >= threshold {
            ch[0][px[0] as usize] += 1;
            ch[1][px[1] as usize] += 1;
            ch[2][px[2] as usize] += 1;
            count += 1;
        }
    }
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

/// Chromaticity features of a (shrunk) photo, each in percent of the pixel's
/// mean intensity after white balance against [`Self::background`]:
///
/// * `blueness_pct` = `(B - R) / mean`: leukocyte stain is strongly positive,
///   erythrocytes negative, background ~0;
/// * `magenta_pct` = `((R + B)/2 - G) / mean`: how strongly a pixel is
///   stained at all (every stain absorbs green);
/// * `chroma_pct` = `(max - min) / mean`: distance from gray.
#[derive(Debug, Clone, PartialEq)]
pub struct ColourFeatures {
    pub width: u32,
    pub height: u32,
    /// The white reference (background colour) of this photo.
    pub background: [u8; 3],
    /// Factor the features were multiplied by (>= 1), see [`ColourFeatures::boost_contrast`].
    pub contrast_gain: f32,
    pub blueness_pct: Vec<i16>,
    pub magenta_pct: Vec<i16>,
    pub chroma_pct: Vec<i16>,
}

impl ColourFeatures {
    /// Features of `img` balanced against its own background (see
    /// [`estimate_background`]) and boosted to a minimum stain contrast
    /// (see [`ColourFeatures::boost_contrast`]).
    pub fn compute(img: &RgbImage, cfg: &IsolationConfig) -> ColourFeatures {
        let background = estimate_background(img, cfg.background_top_fraction);
        let mut f = Self::with_background(img, background);
        f.boost_contrast(cfg.stain_reference_chroma_pct, cfg.max_contrast_gain);
        f
    }

    /// Features of `img` balanced against a given background colour, no boost.
    pub fn with_background(img: &RgbImage, background: [u8; 3]) -> ColourFeatures {
        let luts = balance_luts(background);
        let recip = reciprocal_lut();
        let n = (img.width() * img.height()) as usize;
        let mut blueness = vec![0i16; n];
        let mut magenta = vec![0i16; n];
        let mut chroma = vec![0i16; n];
        for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
            let r = luts[0][px[0] as usize] as i32;
            let g = luts[1][px[1] as usize] as i32;
            let b = luts[2][px[2] as usize] as i32;
            let k = recip[(r + g + b) as usize];
            blueness[i] = (((b - r) * k) >> 16) as i16;
            magenta[i] = (((r + b - 2 * g) * k) >> 17) as i16;
            chroma[i] = (((r.max(g).max(b) - r.min(g).min(b)) * k) >> 16) as i16;
        }
        ColourFeatures {
            width: img.width(),
            height: img.height(),
            background,
            contrast_gain: 1.0,
            blueness_pct: blueness,
            magenta_pct: magenta,
            chroma_pct: chroma,
        }
    }

    /// The stain strength of the photo: the 90th percentile of chroma. In a
    /// smear most of the top 10-40% of pixels by chroma are erythrocytes, so
    /// this measures how strongly the photo is stained (and how much contrast
    /// the camera kept), whatever its leukocytes look like.
    pub fn stain_chroma_pct(&self) -> i16 {
        let mut hist = [0u32; 301];
        for &c in &self.chroma_pct {
            hist[c.clamp(0, 300) as usize] += 1;
        }
        let n = self.chroma_pct.len() as u64;
        let want = n - n / 10;
        let mut seen = 0u64;
        for (v, &k) in hist.iter().enumerate() {
            seen += k as u64;
            if seen >= want.max(1) {
                return v as i16;
            }
        }
        0
    }

    /// Scales every feature by `reference / stain` (at most `max_gain`, never
    /// below 1) when the photo's stain chroma is below `reference`: a pale or
    /// washed-out photo (thin stain, other camera, bright lamp) then meets the
    /// thresholds as a BCCD photo would; normal and strong photos are left alone.
    pub fn boost_contrast(&mut self, reference_pct: u16, max_gain: f32) {
        let stain = self.stain_chroma_pct().max(1) as f32;
        let max_gain = if max_gain.is_finite() {
            max_gain.clamp(1.0, 10.0)
        } else {
            1.0
        };
        let gain = (reference_pct as f32 / stain).clamp(1.0, max_gain);
        if gain <= 1.0 {
            return;
        }
        let g = (gain * 256.0).round() as i32;
        for plane in [
            &mut self.blueness_pct,
            &mut self.magenta_pct,
            &mut self.chroma_pct,
        ] {
            for v in plane.iter_mut() {
                *v = ((*v as i32 * g) >> 8).clamp(-3000, 3000) as i16;
            }
        }
        self.contrast_gain = gain;
    }
}

/// Per channel: `v -> v * gray / background[c]` (clamped to 255), where
/// `gray` is the background's mean, so the background becomes neutral gray.
fn balance_luts(background: [u8; 3]) -> [[u8; 256]; 3] {
    let bg = background.map(|c| c.max(1) as u32);
    let gray = (bg[0] + bg[1] + bg[2]).div_ceil(3);
    let mut luts = [[0u8; 256]; 3];
    for c in 0..3 {
        for v in 0..256u32 {
            luts[c][v as usize] = ((v * gray + bg[c] / 2) / bg[c]).min(255) as u8;
        }
    }
    luts
}

/// `300 * 2^16 / s` for a channel sum `s` (= percent of the mean, 16 fraction
/// bits). Sums below 3 (black) are treated as 3 so products stay in `i32`.
fn reciprocal_lut() -> [i32; 766] {
    let mut lut = [0i32; 766];
    for (s, v) in lut.iter_mut().enumerate() {
        *v = (300 * 65536) / (s.max(3) as i32);
    }
    lut
}

/// Sum of a plane over the `(2r+1)^2` window around each pixel, edges
/// replicated (so every window has the same pixel count).
pub fn box_sum(plane: &[i16], width: u32, height: u32, radius: u32) -> Vec<i32> {
    let (w, h) = (width as usize, height as usize);
    let r = radius as isize;
    let mut horiz = vec![0i32; w * h];
    if w == 0 || h == 0 {
        return horiz;
    }
    let clamp = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
    for y in 0..h {
        let row = &plane[y * w..(y + 1) * w];
        let out = &mut horiz[y * w..(y + 1) * w];
        let mut acc: i32 = (-r..=r).map(|d| row[clamp(d, w)] as i32).sum();
        out[0] = acc;
        for x in 1..w {
            acc += row[clamp(x as isize + r, w)] as i32 - row[clamp(x as isize - r - 1, w)] as i32;
            out[x] = acc;
        }
    }
    let mut out = vec![0i32; w * h];
    let mut acc: Vec<i32> = vec![0; w];
    for d in -r..=r {
        let src = &horiz[clamp(d, h) * w..(clamp(d, h) + 1) * w];
        acc.iter_mut().zip(src).for_each(|(a, s)| *a += s);
    }
    out[..w].copy_from_slice(&acc);
    for y in 1..h {
        let add = clamp(y as isize + r, h) * w;
        let sub = clamp(y as isize - r - 1, h) * w;
        for x in 0..w {
            acc[x] += horiz[add + x] - horiz[sub + x];
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
                p[0],
                (p[1] as u32 * 85 / 100) as u8,
                (p[2] as u32 * 70 / 100) as u8,
            ]
        };
        let neutral = RgbImage::from_fn(3, 1, |x, _| Rgb(scene[x as usize]));
        let cast = RgbImage::from_fn(3, 1, |x, _| Rgb(warm(scene[x as usize])));
        let a = ColourFeatures::with_background(&neutral, scene[0]);
        let b = ColourFeatures::with_background(&cast, warm(scene[0]));
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
