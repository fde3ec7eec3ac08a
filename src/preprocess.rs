//! From photos to network inputs: the whole photo resized, or the largest
//! isolated leukocyte cropped; then planar float batches on a device.

use crate::data::{ClassSet, PhotoSource, Sample};
use crate::error::Result;
use crate::stain::ColourBalance;
use burn::tensor::{Device, Int, Tensor, TensorData};
use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Smallest and largest side of a network input (larger inputs would need gigabytes per batch).
pub const INPUT_MIN_SIDE: u32 = 8;
pub const INPUT_MAX_SIDE: u32 = 1024;

/// What the network sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum InputConfig {
    /// The whole photo, resized (stretched) to `width` x `height`.
    Whole {
        width: u32,
        height: u32,
        /// See `Crop::white_balance`.
        #[serde(default)]
        white_balance: bool,
    },
    /// The largest isolated leukocyte, cropped and resized to `size` x `size`.
    Crop {
        size: u32,
        /// Context added around the leukocyte's box on each side, as a share
        /// of the box's width and height (0 = the box exactly, as the study).
        #[serde(default)]
        margin: f64,
        /// `true`: cut a square around the box so the cell keeps its shape;
        /// `false`: stretch the box to the square (the study's choice).
        #[serde(default)]
        keep_aspect: bool,
        /// `true`: scale each colour channel so that the photo's background
        /// becomes the same neutral gray ([`crate::preprocess::white_balance`]),
        /// in training and in prediction. A different lamp, camera or stain
        /// shifts every pixel's colour; without this, a network trained on one
        /// microscope's photos reads the shift as cell type.
        #[serde(default)]
        white_balance: bool,
        /// `true`: also scale each channel's optical density so that the
        /// photo's erythrocytes get the same density in every photo
        /// ([`crate::stain::ColourBalance::stain`]): smears stained longer or
        /// thicker look like the others. Needs `white_balance`.
        #[serde(default)]
        normalise_stain: bool,
        /// `true`: paint the crop outside the leukocyte's ellipse in the
        /// background colour ([`crate::preprocess::mask_context`]), so that the
        /// network sees the cell and not its smear.
        #[serde(default)]
        mask_context: bool,
    },
}

impl InputConfig {
    /// Checks ranges (sides within [`INPUT_MIN_SIDE`]-[`INPUT_MAX_SIDE`], the margin, stain
    /// normalisation only with white balance); the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let (w, h) = self.dims();
        if !(INPUT_MIN_SIDE..=INPUT_MAX_SIDE).contains(&w)
            || !(INPUT_MIN_SIDE..=INPUT_MAX_SIDE).contains(&h)
        {
            return Err(format!(
                "input size must be {INPUT_MIN_SIDE}-{INPUT_MAX_SIDE} px a side, got {w}x{h}"
            ));
        }
        if let InputConfig::Crop { margin, .. } = self {
            if !(0.0..=1.0).contains(margin) {
                return Err(format!("input.margin must be in [0, 1], got {margin}"));
            }
        }
        if self.normalise_stain() && !self.white_balance() {
            return Err(
                "input.normalise_stain needs input.white_balance = true (densities are measured \
                 against the white-balanced background)"
                    .into(),
            );
        }
        Ok(())
    }

    /// What the network sees, in words: "128x128 crops of the largest leukocyte, white-balanced".
    pub fn describe(&self) -> String {
        let (w, h) = self.dims();
        let mut s = match self {
            InputConfig::Whole { .. } => format!("whole photos resized to {w}x{h}"),
            InputConfig::Crop {
                margin,
                keep_aspect,
                ..
            } => {
                let mut s = format!("{w}x{h} crops of the largest leukocyte");
                if *margin > 0.0 {
                    s += &format!(" with {:.0}% margin", margin * 100.0);
                }
                if *keep_aspect {
                    s += ", aspect kept";
                }
                s
            }
        };
        for (on, what) in [
            (self.white_balance(), "white-balanced"),
            (self.normalise_stain(), "stain-normalised"),
            (self.mask_context(), "background masked"),
        ] {
            if on {
                s += ", ";
                s += what;
            }
        }
        s
    }

    /// (width, height) of the network input.
    pub fn dims(&self) -> (u32, u32) {
        match *self {
            InputConfig::Whole { width, height, .. } => (width, height),
            InputConfig::Crop { size, .. } => (size, size),
        }
    }

    /// Whether inputs are white-balanced against their photo's background.
    pub fn white_balance(&self) -> bool {
        match *self {
            InputConfig::Whole { white_balance, .. } | InputConfig::Crop { white_balance, .. } => {
                white_balance
            }
        }
    }

    /// Whether inputs are stain-normalised against their photo's erythrocytes.
    pub fn normalise_stain(&self) -> bool {
        match *self {
            InputConfig::Whole { .. } => false,
            InputConfig::Crop {
                normalise_stain, ..
            } => normalise_stain,
        }
    }

    /// Whether crops are masked to the leukocyte's ellipse.
    pub fn mask_context(&self) -> bool {
        match *self {
            InputConfig::Whole { .. } => false,
            InputConfig::Crop { mask_context, .. } => mask_context,
        }
    }

    /// How a leukocyte's box becomes the network input; `None` for whole photos.
    pub fn crop_config(&self) -> Option<crate::isolate::CropConfig> {
        match *self {
            InputConfig::Whole { .. } => None,
            InputConfig::Crop {
                size,
                margin,
                keep_aspect,
                ..
            } => Some(crate::isolate::CropConfig {
                size_px: size,
                margin_fraction: margin,
                keep_aspect,
                ..crate::isolate::CropConfig::default()
            }),
        }
    }
}

