//! Putting every photo's colours on one footing before the network sees them.
//!
//! Two things make the same cell type look different from photo to photo:
//!
//! * the light: lamp, filter, camera white balance and exposure multiply each
//!   channel by its own factor. White balance against the photo's background
//!   ([`ColourBalance::white`]) undoes that.
//! * the stain: how long a smear sat in the stain and how thick it is change
//!   how much light every stained structure absorbs. On BCCD's photos the
//!   erythrocytes' optical density ([`erythrocyte_density`]) spans a factor of
//!   1.6 in green and 2.5 in blue between smears (0.076-0.125 and 0.047-0.117,
//!   5th to 95th percentile), and the default model's neutrophil → eosinophil
//!   errors fall on smears dense in blue (`docs/experiments.md`, "Stain
//!   normalisation").
//!   Erythrocytes are in every photo and take up the same eosin as those
//!   granules, so they are the photo's own stain reference:
//!   [`ColourBalance::stain`] scales each channel's optical density so that the
//!   photo's erythrocytes get [`REFERENCE_ERYTHROCYTE_DENSITY`]. Measured on
//!   BCCD's five grouped folds it did not help (298 against 304 of 347 test
//!   photos right), so `final.toml` leaves it off (`normalise_stain`).

use crate::isolate::{self, IsolationConfig};
use image::RgbImage;

/// The level every channel of the background has after balancing (0.8 of
/// full scale: BCCD's backgrounds are 187-212, so its photos change little,
/// and the nuclei and cytoplasm stay well inside the range).
pub const BALANCED_BACKGROUND: f32 = 204.0;

/// The optical density (red, green, blue; `-log10` of the light an erythrocyte
/// lets through, relative to the background) that stain normalisation gives
/// every photo's erythrocytes: the median over BCCD's 350 labelled photos of
/// [`erythrocyte_density`], so that a typical BCCD photo changes little.
pub const REFERENCE_ERYTHROCYTE_DENSITY: [f32; 3] = [0.0474, 0.1034, 0.0691];

/// Limits of the per-channel density factor: a photo whose erythrocytes
/// measure outside a factor of two of the reference is more likely measured
/// wrongly (few erythrocytes, a clump of cells) than stained that differently.
pub const DENSITY_FACTOR_RANGE: std::ops::RangeInclusive<f32> = 0.5..=2.0;

/// Fewest erythrocyte pixels (at the isolation's working size) for a density
/// estimate: about two erythrocytes' worth.
const MIN_ERYTHROCYTE_PIXELS: usize = 400;

/// A per-channel lookup table applied to every pixel of a photo or crop.
#[derive(Debug, Clone, PartialEq)]
pub struct ColourBalance {
    luts: [[u8; 256]; 3],
}

impl ColourBalance {
    /// Each channel scaled so that `background` becomes neutral gray at
    /// [`BALANCED_BACKGROUND`]: the von Kries model of a change of illuminant
    /// or camera white balance. Brighter-than-background pixels saturate.
    pub fn white(background: [u8; 3]) -> ColourBalance {
        let gains = background.map(|b| BALANCED_BACKGROUND / f32::from(b.max(1)));
        ColourBalance::gains(gains)
    }

    /// Every channel multiplied by its factor (rounded, saturating).
    pub fn gains(gains: [f32; 3]) -> ColourBalance {
        ColourBalance {
            luts: gains.map(|g| std::array::from_fn(|v| (v as f32 * g).round().min(255.0) as u8)),
        }
    }

    /// White balance, and each channel's optical density relative to the
    /// background multiplied by `reference / erythrocyte_density` (within
    /// [`DENSITY_FACTOR_RANGE`]): a pixel of transmittance `t = v / background`
    /// becomes `BALANCED_BACKGROUND * t^factor`. The background stays where
    /// white balance puts it; only stained structures get lighter or darker.
    pub fn stain(background: [u8; 3], erythrocyte_density: [f32; 3]) -> ColourBalance {
        let mut luts = [[0u8; 256]; 3];
        for (c, lut) in luts.iter_mut().enumerate() {
            let factor = density_factor(REFERENCE_ERYTHROCYTE_DENSITY[c], erythrocyte_density[c]);
            let bg = f32::from(background[c].max(1));
            for (v, out) in lut.iter_mut().enumerate() {
                // Zero transmittance has infinite density: treat a 0 as half a step.
                let t = (v as f32).max(0.5) / bg;
                *out = (BALANCED_BACKGROUND * t.powf(factor)).round().min(255.0) as u8;
            }
        }
        ColourBalance { luts }
    }

    /// The balance a network input of a photo gets: stain normalisation when
    /// asked for and the photo has enough erythrocytes to measure, else white
    /// balance when asked for, else none.
    pub fn for_photo(photo: &RgbImage, white: bool, stain: bool) -> Option<ColourBalance> {
        if !white && !stain {
            return None;
        }
        let background = photo_background(photo);
        let density = if stain {
            erythrocyte_density(photo)
        } else {
            None
        };
        Some(match density {
            Some(d) => ColourBalance::stain(background, d),
            None => ColourBalance::white(background),
        })
    }

    pub fn apply(&self, img: &mut RgbImage) {
        for px in img.pixels_mut() {
            for (c, lut) in self.luts.iter().enumerate() {
                px.0[c] = lut[px.0[c] as usize];
            }
        }
    }
}

fn density_factor(reference: f32, measured: f32) -> f32 {
    let f = reference / measured;
    if f.is_finite() {
        f.clamp(*DENSITY_FACTOR_RANGE.start(), *DENSITY_FACTOR_RANGE.end())
    } else {
        1.0
    }
}

