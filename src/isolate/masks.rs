//! Colour masks (255 = in, 0 = out) from the balanced chromaticity features.
//!
//! * background: gray pixels, channels close together;
//! * erythrocytes: stained but leaning to red (blue does not clearly exceed red);
//! * leukocyte: neither, i.e. clearly blue: the stained nuclei;
//! * cytoplasm: the looser, averaged criterion the nuclei are later grown into.

use super::colour::{box_sum, ColourFeatures};
use super::config::IsolationConfig;
use image::{GrayImage, Luma};

/// Foreground value of every mask.
pub const IN: u8 = 255;

fn mask_from(features: &ColourFeatures, test: impl Fn(usize) -> bool) -> GrayImage {
    let data = (0..features.blueness_pct.len())
        .map(|i| if test(i) { IN } else { 0 })
        .collect();
    GrayImage::from_raw(features.width, features.height, data)
        .unwrap_or_else(|| GrayImage::new(features.width, features.height))
}

/// Gray pixels: balanced chroma below `background_max_chroma_pct`.
pub fn background_mask(f: &ColourFeatures, cfg: &IsolationConfig) -> GrayImage {
    let t = cfg.background_max_chroma_pct.min(300) as i16;
    mask_from(f, |i| f.chroma_pct[i] < t)
}

/// Stained pixels that lean to red: not background, and blue exceeds red by
/// less than `erythrocyte_max_blueness_pct` of the mean ("weak blue or strong
/// red"). Pale cytoplasm also falls in here; it is recovered by growing.
pub fn erythrocyte_mask(f: &ColourFeatures, cfg: &IsolationConfig) -> GrayImage {
    let bg = cfg.background_max_chroma_pct.min(300) as i16;
    let t = cfg.erythrocyte_max_blueness_pct.min(300) as i16;
    mask_from(f, |i| f.chroma_pct[i] >= bg && f.blueness_pct[i] < t)
}

/// Leukocyte (nucleus) pixels: neither background nor erythrocyte. Computed in
/// one pass; equal to `!background_mask & !erythrocyte_mask`.
pub fn leukocyte_mask(f: &ColourFeatures, cfg: &IsolationConfig) -> GrayImage {
    let bg = cfg.background_max_chroma_pct.min(300) as i16;
    let t = cfg.erythrocyte_max_blueness_pct.min(300) as i16;
    mask_from(f, |i| f.chroma_pct[i] >= bg && f.blueness_pct[i] >= t)
}

/// Cytoplasm pixels, judged on features averaged over a
/// `(2r+1)^2` window (r = `cytoplasm_smooth_radius_px`): bluer than the
/// background by `cytoplasm_min_blueness_pct` ("not red"), or stained more
/// strongly than erythrocytes (`granule_min_magenta_pct`, eosinophil granules).
pub fn cytoplasm_mask(f: &ColourFeatures, cfg: &IsolationConfig) -> GrayImage {
    let r = cfg.cytoplasm_smooth_radius_px.min(1000);
    let window = {
        let side = 2 * r as i64 + 1;
        side * side
    };
    let blue = box_sum(&f.blueness_pct, f.width, f.height, r);
    let magenta = box_sum(&f.magenta_pct, f.width, f.height, r);
    let tb = cfg.cytoplasm_min_blueness_pct as i64 * window;
    let tm = cfg.granule_min_magenta_pct as i64 * window;
    mask_from(f, |i| blue[i] as i64 >= tb || magenta[i] as i64 >= tm)
}

/// Number of foreground pixels.
pub fn count(mask: &GrayImage) -> usize {
    mask.as_raw().iter().filter(|&&v| v != 0).count()
}

/// `a & !b`, `a | b` and friends for tests and callers that combine masks.
pub fn combine(a: &GrayImage, b: &GrayImage, op: impl Fn(bool, bool) -> bool) -> GrayImage {
    let mut out = GrayImage::new(a.width(), a.height());
    for ((o, x), y) in out.pixels_mut().zip(a.pixels()).zip(b.pixels()) {
        *o = Luma([if op(x.0[0] != 0, y.0[0] != 0) { IN } else { 0 }]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn scene() -> ColourFeatures {
        // background, erythrocyte, nucleus, pale lilac cytoplasm, eosinophil granule
        let px = [
            [203u8, 204, 203],
            [190, 150, 160],
            [146, 100, 215],
            [196, 190, 212],
            [200, 140, 165],
        ];
        let img = RgbImage::from_fn(5, 1, |x, _| Rgb(px[x as usize]));
        ColourFeatures::with_background(&img, px[0])
    }

    fn row(m: &GrayImage) -> Vec<bool> {
        m.pixels().map(|p| p.0[0] != 0).collect()
    }

    #[test]
    fn each_mask_picks_its_kind_of_pixel() {
        let f = scene();
        let cfg = IsolationConfig {
            cytoplasm_smooth_radius_px: 0,
            ..IsolationConfig::default()
        };
        assert_eq!(
            row(&background_mask(&f, &cfg)),
            [true, false, false, false, false]
        );
        assert_eq!(
            row(&erythrocyte_mask(&f, &cfg)),
            [false, true, false, true, true]
        );
        assert_eq!(
            row(&leukocyte_mask(&f, &cfg)),
            [false, false, true, false, false]
        );
        assert_eq!(
            row(&cytoplasm_mask(&f, &cfg)),
            [false, false, true, true, true]
        );
    }

    #[test]
    fn leukocyte_is_neither_background_nor_erythrocyte() {
        let img = RgbImage::from_fn(16, 16, |x, y| {
            Rgb([(x * 16) as u8, (y * 16) as u8, ((x + y) * 8) as u8])
        });
        let f = ColourFeatures::compute(&img, &IsolationConfig::default());
        let cfg = IsolationConfig::default();
        let neither = combine(
            &background_mask(&f, &cfg),
            &erythrocyte_mask(&f, &cfg),
            |a, b| !a && !b,
        );
        assert_eq!(leukocyte_mask(&f, &cfg), neither);
    }
}