/// The network input for one photo, and whether a leukocyte was found in it.
pub fn network_input(photo: &RgbImage, input: &InputConfig) -> (RgbImage, bool) {
    network_input_at(photo, input, 1.0)
}

/// [`network_input`] for a photo taken at `magnification` times BCCD's (the isolation looks for
/// cells at BCCD's scale: [`crate::isolate::isolate_at`]).
pub fn network_input_at(
    photo: &RgbImage,
    input: &InputConfig,
    magnification: f32,
) -> (RgbImage, bool) {
    let (img, found) = network_input_with_box(photo, input, magnification);
    (img, found.is_some() || input.crop_config().is_none())
}

/// [`network_input_at`], with the box the input was cut at (`None` when the whole photo is the
/// input: a model of whole photos, or no leukocyte found).
pub fn network_input_with_box(
    photo: &RgbImage,
    input: &InputConfig,
    magnification: f32,
) -> (RgbImage, Option<crate::isolate::LeukocyteBox>) {
    let (mut img, found) = unbalanced_input(photo, input, magnification);
    finish_inputs(
        photo,
        input,
        std::slice::from_mut(&mut img),
        found.is_some(),
    );
    (img, found)
}

/// Every leukocyte the isolation finds in `photo` (taken at `magnification` times BCCD's) and
/// its network input, as prediction classifies them: cells in the photo's pixels, largest first.
pub fn cell_inputs(
    photo: &RgbImage,
    isolation: &crate::isolate::IsolationConfig,
    crop: &crate::isolate::CropConfig,
    input: &InputConfig,
    magnification: f32,
) -> (Vec<crate::isolate::FoundCell>, Vec<RgbImage>) {
    let cells = crate::isolate::cells_at(photo, isolation, magnification);
    let mut crops: Vec<RgbImage> = cells
        .iter()
        .map(|c| crate::isolate::crop(photo, &c.crop_box, crop))
        .collect();
    finish_inputs(photo, input, &mut crops, true);
    (cells, crops)
}

/// What every network input cut from (or resized from) `photo` gets before the network sees
/// it, in training and in prediction alike: the colour balance `input` asks for, then, for crops
/// around a found leukocyte (`cropped`), the context mask ([`mask_context`]).
pub fn finish_inputs(
    photo: &RgbImage,
    input: &InputConfig,
    images: &mut [RgbImage],
    cropped: bool,
) {
    if images.is_empty() {
        return;
    }
    let balance = ColourBalance::for_photo(photo, input.white_balance(), input.normalise_stain());
    if let Some(b) = &balance {
        for img in images.iter_mut() {
            b.apply(img);
        }
    }
    if cropped && input.mask_context() {
        let fill = match balance {
            Some(_) => [BALANCED_BACKGROUND.round() as u8; 3],
            None => photo_background(photo),
        };
        for img in images.iter_mut() {
            mask_context(img, fill);
        }
    }
}

