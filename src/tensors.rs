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
    let prepared: Vec<(u32, usize, RgbImage, bool)> = samples
        .par_iter()
        .map(|s| {
            let photo = crate::imageio::load_rgb(&dir.image_path(s.image_id))?;
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
