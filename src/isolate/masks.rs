//! Colour masks (255 = in, 0 = out) from the balanced chromaticity features.
//!
//! * background: gray pixels, channels close together;
//! * erythrocytes: stained but leaning to red (blue does not clearly exceed red);
//! * leukocyte: neither, i.e. clearly blue: the stained nuclei;
//! * cytoplasm: the looser, averaged criterion the nuclei are later grown into.

use super::colour::{box_sum, ColourFeatures, ColourModel, Window};
use super::config::IsolationConfig;
use image::{GrayImage, Luma, RgbImage};

/// Foreground value of every mask.
pub const IN: u8 = 255;

fn mask_by_pixel(img: &RgbImage, test: impl Fn([u8; 3]) -> bool) -> GrayImage {
    let data = img
        .as_raw()
        .chunks_exact(3)
        .map(|p| if test([p[0], p[1], p[2]]) { IN } else { 0 })
        .collect();
    GrayImage::from_raw(img.width(), img.height(), data)
        .unwrap_or_else(|| GrayImage::new(img.width(), img.height()))
}

/// Gray pixels: balanced chroma at most `background_max_chroma_pct`.
pub fn background_mask(img: &RgbImage, model: &ColourModel, cfg: &IsolationConfig) -> GrayImage {
    let t = cfg.background_max_chroma_pct as i64;
    mask_by_pixel(img, |p| !model.chroma_above(p, t))
}

/// Stained pixels that lean to red: not background, and blue exceeds red by
/// at most `erythrocyte_max_blueness_pct` of the mean ("weak blue or strong
/// red"). Pale cytoplasm also falls in here; it is recovered by growing.
pub fn erythrocyte_mask(img: &RgbImage, model: &ColourModel, cfg: &IsolationConfig) -> GrayImage {
    let t_bg = cfg.background_max_chroma_pct as i64;
    let c = model.blueness_above(cfg.erythrocyte_max_blueness_pct as i64);
    mask_by_pixel(img, |p| model.chroma_above(p, t_bg) && !above(&c, p))
}

#[inline(always)]
fn above(c: &[i64; 3], p: [u8; 3]) -> bool {
    c[0] * p[0] as i64 + c[1] * p[1] as i64 + c[2] * p[2] as i64 > 0
}

/// Leukocyte (nucleus) pixels: neither background nor erythrocyte, i.e.
/// clearly blue. Equal to `!background_mask & !erythrocyte_mask`; when the
/// blueness threshold is at least the background's chroma threshold (as by
/// default) the chroma test is implied and skipped, leaving one linear form
/// per pixel.
pub fn leukocyte_mask(img: &RgbImage, model: &ColourModel, cfg: &IsolationConfig) -> GrayImage {
    let t_bg = cfg.background_max_chroma_pct as i64;
    let t = cfg.erythrocyte_max_blueness_pct as i64;
    let c = model.blueness_above(t);
    if t >= t_bg {
        // chroma >= |blueness| (max - min >= |B' - R'|), so blueness > t
        // implies chroma > t_bg.
        mask_by_pixel(img, |p| above(&c, p))
    } else {
        mask_by_pixel(img, |p| above(&c, p) && model.chroma_above(p, t_bg))
    }
}

/// Cytoplasm pixels, judged on features averaged over a `(2r+1)^2` window
/// (r = `cytoplasm_smooth_radius_px`): bluer than the background by
/// `cytoplasm_min_blueness_pct` ("not red"), or stained more strongly than
/// erythrocytes (`granule_min_magenta_pct`, eosinophil granules).
pub fn cytoplasm_mask(img: &RgbImage, model: &ColourModel, cfg: &IsolationConfig) -> GrayImage {
    cytoplasm_mask_in(img, model, cfg, Window::whole(img.width(), img.height()))
}

