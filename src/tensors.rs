//! From photos to network inputs: the whole photo resized, or the largest
//! isolated leukocyte cropped; then planar float batches on a device.

use crate::data::{ClassSet, DataDir, Sample};
use crate::error::Result;
use crate::train::config::InputConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};
use image::RgbImage;
use rayon::prelude::*;

/// The network input for one photo, and whether a leukocyte was found in it.
pub fn network_input(photo: &RgbImage, input: &InputConfig) -> (RgbImage, bool) {
    let (mut img, found) = unbalanced_input(photo, input);
    if input.white_balance() {
        white_balance(&mut img, photo_background(photo));
    }
    (img, found)
}

fn unbalanced_input(photo: &RgbImage, input: &InputConfig) -> (RgbImage, bool) {
    let (w, h) = input.dims();
    match input.crop_config() {
        None => (resize(photo, w, h), true),
        Some(crop) => {
            let cfg = crate::isolate::IsolationConfig::default();
            let boxes = crate::isolate::isolate(photo, &cfg);
            match boxes.first() {
                Some(b) => (crate::isolate::crop(photo, b, &crop), true),
                // Nothing found: the whole photo, as the study's pipeline does.
                None => (resize(photo, w, h), false),
            }
        }
    }
}

/// The level every channel of the background has after [`white_balance`]
/// (0.8 of full scale: BCCD's backgrounds are 187-212, so its photos change
/// little, and the nuclei and cytoplasm stay well inside the range).
pub const BALANCED_BACKGROUND: f32 = 204.0;

/// A photo's background (white) colour, as the isolation estimates it: the
/// median colour of its brightest pixels (`isolate::estimate_background`).
pub fn photo_background(photo: &RgbImage) -> [u8; 3] {
    let cfg = crate::isolate::IsolationConfig::default();
    crate::isolate::estimate_background(photo, cfg.background_top_fraction)
}

/// Scales each channel of `img` (a crop of, or the whole of, a photo whose
/// background colour is `background`) so that the background becomes neutral
/// gray at [`BALANCED_BACKGROUND`]. This is the von Kries model of a change
/// of illuminant or camera white balance: every channel multiplied by its
/// own factor, which this undoes. Brighter-than-background pixels saturate.
pub fn white_balance(img: &mut RgbImage, background: [u8; 3]) {
    colour_cast(
        img,
        ColourCast(background.map(|b| BALANCED_BACKGROUND / f32::from(b.max(1)))),
    );
}

/// Per-channel gains (red, green, blue), as a different lamp, filter or
/// camera white balance applies them to every pixel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColourCast(pub [f32; 3]);

impl std::str::FromStr for ColourCast {
    type Err = String;

    /// `R,G,B`, each a finite factor > 0 (e.g. `1.08,1,0.85`: a warmer lamp).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.len() != 3 {
            return Err(format!(
                "'{s}': expected three factors R,G,B (e.g. 1.08,1,0.85)"
            ));
        }
        let mut g = [0f32; 3];
        for (slot, p) in g.iter_mut().zip(&parts) {
            *slot = match p.parse::<f32>() {
                Ok(v) if v.is_finite() && v > 0.0 => v,
                _ => return Err(format!("'{p}' in '{s}': each factor must be a number > 0")),
            };
        }
        Ok(ColourCast(g))
    }
}

/// Multiplies each channel of `img` by its factor (rounded, saturating).
pub fn colour_cast(img: &mut RgbImage, cast: ColourCast) {
    let luts: [[u8; 256]; 3] = cast
        .0
        .map(|g| std::array::from_fn(|v| (v as f32 * g).round().min(255.0) as u8));
    for px in img.pixels_mut() {
        for (c, lut) in luts.iter().enumerate() {
            px.0[c] = lut[px.0[c] as usize];
        }
    }
}

fn resize(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    image::imageops::resize(img, w, h, image::imageops::FilterType::Triangle)
}

/// Network inputs for a set of labelled samples, in sample order.
#[derive(Debug, Clone)]
pub struct InputSet {
    pub ids: Vec<u32>,
    /// Class index in the run's class set.
    pub labels: Vec<usize>,
    pub images: Vec<RgbImage>,
    /// Photos in which no leukocyte was found (the whole photo was used).
    pub not_found: Vec<u32>,
}

