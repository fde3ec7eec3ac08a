//! Cropping a found leukocyte out of the photo and resizing it to the
//! network's input size (128x128 by default).
//!
//! Resizing averages the source pixels each output pixel covers (like
//! OpenCV's `INTER_AREA`) when shrinking, so the crop is not aliased, and is
//! bilinear when enlarging. Separable, columns first (16-bit lanes, 8-bit
//! weights), then rows.

use super::boxes::LeukocyteBox;
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

/// How a box becomes a network input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CropConfig {
    /// Side of the square output in pixels (at least 1).
    pub size_px: u32,
    /// Extra context around the box on each side, as a share of the box's
    /// width (left/right) and height (top/bottom).
    pub margin_fraction: f64,
    /// `false`: stretch the box to the square (the study's choice).
    /// `true`: crop a square centred on the box, so the cell keeps its shape;
    /// the square is moved inside the photo where it fits, and padded with
    /// `pad_rgb` where it cannot.
    pub keep_aspect: bool,
    /// Padding colour for `keep_aspect`.
    pub pad_rgb: [u8; 3],
}

impl Default for CropConfig {
    fn default() -> Self {
        CropConfig {
            size_px: 128,
            margin_fraction: 0.0,
            keep_aspect: false,
            pad_rgb: [0, 0, 0],
        }
    }
}

impl CropConfig {
    /// Default crop with a given output side.
    pub fn with_size(size_px: u32) -> CropConfig {
        CropConfig {
            size_px,
            ..CropConfig::default()
        }
    }
}

/// A rectangle in photo pixels that may reach outside the photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    x: i64,
    y: i64,
    w: i64,
    h: i64,
}

/// The rectangle of the photo a crop shows, in photo pixels: the crop is this window resized
/// to its square (stretched unless `keep_aspect`); parts outside the photo are padding. Lets a
/// crop be annotated with anything known in photo coordinates (a cell's outline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CropWindow {
    pub x: i64,
    pub y: i64,
    pub width: i64,
    pub height: i64,
}

impl From<Region> for CropWindow {
    fn from(r: Region) -> Self {
        CropWindow {
            x: r.x,
            y: r.y,
            width: r.w,
            height: r.h,
        }
    }
}

/// The window [`crop`] cuts for box `b` from a `photo_width x photo_height` photo; `None` for
/// an empty photo.
pub fn crop_window(
    photo_width: u32,
    photo_height: u32,
    b: &LeukocyteBox,
    cfg: &CropConfig,
) -> Option<CropWindow> {
    region(photo_width as i64, photo_height as i64, b, cfg).map(CropWindow::from)
}

fn region(iw: i64, ih: i64, b: &LeukocyteBox, cfg: &CropConfig) -> Option<Region> {
    if iw == 0 || ih == 0 {
        return None;
    }
    // The box clipped to the photo, at least one pixel.
    let x0 = (b.x_min as i64).min(iw - 1);
    let y0 = (b.y_min as i64).min(ih - 1);
    let x1 = (b.x_max as i64).clamp(x0 + 1, iw);
    let y1 = (b.y_max as i64).clamp(y0 + 1, ih);
    let m = if cfg.margin_fraction.is_finite() {
        cfg.margin_fraction.clamp(0.0, 100.0)
    } else {
        0.0
    };
    let mx = (m * (x1 - x0) as f64).round() as i64;
    let my = (m * (y1 - y0) as f64).round() as i64;
    let (x0, y0, x1, y1) = (x0 - mx, y0 - my, x1 + mx, y1 + my);
    if !cfg.keep_aspect {
        let (cx0, cy0) = (x0.max(0), y0.max(0));
        let (cx1, cy1) = (x1.min(iw), y1.min(ih));
        return Some(Region {
            x: cx0,
            y: cy0,
            w: cx1 - cx0,
            h: cy1 - cy0,
        });
    }
    let side = (x1 - x0).max(y1 - y0);
    let place = |lo: i64, hi: i64, len: i64| -> i64 {
        let start = (lo + hi - side) / 2;
        if side <= len {
            start.clamp(0, len - side)
        } else {
            start
        }
    };
    Some(Region {
        x: place(x0, x1, iw),
        y: place(y0, y1, ih),
        w: side,
        h: side,
    })
}