/// A photo's background (white) colour, as the isolation estimates it: the
/// median colour of its brightest pixels (`isolate::estimate_background`).
pub fn photo_background(photo: &RgbImage) -> [u8; 3] {
    let cfg = IsolationConfig::default();
    isolate::estimate_background(photo, cfg.background_top_fraction)
}

/// The median optical density (red, green, blue) of a photo's erythrocytes
/// relative to its background, or `None` when the photo shows too few of them
/// to tell. Erythrocyte pixels are the isolation's
/// ([`isolate::erythrocyte_mask`]: stained, leaning to red), found at its
/// working size; pale cytoplasm also falls in there but covers far less of a
/// smear than the erythrocytes do.
pub fn erythrocyte_density(photo: &RgbImage) -> Option<[f32; 3]> {
    let cfg = IsolationConfig::default();
    let factor = isolate::work_factor(photo.width(), photo.height(), cfg.work_max_side_px);
    let work = isolate::downsample(photo, factor);
    let model = isolate::ColourModel::estimate(&work, &cfg);
    erythrocyte_density_at(&work, &model, &cfg)
}

/// [`erythrocyte_density`] of a photo already shrunk to the isolation's working size, with its
/// colour model.
pub fn erythrocyte_density_at(
    work: &RgbImage,
    model: &isolate::ColourModel,
    cfg: &IsolationConfig,
) -> Option<[f32; 3]> {
    let mask = isolate::erythrocyte_mask(work, model, cfg);
    let mut hist = [[0u32; 256]; 3];
    let mut n = 0usize;
    for (px, m) in work.pixels().zip(mask.pixels()) {
        if m.0[0] != 0 {
            for c in 0..3 {
                hist[c][px.0[c] as usize] += 1;
            }
            n += 1;
        }
    }
    if n < MIN_ERYTHROCYTE_PIXELS {
        return None;
    }
    let background = model.background;
    let mut density = [0f32; 3];
    for c in 0..3 {
        let median = median_of(&hist[c], n) as f32;
        let t = median.max(0.5) / f32::from(background[c].max(1));
        density[c] = -t.log10();
    }
    // Erythrocytes lighter than the background in some channel: nothing to scale by.
    density.iter().all(|&d| d > 0.0).then_some(density)
}

fn median_of(hist: &[u32; 256], n: usize) -> usize {
    let half = n.div_ceil(2) as u64;
    let mut acc = 0u64;
    for (v, &k) in hist.iter().enumerate() {
        acc += u64::from(k);
        if acc >= half {
            return v;
        }
    }
    255
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A synthetic smear: gray background, reddish discs of a given density.
    fn smear(background: [u8; 3], density: [f32; 3]) -> RgbImage {
        let mut img = RgbImage::from_pixel(320, 240, Rgb(background));
        let rbc: [u8; 3] = std::array::from_fn(|c| {
            (f32::from(background[c]) * 10f32.powf(-density[c])).round() as u8
        });
        for cy in (20..240).step_by(40) {
            for cx in (20..320).step_by(40) {
                for y in cy - 14..cy + 14 {
                    for x in cx - 14..cx + 14 {
                        let (dx, dy) = (x as i32 - cx as i32, y as i32 - cy as i32);
                        if dx * dx + dy * dy <= 14 * 14 && x < 320 && y < 240 {
                            img.put_pixel(x, y, Rgb(rbc));
                        }
                    }
                }
            }
        }
        img
    }

    #[test]
    fn measures_the_density_of_erythrocytes() {
        let d = [0.08, 0.2, 0.15];
        let img = smear([208, 206, 204], d);
        let m = erythrocyte_density(&img).expect("a smear full of erythrocytes");
        for c in 0..3 {
            assert!((m[c] - d[c]).abs() < 0.01, "channel {c}: {m:?} vs {d:?}");
        }
    }

    #[test]
    fn stain_normalisation_gives_erythrocytes_the_reference_density() {
        // Twice the reference density in every channel, under a warm lamp.
        let d = REFERENCE_ERYTHROCYTE_DENSITY.map(|r| 1.6 * r);
        let mut img = smear([214, 204, 190], d);
        let bal = ColourBalance::for_photo(&img, true, true).expect("balance");
        bal.apply(&mut img);
        let m = erythrocyte_density(&img).expect("still erythrocytes");
        for c in 0..3 {
            assert!(
                (m[c] - REFERENCE_ERYTHROCYTE_DENSITY[c]).abs() < 0.01,
                "channel {c}: {m:?}"
            );
        }
        // The background is neutral gray at the balanced level.
        let bg = img.get_pixel(0, 0).0;
        for v in bg {
            assert!(
                (i32::from(v) - BALANCED_BACKGROUND as i32).abs() <= 1,
                "{bg:?}"
            );
        }
    }

    #[test]
    fn a_photo_without_erythrocytes_gets_white_balance_only() {
        let img = RgbImage::from_pixel(320, 240, Rgb([200, 205, 210]));
        assert_eq!(erythrocyte_density(&img), None);
        assert_eq!(
            ColourBalance::for_photo(&img, true, true),
            Some(ColourBalance::white([200, 205, 210]))
        );
        assert_eq!(ColourBalance::for_photo(&img, false, false), None);
    }

    #[test]
    fn density_factor_is_limited() {
        assert_eq!(density_factor(0.1, 0.01), 2.0);
        assert_eq!(density_factor(0.1, 1.0), 0.5);
        assert_eq!(density_factor(0.1, 0.0), 1.0);
        assert!((density_factor(0.1, 0.08) - 1.25).abs() < 1e-6);
    }
}