/// [`cytoplasm_mask`] of the pixels in `win` only (a `win`-sized mask),
/// identical to the same part of the whole-image mask: the averaging window
/// reaches outside `win` where the image continues.
pub fn cytoplasm_mask_in(
    img: &RgbImage,
    model: &ColourModel,
    cfg: &IsolationConfig,
    win: Window,
) -> GrayImage {
    let r = cfg.cytoplasm_smooth_radius_px.min(1000);
    let outer = win.grown(r, img.width(), img.height());
    let f = ColourFeatures::compute_in(img, model, outer);
    let side = 2 * r as i64 + 1;
    let tb = cfg.cytoplasm_min_blueness_pct as i64 * side * side;
    let tm = cfg.granule_min_magenta_pct as i64 * side * side;
    let blue = box_sum(&f.blueness_pct, f.width, f.height, r);
    let magenta = box_sum(&f.magenta_pct, f.width, f.height, r);
    let (dx, dy) = ((win.x - outer.x) as usize, (win.y - outer.y) as usize);
    let ow = outer.width as usize;
    let mut data = Vec::with_capacity(win.width as usize * win.height as usize);
    for y in 0..win.height as usize {
        let start = (y + dy) * ow + dx;
        let (b, m) = (
            &blue[start..start + win.width as usize],
            &magenta[start..start + win.width as usize],
        );
        data.extend(b.iter().zip(m).map(|(&b, &m)| {
            if b as i64 >= tb || m as i64 >= tm {
                IN
            } else {
                0
            }
        }));
    }
    GrayImage::from_raw(win.width, win.height, data)
        .unwrap_or_else(|| GrayImage::new(win.width, win.height))
}

/// Nuclei by darkness, the isolation's second look (see
/// [`IsolationConfig::dark_nucleus_min_pct`]): pixels at least that much darker than the
/// background and darker than the photo's Otsu split of its stained pixels' darkness.
pub fn dark_nucleus_mask(img: &RgbImage, model: &ColourModel, cfg: &IsolationConfig) -> GrayImage {
    let t = dark_threshold_pct(img, model, cfg);
    let t_bg = cfg.background_max_chroma_pct as i64;
    mask_by_pixel(img, |p| {
        model.darkness_pct(p) >= t && model.chroma_above(p, t_bg)
    })
}

/// The darkness above which a stained pixel is nucleus in the second look: Otsu's threshold
/// over the darkness of the stained pixels (not gray, and darker than the background's noise),
/// at least `dark_nucleus_min_pct`. Gray pixels are never stain: a dark gray smudge or a
/// shadow is not a nucleus.
pub fn dark_threshold_pct(img: &RgbImage, model: &ColourModel, cfg: &IsolationConfig) -> f32 {
    let floor = cfg.dark_nucleus_min_pct as f32;
    let t_bg = cfg.background_max_chroma_pct as i64;
    let mut hist = [0u64; 101];
    for p in img.as_raw().chunks_exact(3) {
        let p = [p[0], p[1], p[2]];
        let d = model.darkness_pct(p);
        // Background noise spreads a few percent either way.
        if d > 5.0 && model.chroma_above(p, t_bg) {
            hist[d as usize] += 1;
        }
    }
    otsu(&hist).map_or(floor, |t| (t as f32).max(floor))
}

/// Otsu's threshold of a histogram: the bin that, as the lowest bin of the upper class,
/// maximises the between-class variance; `None` for fewer than two occupied bins.
fn otsu(hist: &[u64]) -> Option<usize> {
    let total: u64 = hist.iter().sum();
    let sum: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &n)| i as f64 * n as f64)
        .sum();
    let (mut below, mut sum_below) = (0u64, 0f64);
    let mut best: Option<(f64, usize)> = None;
    for t in 1..hist.len() {
        below += hist[t - 1];
        sum_below += (t - 1) as f64 * hist[t - 1] as f64;
        let above = total - below;
        if below == 0 || above == 0 {
            continue;
        }
        let m0 = sum_below / below as f64;
        let m1 = (sum - sum_below) / above as f64;
        let between = below as f64 * above as f64 * (m0 - m1) * (m0 - m1);
        if best.is_none_or(|(b, _)| between > b) {
            best = Some((between, t));
        }
    }
    best.map(|(_, t)| t)
}