/// Radius of the ellipse [`mask_context`] keeps, as a share of the crop's half width and half
/// height: the isolation's boxes hold the cell with 3% of room on each side, so the inscribed
/// ellipse of a round cell's box runs just outside the cell; 5% more keeps oval and
/// slightly off-centre cells whole.
pub const CONTEXT_MASK_RADIUS: f32 = 1.05;

/// Paints everything outside the crop's centred ellipse ([`CONTEXT_MASK_RADIUS`]) in `fill`
/// (the background colour): the corners of a crop show erythrocytes and other cells of the
/// smear, which tell the network about the smear (its stain, its thickness) rather than the
/// leukocyte, and a network trained on 200 photos can learn such a smear as a class.
pub fn mask_context(img: &mut RgbImage, fill: [u8; 3]) {
    let (w, h) = img.dimensions();
    let (rx, ry) = (
        w as f32 / 2.0 * CONTEXT_MASK_RADIUS,
        h as f32 / 2.0 * CONTEXT_MASK_RADIUS,
    );
    for (x, y, px) in img.enumerate_pixels_mut() {
        let dx = (x as f32 + 0.5 - w as f32 / 2.0) / rx;
        let dy = (y as f32 + 0.5 - h as f32 / 2.0) / ry;
        if dx * dx + dy * dy > 1.0 {
            px.0 = fill;
        }
    }
}

/// The isolation settings training cuts its crops with (recorded in every model file, see
/// [`crate::model::file::ModelMeta::isolation`]).
pub fn training_isolation() -> crate::isolate::IsolationConfig {
    crate::isolate::IsolationConfig::default()
}

fn unbalanced_input(
    photo: &RgbImage,
    input: &InputConfig,
    magnification: f32,
) -> (RgbImage, Option<crate::isolate::LeukocyteBox>) {
    let (w, h) = input.dims();
    match input.crop_config() {
        None => (resize(photo, w, h), None),
        Some(crop) => {
            let cfg = training_isolation();
            let boxes = crate::isolate::isolate_at(photo, &cfg, magnification);
            match boxes.first() {
                Some(b) => (crate::isolate::crop(photo, b, &crop), Some(*b)),
                // Nothing found: the whole photo, as the study's pipeline does.
                None => (resize(photo, w, h), None),
            }
        }
    }
}

pub use crate::stain::{photo_background, BALANCED_BACKGROUND};

/// Scales each channel of `img` (a crop of, or the whole of, a photo whose
/// background colour is `background`) so that the background becomes neutral
/// gray at [`BALANCED_BACKGROUND`] ([`ColourBalance::white`]).
pub fn white_balance(img: &mut RgbImage, background: [u8; 3]) {
    ColourBalance::white(background).apply(img);
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
    ColourBalance::gains(cast.0).apply(img);
}

/// A change of magnification by `factor`, as another objective, camera adapter or sensor would
/// make it: the cells appear `factor` times as large in a photo of the same size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Magnification(pub f32);

impl Magnification {
    /// Factors outside this range leave too few pixels of, or too little room around, a cell.
    pub const RANGE: std::ops::RangeInclusive<f32> = 0.25..=4.0;
}

impl std::str::FromStr for Magnification {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().parse::<f32>() {
            Ok(f) if Self::RANGE.contains(&f) => Ok(Magnification(f)),
            _ => Err(format!(
                "'{s}': expected a factor from {} to {} (e.g. 0.5: cells half as large)",
                Self::RANGE.start(),
                Self::RANGE.end()
            )),
        }
    }
}