impl InputSet {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Decodes and prepares every sample's input (all cores).
pub fn prepare(
    dir: &DataDir,
    samples: &[Sample],
    classes: &ClassSet,
    input: &InputConfig,
) -> Result<InputSet> {
    prepare_cast(dir, samples, classes, input, None)
}

/// [`prepare`], with every photo first given a colour cast ([`colour_cast`]):
/// how the model would fare on the same smears under another microscope.
pub fn prepare_cast(
    dir: &DataDir,
    samples: &[Sample],
    classes: &ClassSet,
    input: &InputConfig,
    cast: Option<ColourCast>,
) -> Result<InputSet> {
    let prepared: Vec<(u32, usize, RgbImage, bool)> = samples
        .par_iter()
        .map(|s| {
            let mut photo = crate::imageio::load_rgb(&dir.image_path(s.image_id))?;
            if let Some(cast) = cast {
                colour_cast(&mut photo, cast);
            }
            let (img, found) = network_input(&photo, input);
            let label = classes.index_of(s.label).ok_or_else(|| {
                crate::LeukoError::Invalid(format!(
                    "image {}: class {} is not in the class set",
                    s.image_id, s.label
                ))
            })?;
            Ok((s.image_id, label, img, found))
        })
        .collect::<Result<_>>()?;
    let mut set = InputSet {
        ids: Vec::with_capacity(prepared.len()),
        labels: Vec::with_capacity(prepared.len()),
        images: Vec::with_capacity(prepared.len()),
        not_found: Vec::new(),
    };
    for (id, label, img, found) in prepared {
        if !found {
            set.not_found.push(id);
        }
        set.ids.push(id);
        set.labels.push(label);
        set.images.push(img);
    }
    Ok(set)
}

/// A `[n, 3, h, w]` float tensor from planar data.
pub fn images_tensor(data: Vec<f32>, n: usize, w: u32, h: u32, device: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(data, [n, 3, h as usize, w as usize]),
        device,
    )
}

/// A `[n]` integer tensor of class indices.
pub fn labels_tensor(labels: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(v, [labels.len()]), device)
}

/// Plain (unaugmented) planar floats of several images of one size.
pub fn plain_batch(images: &[&RgbImage]) -> Vec<f32> {
    let per = images
        .first()
        .map(|i| 3 * (i.width() * i.height()) as usize)
        .unwrap_or(0);
    let mut data = vec![0f32; per * images.len()];
    data.par_chunks_mut(per.max(1))
        .zip(images.par_iter())
        .for_each(|(out, img)| crate::augment::plain_into(img, out));
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn white_balance_makes_the_background_neutral_gray() {
        let bg = [220u8, 200, 180];
        let mut img = RgbImage::from_pixel(4, 4, Rgb(bg));
        img.put_pixel(1, 1, Rgb([110, 50, 90]));
        white_balance(&mut img, bg);
        assert_eq!(img.get_pixel(0, 0).0, [204, 204, 204]);
        // Each channel scaled by its own factor: 110*204/220, 50*204/200, 90*204/180.
        assert_eq!(img.get_pixel(1, 1).0, [102, 51, 102]);
    }

    #[test]
    fn colour_casts_parse_and_refuse_nonsense() {
        assert_eq!("1.08, 1,0.85".parse(), Ok(ColourCast([1.08, 1.0, 0.85])));
        for bad in [
            "1,1", "1,1,1,1", "1,0,1", "1,-2,1", "1,x,1", "1,NaN,1", "1,inf,1",
        ] {
            assert!(bad.parse::<ColourCast>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_channel_gain_on_the_photo_is_undone() {
        // A synthetic smear: gray background with a purple disc.
        let photo = RgbImage::from_fn(160, 120, |x, y| {
            let (dx, dy) = (x as i32 - 80, y as i32 - 60);
            if dx * dx + dy * dy < 30 * 30 {
                Rgb([120, 80, 160])
            } else {
                Rgb([200, 200, 200])
            }
        });
        let mut cast = photo.clone();
        colour_cast(&mut cast, ColourCast([1.1, 1.0, 0.8]));
        let (mut a, mut b) = (photo.clone(), cast.clone());
        white_balance(&mut a, photo_background(&photo));
        white_balance(&mut b, photo_background(&cast));
        for (p, q) in a.pixels().zip(b.pixels()) {
            for c in 0..3 {
                assert!((p.0[c] as i32 - q.0[c] as i32).abs() <= 1, "{p:?} vs {q:?}");
            }
        }
        assert_ne!(photo.get_pixel(80, 60), cast.get_pixel(80, 60));

        // The training/evaluation path applies it when the config asks for it.
        let input = InputConfig::Crop {
            size: 32,
            margin: 0.0,
            keep_aspect: false,
            white_balance: true,
        };
        let (a, _) = network_input(&photo, &input);
        let (b, _) = network_input(&cast, &input);
        let worst = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(&p, &q)| (p as i32 - q as i32).abs())
            .max();
        assert!(worst <= Some(2), "{worst:?}");
    }
}