/// The cytoplasm of the second look in `win`: [`cytoplasm_mask_in`], and also what is on
/// average at least `dark_cytoplasm_min_pct` darker than the background.
pub fn dark_cytoplasm_mask_in(
    img: &RgbImage,
    model: &ColourModel,
    cfg: &IsolationConfig,
    win: Window,
) -> GrayImage {
    let mut mask = cytoplasm_mask_in(img, model, cfg, win);
    let r = cfg.cytoplasm_smooth_radius_px.min(1000);
    let outer = win.grown(r, img.width(), img.height());
    let w = img.width() as usize;
    let raw = img.as_raw();
    let mut plane = Vec::with_capacity(outer.width as usize * outer.height as usize);
    for y in outer.y as usize..(outer.y + outer.height) as usize {
        let row =
            &raw[(y * w + outer.x as usize) * 3..(y * w + (outer.x + outer.width) as usize) * 3];
        plane.extend(
            row.chunks_exact(3)
                .map(|p| model.darkness_pct([p[0], p[1], p[2]]).round() as i16),
        );
    }
    let dark = box_sum(&plane, outer.width, outer.height, r);
    let side = 2 * r as i64 + 1;
    let t = cfg.dark_cytoplasm_min_pct as i64 * side * side;
    let (dx, dy) = ((win.x - outer.x) as usize, (win.y - outer.y) as usize);
    let ow = outer.width as usize;
    for (i, px) in mask.as_mut().iter_mut().enumerate() {
        let (x, y) = (i % win.width as usize, i / win.width as usize);
        if dark[(y + dy) * ow + x + dx] as i64 >= t {
            *px = IN;
        }
    }
    mask
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

    fn scene() -> (RgbImage, ColourModel) {
        // background, erythrocyte, nucleus, pale lilac cytoplasm, eosinophil granule
        let px = [
            [203u8, 204, 203],
            [190, 150, 160],
            [146, 100, 215],
            [196, 190, 212],
            [200, 140, 165],
        ];
        let img = RgbImage::from_fn(5, 1, |x, _| Rgb(px[x as usize]));
        (img, ColourModel::with_background(px[0]))
    }

    fn row(m: &GrayImage) -> Vec<bool> {
        m.pixels().map(|p| p.0[0] != 0).collect()
    }

    #[test]
    fn each_mask_picks_its_kind_of_pixel() {
        let (img, m) = scene();
        let cfg = IsolationConfig {
            cytoplasm_smooth_radius_px: 0,
            ..IsolationConfig::default()
        };
        assert_eq!(
            row(&background_mask(&img, &m, &cfg)),
            [true, false, false, false, false]
        );
        assert_eq!(
            row(&erythrocyte_mask(&img, &m, &cfg)),
            [false, true, false, true, true]
        );
        assert_eq!(
            row(&leukocyte_mask(&img, &m, &cfg)),
            [false, false, true, false, false]
        );
        assert_eq!(
            row(&cytoplasm_mask(&img, &m, &cfg)),
            [false, false, true, true, true]
        );
    }

    #[test]
    fn leukocyte_is_neither_background_nor_erythrocyte() {
        let img = RgbImage::from_fn(16, 16, |x, y| {
            Rgb([(x * 16) as u8, (y * 16) as u8, ((x + y) * 8) as u8])
        });
        for t in [2u16, 20] {
            let cfg = IsolationConfig {
                erythrocyte_max_blueness_pct: t,
                ..IsolationConfig::default()
            };
            let m = ColourModel::estimate(&img, &cfg);
            let neither = combine(
                &background_mask(&img, &m, &cfg),
                &erythrocyte_mask(&img, &m, &cfg),
                |a, b| !a && !b,
            );
            assert_eq!(leukocyte_mask(&img, &m, &cfg), neither);
        }
    }

    #[test]
    fn black_pixels_are_in_no_stain_mask() {
        let img = RgbImage::from_pixel(4, 3, Rgb([0, 0, 0]));
        let cfg = IsolationConfig::default();
        let m = ColourModel::estimate(&img, &cfg);
        assert_eq!(count(&leukocyte_mask(&img, &m, &cfg)), 0);
        assert_eq!(count(&erythrocyte_mask(&img, &m, &cfg)), 0);
        assert_eq!(count(&cytoplasm_mask(&img, &m, &cfg)), 0);
        assert_eq!(count(&background_mask(&img, &m, &cfg)), 12);
    }

    #[test]
    fn cytoplasm_in_a_window_equals_the_whole_mask_there() {
        let img = RgbImage::from_fn(40, 30, |x, y| {
            Rgb([
                (150 + (x * 7 + y * 3) % 60) as u8,
                (120 + (x * y) % 90) as u8,
                (140 + (x * 13 + y * 5) % 80) as u8,
            ])
        });
        let cfg = IsolationConfig::default();
        let m = ColourModel::estimate(&img, &cfg);
        let whole = cytoplasm_mask(&img, &m, &cfg);
        for win in [
            Window {
                x: 0,
                y: 0,
                width: 40,
                height: 30,
            },
            Window {
                x: 5,
                y: 7,
                width: 20,
                height: 10,
            },
            Window {
                x: 30,
                y: 25,
                width: 10,
                height: 5,
            },
        ] {
            let part = cytoplasm_mask_in(&img, &m, &cfg, win);
            for y in 0..win.height {
                for x in 0..win.width {
                    assert_eq!(
                        part.get_pixel(x, y),
                        whole.get_pixel(x + win.x, y + win.y),
                        "{win:?} {x} {y}"
                    );
                }
            }
        }
    }
}