/// `photo` as a microscope with `m` times BCCD's magnification would show the same smear, in a
/// photo of the same size. Above 1, a window `1 / m` of the photo's size around `centre`
/// (clamped inside the photo) is enlarged to the full size. Below 1, the photo is shrunk into
/// the middle of a frame of its own background colour ([`photo_background`]): the cells keep
/// their neighbours and the frame adds nothing that could be taken for a cell. (Mirroring the
/// photo outwards instead would double every cell cut by the photo's edge into one
/// symmetric blob.)
pub fn magnify(photo: &RgbImage, m: Magnification, centre: (f32, f32)) -> RgbImage {
    let (w, h) = photo.dimensions();
    if w == 0 || h == 0 || m.0 == 1.0 {
        return photo.clone();
    }
    if m.0 > 1.0 {
        let (cw, ch) = (
            (w as f32 / m.0).round().max(1.0),
            (h as f32 / m.0).round().max(1.0),
        );
        let x0 = (centre.0 - cw / 2.0).clamp(0.0, w as f32 - cw) as u32;
        let y0 = (centre.1 - ch / 2.0).clamp(0.0, h as f32 - ch) as u32;
        let window = image::imageops::crop_imm(photo, x0, y0, cw as u32, ch as u32).to_image();
        return resize(&window, w, h);
    }
    let sw = ((w as f32 * m.0).round() as u32).max(1);
    let sh = ((h as f32 * m.0).round() as u32).max(1);
    let small = resize(photo, sw, sh);
    let mut frame = RgbImage::from_pixel(w, h, image::Rgb(photo_background(photo)));
    image::imageops::replace(
        &mut frame,
        &small,
        i64::from((w - sw) / 2),
        i64::from((h - sh) / 2),
    );
    frame
}

/// A Gaussian blur of this standard deviation in photo pixels: a photo slightly out of focus,
/// or taken through a weaker objective or a cheaper camera.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Blur(pub f32);

impl std::str::FromStr for Blur {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().parse::<f32>() {
            Ok(sigma) if sigma > 0.0 && sigma <= 20.0 => Ok(Blur(sigma)),
            _ => Err(format!(
                "'{s}': expected a standard deviation in pixels, above 0 and at most 20 (e.g. 2)"
            )),
        }
    }
}

/// What is done to every photo before anything else, to see how a model would fare on the
/// same smears under another microscope ([`prepare_changed`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhotoChange {
    pub cast: Option<ColourCast>,
    pub magnification: Option<Magnification>,
    /// Tell the isolation `magnification`, as `leuko predict --magnification` does
    /// ([`network_input_at`]); otherwise it assumes BCCD's.
    pub compensate: bool,
    pub blur: Option<Blur>,
    /// Also measure each (changed) photo's look ([`crate::familiar::photo_look`]), for the
    /// unfamiliar-photo review flag of `leuko evaluate`.
    pub measure_look: bool,
}

/// Where a network input's cell lies: its box in a `width x height` photo taken at
/// `magnification` times BCCD's (as the review rules judge boxes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellFrame {
    pub bbox: crate::isolate::LeukocyteBox,
    pub width: u32,
    pub height: u32,
    pub magnification: f32,
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
    /// Per input, the cell's box (`None` where the whole photo was used).
    pub frames: Vec<Option<CellFrame>>,
    /// Per input, the photo's look when asked for ([`PhotoChange::measure_look`]), else empty.
    pub looks: Vec<Vec<Option<f32>>>,
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
    dir: &PhotoSource,
    samples: &[Sample],
    classes: &ClassSet,
    input: &InputConfig,
) -> Result<InputSet> {
    prepare_changed(dir, samples, classes, input, PhotoChange::default())
}