/// The box (plus margin) cut out of `img` and resized to
/// `size_px x size_px`. Never fails: boxes are clipped to the photo, an empty
/// box becomes its nearest photo pixel, and an empty photo gives a padded square.
pub fn crop(img: &RgbImage, b: &LeukocyteBox, cfg: &CropConfig) -> RgbImage {
    let size = cfg.size_px.max(1);
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let Some(r) = region(iw, ih, b, cfg) else {
        return RgbImage::from_pixel(size, size, Rgb(cfg.pad_rgb));
    };
    if r.x >= 0 && r.y >= 0 && r.x + r.w <= iw && r.y + r.h <= ih {
        return resample(img, r, size, size);
    }
    // Part of the square lies outside the photo: paste onto a padded canvas.
    let side = r.w;
    let mut canvas = RgbImage::from_pixel(side as u32, side as u32, Rgb(cfg.pad_rgb));
    for y in r.y.max(0)..(r.y + side).min(ih) {
        for x in r.x.max(0)..(r.x + side).min(iw) {
            canvas.put_pixel(
                (x - r.x) as u32,
                (y - r.y) as u32,
                *img.get_pixel(x as u32, y as u32),
            );
        }
    }
    let whole = Region {
        x: 0,
        y: 0,
        w: side,
        h: side,
    };
    resample(&canvas, whole, size, size)
}

/// Resizes the whole image to `width x height` with the same resampling as
/// [`crop`] (area average when shrinking, bilinear when enlarging).
pub fn resize(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = (width.max(1), height.max(1));
    if img.width() == 0 || img.height() == 0 {
        return RgbImage::new(w, h);
    }
    let r = Region {
        x: 0,
        y: 0,
        w: img.width() as i64,
        h: img.height() as i64,
    };
    resample(img, r, w, h)
}

const ONE: u32 = 1 << 8;

/// Fixed-point weights (summing to [`ONE`]) of the source pixels behind each
/// output pixel along one axis.
struct Taps {
    start: Vec<usize>,
    len: Vec<usize>,
    offset: Vec<usize>,
    weights: Vec<u32>,
}

fn taps(n: usize, m: usize) -> Taps {
    let mut t = Taps {
        start: Vec::with_capacity(m),
        len: Vec::with_capacity(m),
        offset: Vec::with_capacity(m),
        weights: Vec::new(),
    };
    let scale = n as f64 / m as f64;
    let mut w: Vec<f64> = Vec::new();
    for o in 0..m {
        w.clear();
        let start;
        if scale >= 1.0 {
            // Area: the source interval [o*scale, (o+1)*scale).
            let lo = o as f64 * scale;
            let hi = ((o + 1) as f64 * scale).min(n as f64);
            start = (lo.floor() as usize).min(n - 1);
            let end = (hi.ceil() as usize).clamp(start + 1, n);
            for i in start..end {
                let overlap = (hi.min(i as f64 + 1.0) - lo.max(i as f64)).max(0.0);
                w.push(overlap);
            }
        } else {
            // Bilinear between the two nearest source pixel centres.
            let c = ((o as f64 + 0.5) * scale - 0.5).clamp(0.0, (n - 1) as f64);
            start = (c.floor() as usize).min(n - 1);
            let frac = c - start as f64;
            w.push(1.0 - frac);
            if start + 1 < n {
                w.push(frac);
            }
        }
        // Fixed-point weights from rounded cumulative sums: they add up to
        // exactly ONE whatever the number of taps.
        let total: f64 = w.iter().sum();
        let offset = t.weights.len();
        let mut cum = 0.0;
        let mut prev = 0u32;
        for v in &w {
            cum += if total > 0.0 {
                v / total
            } else {
                1.0 / w.len() as f64
            };
            let next = ((cum * ONE as f64).round() as u32).min(ONE);
            t.weights.push(next - prev);
            prev = next;
        }
        if let Some(last) = t.weights[offset..].last_mut() {
            *last += ONE - prev;
        }
        let fixed = &t.weights[offset..];
        t.start.push(start);
        t.len.push(fixed.len());
        t.offset.push(offset);
    }
    t
}