/// [`prepare`], with every photo first changed as `change` says: a colour cast
/// ([`colour_cast`]), then a magnification ([`magnify`], enlarging around the largest
/// leukocyte box of the photo's annotation, or its centre without one), then a blur.
pub fn prepare_changed(
    dir: &PhotoSource,
    samples: &[Sample],
    classes: &ClassSet,
    input: &InputConfig,
    change: PhotoChange,
) -> Result<InputSet> {
    type Prepared = (u32, usize, RgbImage, Option<CellFrame>, Vec<Option<f32>>);
    let prepared: Vec<Prepared> = samples
        .par_iter()
        .map(|s| {
            let mut photo = crate::imageio::load_rgb(&dir.photo_path(s.image_id))?;
            if let Some(cast) = change.cast {
                colour_cast(&mut photo, cast);
            }
            if let Some(m) = change.magnification {
                let centre = leukocyte_centre(dir, s.image_id)
                    .unwrap_or((photo.width() as f32 / 2.0, photo.height() as f32 / 2.0));
                photo = magnify(&photo, m, centre);
            }
            if let Some(Blur(sigma)) = change.blur {
                photo = image::imageops::blur(&photo, sigma);
            }
            let told = match change.magnification {
                Some(Magnification(m)) if change.compensate => m,
                _ => 1.0,
            };
            let (img, frame) = match (dir.cell_box(s.image_id), input.crop_config()) {
                // The label says where the cell is: cut it there, as training cuts isolated ones.
                (Some(b), Some(crop)) if change.magnification.is_none() => {
                    let bx = crate::isolate::LeukocyteBox {
                        x_min: b.x_min,
                        y_min: b.y_min,
                        x_max: b.x_max,
                        y_max: b.y_max,
                        area_px: (b.x_max - b.x_min) as u64 * (b.y_max - b.y_min) as u64,
                    };
                    let mut img = crate::isolate::crop(&photo, &bx, &crop);
                    finish_inputs(&photo, input, std::slice::from_mut(&mut img), true);
                    (img, Some(bx))
                }
                _ => network_input_with_box(&photo, input, told),
            };
            let frame = frame.map(|bbox| CellFrame {
                bbox,
                width: photo.width(),
                height: photo.height(),
                magnification: told,
            });
            let look = if change.measure_look {
                crate::familiar::photo_look(&photo)
            } else {
                Vec::new()
            };
            let label = classes.index_of(s.label).ok_or_else(|| {
                crate::LeukoError::Invalid(format!(
                    "{}: class {} is not in the class set",
                    dir.sample_name(s.image_id),
                    s.label
                ))
            })?;
            Ok((s.image_id, label, img, frame, look))
        })
        .collect::<Result<_>>()?;
    let mut set = InputSet {
        ids: Vec::with_capacity(prepared.len()),
        labels: Vec::with_capacity(prepared.len()),
        images: Vec::with_capacity(prepared.len()),
        not_found: Vec::new(),
        frames: Vec::with_capacity(prepared.len()),
        looks: Vec::with_capacity(prepared.len()),
    };
    let whole_photos = input.crop_config().is_none();
    for (id, label, img, frame, look) in prepared {
        if frame.is_none() && !whole_photos {
            set.not_found.push(id);
        }
        set.ids.push(id);
        set.labels.push(label);
        set.images.push(img);
        set.frames.push(frame);
        set.looks.push(look);
    }
    Ok(set)
}

/// Centre of the largest leukocyte box in the photo's VOC annotation, if it has one.
fn leukocyte_centre(source: &PhotoSource, image_id: u32) -> Option<(f32, f32)> {
    if let Some(b) = source.cell_box(image_id) {
        return Some((
            (b.x_min + b.x_max) as f32 / 2.0,
            (b.y_min + b.y_max) as f32 / 2.0,
        ));
    }
    let dir = source.bccd()?;
    let ann = crate::data::voc::read_annotation(&dir.annotation_path(image_id)).ok()?;
    let b = ann
        .wbc_boxes()
        .into_iter()
        .max_by_key(|b| (b.x_max - b.x_min).max(0) * (b.y_max - b.y_min).max(0))?;
    Some((
        (b.x_min + b.x_max) as f32 / 2.0,
        (b.y_min + b.y_max) as f32 / 2.0,
    ))
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
    fn the_context_mask_keeps_the_centred_ellipse_and_paints_the_corners() {
        let mut img = RgbImage::from_pixel(40, 20, Rgb([10, 20, 30]));
        mask_context(&mut img, [204, 204, 204]);
        // Centre and the middle of every side are inside; the corners are not.
        for (x, y) in [(20, 10), (0, 10), (39, 10), (20, 0), (20, 19)] {
            assert_eq!(img.get_pixel(x, y).0, [10, 20, 30], "({x}, {y})");
        }
        for (x, y) in [(0, 0), (39, 0), (0, 19), (39, 19), (4, 2)] {
            assert_eq!(img.get_pixel(x, y).0, [204, 204, 204], "({x}, {y})");
        }
        // Outside a circle of radius 1.05 half-sides: 1 - pi * 1.05^2 / 4 of a square's pixels.
        let painted = img.pixels().filter(|p| p.0 == [204; 3]).count() as f32 / 800.0;
        assert!((painted - (1.0 - std::f32::consts::PI * 1.05 * 1.05 / 4.0)).abs() < 0.03);
    }

    #[test]
    fn inputs_are_masked_only_when_asked_and_only_when_cropped() {
        let photo = RgbImage::from_pixel(64, 48, Rgb([200, 200, 200]));
        let input = |mask_context| InputConfig::Crop {
            size: 16,
            margin: 0.0,
            keep_aspect: false,
            white_balance: true,
            normalise_stain: false,
            mask_context,
        };
        let crop = || vec![RgbImage::from_pixel(16, 16, Rgb([50, 60, 70]))];
        let mut kept = crop();
        finish_inputs(&photo, &input(false), &mut kept, true);
        let mut whole = crop();
        finish_inputs(&photo, &input(true), &mut whole, false);
        assert_eq!(kept, whole, "white balance only");
        let mut masked = crop();
        finish_inputs(&photo, &input(true), &mut masked, true);
        assert_eq!(masked[0].get_pixel(0, 0).0, [204, 204, 204]);
        assert_eq!(masked[0].get_pixel(8, 8), kept[0].get_pixel(8, 8));
    }

    #[test]
    fn magnification_enlarges_around_the_centre_or_frames_a_shrunk_photo() {
        // A 40x20 photo: left half dark, right half light, one red pixel block at (30, 10).
        let photo = RgbImage::from_fn(40, 20, |x, y| {
            if (28..32).contains(&x) && (8..12).contains(&y) {
                Rgb([255, 0, 0])
            } else if x < 20 {
                Rgb([50, 50, 50])
            } else {
                Rgb([200, 200, 200])
            }
        });
        let same = magnify(&photo, Magnification(1.0), (0.0, 0.0));
        assert_eq!(same, photo);
        // 2x around the red block: a 20x10 window from (20, 5), all light or red.
        let big = magnify(&photo, Magnification(2.0), (30.0, 10.0));
        assert_eq!(big.dimensions(), (40, 20));
        assert!(
            big.pixels().all(|p| p.0[0] >= 190),
            "no dark pixel in the window"
        );
        assert_eq!(
            big.get_pixel(20, 10).0,
            [255, 0, 0],
            "the block is in the middle"
        );
        // A centre at the edge is clamped: the window stays inside the photo.
        let edge = magnify(&photo, Magnification(2.0), (0.0, 0.0));
        assert_eq!(edge.get_pixel(0, 0).0, [50, 50, 50]);
        // 0.5x: the shrunk photo in the middle of a frame of the background (the light half).
        let small = magnify(&photo, Magnification(0.5), (0.0, 0.0));
        assert_eq!(small.dimensions(), (40, 20));
        let bg = Rgb(photo_background(&photo));
        assert_eq!(bg.0, [200, 200, 200]);
        let reddish: Vec<(u32, u32)> = small
            .enumerate_pixels()
            .filter(|(_, _, p)| i32::from(p.0[0]) > i32::from(p.0[1]) + 60)
            .map(|(x, y, _)| (x, y))
            .collect();
        // The block sits at x 14-15, y 4-5 of the 20x10 shrunk photo, placed from (10, 5).
        assert!(!reddish.is_empty());
        assert!(reddish
            .iter()
            .all(|&(x, y)| (23..27).contains(&x) && (8..12).contains(&y)));
        for (x, y) in [(0, 0), (9, 10), (39, 19), (20, 4), (20, 15)] {
            assert_eq!(*small.get_pixel(x, y), bg, "frame at ({x}, {y})");
        }
        assert_eq!(
            small.get_pixel(11, 10).0,
            [50, 50, 50],
            "dark half of the shrunk photo"
        );
        assert!("0.5".parse::<Magnification>().is_ok());
        assert_eq!("2".parse::<Blur>(), Ok(Blur(2.0)));
        for bad in ["0", "-1", "21", "nan", ""] {
            assert!(bad.parse::<Blur>().is_err(), "{bad}");
        }
        for bad in ["0", "-1", "5", "nan", "x", ""] {
            assert!(bad.parse::<Magnification>().is_err(), "{bad}");
        }
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
            normalise_stain: false,
            mask_context: false,
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