/// Resamples `r` (which must lie inside `img` and be non-empty) to `ow x oh`.
fn resample(img: &RgbImage, r: Region, ow: u32, oh: u32) -> RgbImage {
    let (rw, rh) = (r.w.max(1) as usize, r.h.max(1) as usize);
    let (ow, oh) = (ow.max(1) as usize, oh.max(1) as usize);
    let tx = taps(rw, ow);
    let ty = taps(rh, oh);
    let stride = img.width() as usize * 3;
    let src = img.as_raw();
    let row_of = |y: usize| {
        let start = (r.y as usize + y) * stride + r.x as usize * 3;
        &src[start..start + rw * 3]
    };
    // Columns: each output row mixes a few source rows. Weights sum to 256,
    // so the 16-bit sums cannot overflow (255 * 256).
    let mut rows = vec![0u16; oh * rw * 3];
    for (o, acc) in rows.chunks_exact_mut(rw * 3).enumerate() {
        let ws = &ty.weights[ty.offset[o]..ty.offset[o] + ty.len[o]];
        for (k, &wgt) in ws.iter().enumerate() {
            let wgt = wgt as u16;
            let line = row_of(ty.start[o] + k);
            for (a, &v) in acc.iter_mut().zip(line) {
                *a += v as u16 * wgt;
            }
        }
    }
    // Rows: each output pixel mixes a few columns of the mixed rows.
    let mut out = vec![0u8; ow * oh * 3];
    for (line, dst) in rows.chunks_exact(rw * 3).zip(out.chunks_exact_mut(ow * 3)) {
        for (o, d) in dst.chunks_exact_mut(3).enumerate() {
            let ws = &tx.weights[tx.offset[o]..tx.offset[o] + tx.len[o]];
            let px = &line[tx.start[o] * 3..(tx.start[o] + ws.len()) * 3];
            let mut acc = [0u32; 3];
            for (&wgt, p) in ws.iter().zip(px.chunks_exact(3)) {
                acc[0] += p[0] as u32 * wgt;
                acc[1] += p[1] as u32 * wgt;
                acc[2] += p[2] as u32 * wgt;
            }
            for c in 0..3 {
                d[c] = ((acc[c] + (1 << 15)) >> 16).min(255) as u8;
            }
        }
    }
    RgbImage::from_raw(ow as u32, oh as u32, out)
        .unwrap_or_else(|| RgbImage::new(ow as u32, oh as u32))
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
            area_px: 0,
        }
    }

    #[test]
    fn crops_are_square_of_the_configured_size() {
        let img = RgbImage::from_fn(64, 48, |x, y| Rgb([x as u8, y as u8, 9]));
        for cfg in [
            CropConfig::default(),
            CropConfig::with_size(32),
            CropConfig {
                keep_aspect: true,
                margin_fraction: 0.5,
                ..CropConfig::default()
            },
        ] {
            for b in [
                bx(0, 0, 64, 48),
                bx(10, 10, 20, 40),
                bx(60, 40, 200, 300),
                bx(5, 5, 5, 5),
            ] {
                let c = crop(&img, &b, &cfg);
                assert_eq!(c.dimensions(), (cfg.size_px, cfg.size_px), "{b:?} {cfg:?}");
            }
        }
        assert_eq!(
            crop(
                &RgbImage::new(0, 0),
                &bx(0, 0, 1, 1),
                &CropConfig::default()
            )
            .width(),
            128
        );
    }

    #[test]
    fn area_shrink_averages_and_uniform_stays_uniform() {
        let img = RgbImage::from_fn(4, 2, |x, _| {
            if x % 2 == 0 {
                Rgb([0, 100, 200])
            } else {
                Rgb([100, 200, 0])
            }
        });
        let small = resize(&img, 2, 1);
        assert_eq!(small.get_pixel(0, 0).0, [50, 150, 100]);
        let flat = RgbImage::from_pixel(200, 150, Rgb([17, 140, 251]));
        for (w, h) in [(128, 128), (300, 7), (1, 1)] {
            assert!(resize(&flat, w, h).pixels().all(|p| p.0 == [17, 140, 251]));
        }
    }

    #[test]
    fn stretch_uses_exactly_the_box() {
        // Left half red, right half blue; the box covers only the blue half.
        let img = RgbImage::from_fn(40, 20, |x, _| {
            if x < 20 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let c = crop(&img, &bx(20, 0, 40, 20), &CropConfig::with_size(16));
        assert!(c.pixels().all(|p| p.0 == [0, 0, 255]));
    }

    #[test]
    fn keep_aspect_pads_outside_the_photo() {
        let img = RgbImage::from_pixel(40, 10, Rgb([200, 200, 200]));
        let cfg = CropConfig {
            size_px: 40,
            keep_aspect: true,
            pad_rgb: [0, 0, 0],
            ..CropConfig::default()
        };
        // A 40x10 box needs a 40x40 square; the photo is 10 tall: padding above and below.
        let c = crop(&img, &bx(0, 0, 40, 10), &cfg);
        assert_eq!(c.get_pixel(20, 20).0, [200, 200, 200]);
        assert_eq!(c.get_pixel(20, 0).0, [0, 0, 0]);
        assert_eq!(c.get_pixel(20, 39).0, [0, 0, 0]);
        // A small box near the edge: the square moves inside instead of padding.
        let big = RgbImage::from_pixel(100, 100, Rgb([50, 60, 70]));
        let c = crop(
            &big,
            &bx(0, 0, 10, 30),
            &CropConfig {
                pad_rgb: [255, 0, 0],
                ..cfg
            },
        );
        assert!(c.pixels().all(|p| p.0 == [50, 60, 70]));
    }
}
