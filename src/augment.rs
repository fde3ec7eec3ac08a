//! On-the-fly training augmentation: random flips, rotation, shear, brightness and
//! contrast, as the Keras twin does (RandomFlip, RandomRotation, RandomShear with
//! reflect fill, RandomBrightness, RandomContrast, then clip to [0, 1]).
//! Every draw comes from the generator passed in, so a run is reproducible from its seed.

use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Strengths of each random transformation; zero switches one off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    #[serde(default = "yes")]
    pub flip_horizontal: bool,
    #[serde(default = "yes")]
    pub flip_vertical: bool,
    /// Maximum rotation either way, in degrees (Keras RandomRotation(0.25) = 90°).
    #[serde(default)]
    pub rotation_deg: f32,
    /// Maximum shear factor along each axis.
    #[serde(default)]
    pub shear: f32,
    /// Maximum brightness shift, in units of the [0, 1] intensity range.
    #[serde(default)]
    pub brightness: f32,
    /// Maximum relative contrast change (factor drawn from [1 - c, 1 + c]).
    #[serde(default)]
    pub contrast: f32,
    /// Maximum relative change of each colour channel's gain, drawn per channel
    /// from [1 - c, 1 + c]: the shifts in stain and white balance between
    /// smears and microscopes. 0 (default) draws nothing, so configs without
    /// it keep their random stream.
    #[serde(default)]
    pub colour: f32,
    /// Mixup (Zhang et al. 2018): each training batch becomes `l x + (1 - l) x'`
    /// with `x'` the same batch in another order, `l ~ Beta(a, a)` (folded to
    /// `l >= 0.5` so the first label dominates) and the loss mixed likewise.
    /// This is `a`; 0 (default) = off and draws nothing.
    #[serde(default, skip_serializing_if = "is_off")]
    pub mixup: f32,
    /// Stain jitter in haematoxylin-eosin-DAB optical density space (Tellez et al.
    /// 2018, "HED" augmentation): each stain's density is scaled by a factor from
    /// [1 - s, 1 + s] and shifted by up to +-s (optical density units), the differences between one lab's
    /// stain batches, smear thickness and staining times. This is `s`.
    #[serde(default, skip_serializing_if = "is_off")]
    pub stain: f32,
    /// Maximum hue rotation either way, in degrees, about the gray axis.
    #[serde(default, skip_serializing_if = "is_off")]
    pub hue_deg: f32,
    /// Maximum relative saturation change (factor from [1 - s, 1 + s]).
    #[serde(default, skip_serializing_if = "is_off")]
    pub saturation: f32,
    /// Maximum relative zoom either way (factor from [1 - z, 1 + z]): cells a
    /// little larger or smaller in their crop than the isolation makes them.
    #[serde(default, skip_serializing_if = "is_off")]
    pub zoom: f32,
    /// Maximum Gaussian blur sigma, in crop pixels (drawn from [0, b]): focus, and
    /// small cells enlarged to the crop size from fewer pixels.
    #[serde(default, skip_serializing_if = "is_off")]
    pub blur: f32,
    /// Maximum standard deviation of per-pixel Gaussian noise, in units of the
    /// [0, 1] range (drawn from [0, n]): camera noise.
    #[serde(default, skip_serializing_if = "is_off")]
    pub noise: f32,
    /// Lowest JPEG quality: each copy is JPEG-compressed at a quality drawn from
    /// [q, 95] (the photos of many microscopes are JPEGs). 0 = off.
    #[serde(default, skip_serializing_if = "is_zero_quality")]
    pub jpeg_quality: u8,
}

fn is_zero_quality(v: &u8) -> bool {
    *v == 0
}

fn is_off(v: &f32) -> bool {
    *v == 0.0
}

fn yes() -> bool {
    true
}

impl AugmentConfig {
    /// Every transformation off (each option's neutral value).
    pub fn off() -> AugmentConfig {
        AugmentConfig {
            flip_horizontal: false,
            flip_vertical: false,
            rotation_deg: 0.0,
            shear: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            colour: 0.0,
            mixup: 0.0,
            stain: 0.0,
            hue_deg: 0.0,
            saturation: 0.0,
            zoom: 0.0,
            blur: 0.0,
            noise: 0.0,
            jpeg_quality: 0,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            ("rotation_deg", self.rotation_deg, 0.0, 180.0),
            ("shear", self.shear, 0.0, 1.0),
            ("brightness", self.brightness, 0.0, 1.0),
            ("contrast", self.contrast, 0.0, 1.0),
            ("colour", self.colour, 0.0, 1.0),
            ("mixup", self.mixup, 0.0, 10.0),
            ("stain", self.stain, 0.0, 1.0),
            ("hue_deg", self.hue_deg, 0.0, 180.0),
            ("saturation", self.saturation, 0.0, 1.0),
            ("zoom", self.zoom, 0.0, 0.9),
            ("blur", self.blur, 0.0, 10.0),
            ("noise", self.noise, 0.0, 0.5),
            ("jpeg_quality", self.jpeg_quality as f32, 0.0, 95.0),
        ];
        for (name, v, lo, hi) in checks {
            if !(lo..=hi).contains(&v) {
                return Err(format!("augment.{name} must be in [{lo}, {hi}], got {v}"));
            }
        }
        Ok(())
    }
}

/// How one training batch is mixed: item `i` becomes
/// `weight * x[i] + (1 - weight) * x[partner[i]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixup {
    pub weight: f32,
    pub partner: Vec<usize>,
}

impl Mixup {
    /// Draws the weight from Beta(alpha, alpha), folded into [0.5, 1], and a
    /// random partner for each of `n` items.
    pub fn draw<R: Rng>(n: usize, alpha: f32, rng: &mut R) -> Mixup {
        let a = sample_gamma(alpha as f64, rng);
        let b = sample_gamma(alpha as f64, rng);
        let l = if a + b > 0.0 { a / (a + b) } else { 0.5 };
        let mut partner: Vec<usize> = (0..n).collect();
        rand::seq::SliceRandom::shuffle(partner.as_mut_slice(), rng);
        Mixup {
            weight: l.max(1.0 - l) as f32,
            partner,
        }
    }

    /// Mixes a batch of planar images (`per_image` values each) in place.
    pub fn apply(&self, data: &mut [f32], per_image: usize) {
        let original = data.to_vec();
        let (l, r) = (self.weight, 1.0 - self.weight);
        for (i, out) in data.chunks_mut(per_image).enumerate() {
            let other = &original[self.partner[i] * per_image..][..per_image];
            for (o, &x) in out.iter_mut().zip(other) {
                *o = l * *o + r * x;
            }
        }
    }
}

/// Gamma(shape, 1) by Marsaglia and Tsang (2000), with the `U^(1/shape)` boost
/// for shapes below 1 (mixup's usual alphas are 0.1-0.4).
fn sample_gamma<R: Rng>(shape: f64, rng: &mut R) -> f64 {
    if shape < 1.0 {
        let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        return sample_gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        // Standard normal by Box-Muller.
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random();
        let x = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// Reflects an index into [0, n): … 2 1 0 | 0 1 2 … n-1 | n-1 n-2 …
fn reflect(i: i64, n: i64) -> usize {
    let period = 2 * n;
    let m = i.rem_euclid(period);
    (if m >= n { period - 1 - m } else { m }) as usize
}

/// Writes one augmented copy of `img` as planar RGB floats in [0, 1] into `out`
/// (`3 * width * height` values, channel-major, as the network reads them).
pub fn augment_into<R: Rng>(img: &RgbImage, cfg: &AugmentConfig, rng: &mut R, out: &mut [f32]) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    debug_assert_eq!(out.len(), 3 * w * h);
    let fx = if cfg.flip_horizontal && rng.random_bool(0.5) {
        -1.0
    } else {
        1.0
    };
    let fy = if cfg.flip_vertical && rng.random_bool(0.5) {
        -1.0
    } else {
        1.0
    };
    let theta = if cfg.rotation_deg > 0.0 {
        rng.random_range(-cfg.rotation_deg..=cfg.rotation_deg)
            .to_radians()
    } else {
        0.0
    };
    let (sx, sy) = if cfg.shear > 0.0 {
        (
            rng.random_range(-cfg.shear..=cfg.shear),
            rng.random_range(-cfg.shear..=cfg.shear),
        )
    } else {
        (0.0, 0.0)
    };
    let delta = if cfg.brightness > 0.0 {
        rng.random_range(-cfg.brightness..=cfg.brightness)
    } else {
        0.0
    };
    let factor = if cfg.contrast > 0.0 {
        rng.random_range(1.0 - cfg.contrast..=1.0 + cfg.contrast)
    } else {
        1.0
    };
    let gains = if cfg.colour > 0.0 {
        [0; 3].map(|_| rng.random_range(1.0 - cfg.colour..=1.0 + cfg.colour))
    } else {
        [1.0; 3]
    };
    // The options below draw only when on, so that configs without them keep
    // their random stream (and so their trained models).
    let zoom = if cfg.zoom > 0.0 {
        rng.random_range(1.0 - cfg.zoom..=1.0 + cfg.zoom)
    } else {
        1.0
    };

    // Forward map M = rotation · shear · flip about the centre; sample through M⁻¹.
    let (c, s) = (theta.cos(), theta.sin());
    let m = [
        [c * fx + (-s) * sy * fx, (c * sx - s) * fy],
        [(s + c * sy) * fx, (s * sx + c) * fy],
    ];
    let m = m.map(|row| row.map(|v| v * zoom));
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    let inv = if det.abs() > 1e-6 {
        [
            [m[1][1] / det, -m[0][1] / det],
            [-m[1][0] / det, m[0][0] / det],
        ]
    } else {
        [[1.0, 0.0], [0.0, 1.0]]
    };
    let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let raw = img.as_raw();
    let plane = w * h;
    for y in 0..h {
        let dy = y as f32 - cy;
        for x in 0..w {
            let dx = x as f32 - cx;
            let srcx = inv[0][0] * dx + inv[0][1] * dy + cx;
            let srcy = inv[1][0] * dx + inv[1][1] * dy + cy;
            let x0 = srcx.floor();
            let y0 = srcy.floor();
            let (ax, ay) = (srcx - x0, srcy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let xs = [reflect(x0, w as i64), reflect(x0 + 1, w as i64)];
            let ys = [reflect(y0, h as i64), reflect(y0 + 1, h as i64)];
            for ch in 0..3 {
                let p = |xx: usize, yy: usize| raw[(yy * w + xx) * 3 + ch] as f32;
                let top = p(xs[0], ys[0]) * (1.0 - ax) + p(xs[1], ys[0]) * ax;
                let bottom = p(xs[0], ys[1]) * (1.0 - ax) + p(xs[1], ys[1]) * ax;
                out[ch * plane + y * w + x] = (top * (1.0 - ay) + bottom * ay) / 255.0;
            }
        }
    }
    for (ch, gain) in gains.into_iter().enumerate() {
        let px = &mut out[ch * plane..(ch + 1) * plane];
        let mean = px.iter().sum::<f32>() / plane as f32;
        for v in px.iter_mut() {
            *v = (((*v + delta - mean) * factor + mean) * gain).clamp(0.0, 1.0);
        }
    }
    photometric(cfg, rng, out, w, h);
}

/// The stain, hue, saturation, blur, noise and JPEG transformations, in the
/// order a photo meets them: the smear's stain, the camera's colour rendering,
/// the optics, the sensor, the file.
fn photometric<R: Rng>(cfg: &AugmentConfig, rng: &mut R, out: &mut [f32], w: usize, h: usize) {
    let plane = w * h;
    if cfg.stain > 0.0 {
        let s = cfg.stain;
        let scale = [0; 3].map(|_| rng.random_range(1.0 - s..=1.0 + s));
        let shift = [0; 3].map(|_| rng.random_range(-s..=s));
        stain_jitter(out, plane, scale, shift);
    }
    if cfg.hue_deg > 0.0 || cfg.saturation > 0.0 {
        let hue = if cfg.hue_deg > 0.0 {
            rng.random_range(-cfg.hue_deg..=cfg.hue_deg).to_radians()
        } else {
            0.0
        };
        let sat = if cfg.saturation > 0.0 {
            rng.random_range(1.0 - cfg.saturation..=1.0 + cfg.saturation)
        } else {
            1.0
        };
        let m = hue_saturation_matrix(hue, sat);
        for i in 0..plane {
            let v = [out[i], out[plane + i], out[2 * plane + i]];
            for (ch, row) in m.iter().enumerate() {
                out[ch * plane + i] =
                    (row[0] * v[0] + row[1] * v[1] + row[2] * v[2]).clamp(0.0, 1.0);
            }
        }
    }
    if cfg.blur > 0.0 {
        let sigma = rng.random_range(0.0..=cfg.blur);
        if sigma >= 0.3 {
            for ch in out.chunks_mut(plane) {
                gaussian_blur_plane(ch, w, h, sigma);
            }
        }
    }
    if cfg.noise > 0.0 {
        let sd = rng.random_range(0.0..=cfg.noise);
        for v in out.iter_mut() {
            *v = (*v + sd * standard_normal(rng)).clamp(0.0, 1.0);
        }
    }
    if cfg.jpeg_quality > 0 {
        let q = rng.random_range(cfg.jpeg_quality.min(95)..=95);
        jpeg_round_trip(out, w, h, q);
    }
}

/// Ruifrok and Johnston's (2001) stain vectors in RGB optical density, one row per
/// stain (haematoxylin, eosin, DAB), as scikit-image's `rgb_from_hed`.
const RGB_FROM_HED: [[f32; 3]; 3] = [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]];

/// Scales and shifts each stain's density: `c' = c * scale + shift`.
fn stain_jitter(out: &mut [f32], plane: usize, scale: [f32; 3], shift: [f32; 3]) {
    let inv = invert3(RGB_FROM_HED);
    // Optical densities of pure white are 0; 1/255 keeps black pixels finite.
    let floor = 1.0 / 255.0f32;
    for i in 0..plane {
        let od = [0, 1, 2].map(|ch| -out[ch * plane + i].max(floor).log10());
        // od (row vector) = c · RGB_FROM_HED, so c = od · inv.
        let c = [0, 1, 2].map(|k| {
            let v = od[0] * inv[0][k] + od[1] * inv[1][k] + od[2] * inv[2][k];
            v * scale[k] + shift[k]
        });
        for ch in 0..3 {
            let d = c[0] * RGB_FROM_HED[0][ch]
                + c[1] * RGB_FROM_HED[1][ch]
                + c[2] * RGB_FROM_HED[2][ch];
            out[ch * plane + i] = 10f32.powf(-d.max(0.0)).clamp(0.0, 1.0);
        }
    }
}

fn invert3(m: [[f32; 3]; 3]) -> [[f32; 3]; 3] {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let c =
        |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    [
        [c(1, 1, 2, 2), -c(0, 1, 2, 2), c(0, 1, 1, 2)],
        [-c(1, 0, 2, 2), c(0, 0, 2, 2), -c(0, 0, 1, 2)],
        [c(1, 0, 2, 1), -c(0, 0, 2, 1), c(0, 0, 1, 1)],
    ]
    .map(|row| row.map(|v| v / det))
}

/// The RGB matrix that rotates hue by `angle` radians about the gray axis and
/// scales saturation (the distance from it) by `sat`; gray stays gray.
fn hue_saturation_matrix(angle: f32, sat: f32) -> [[f32; 3]; 3] {
    // Rodrigues' rotation about the unit vector (1, 1, 1) / sqrt(3).
    let (c, s) = (angle.cos(), angle.sin());
    let k = 1.0 / 3.0;
    let r = 3f32.sqrt().recip();
    let a = c + (1.0 - c) * k;
    let b = (1.0 - c) * k - r * s;
    let d = (1.0 - c) * k + r * s;
    let rot = [[a, b, d], [d, a, b], [b, d, a]];
    // Saturation: gray + sat * (v - gray), gray the mean of the channels.
    let mut m = [[0f32; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = sat * rot[i][j] + (1.0 - sat) * k;
        }
    }
    m
}

fn gaussian_blur_plane(px: &mut [f32], w: usize, h: usize, sigma: f32) {
    let radius = (3.0 * sigma).ceil() as i64;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let mut tmp = vec![0f32; px.len()];
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0.0;
            for (k, &kv) in kernel.iter().enumerate() {
                let xx = reflect(x as i64 + k as i64 - radius, w as i64);
                acc += kv * px[y * w + xx];
            }
            tmp[y * w + x] = acc;
        }
    }
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0.0;
            for (k, &kv) in kernel.iter().enumerate() {
                let yy = reflect(y as i64 + k as i64 - radius, h as i64);
                acc += kv * tmp[yy * w + x];
            }
            px[y * w + x] = acc;
        }
    }
}

fn standard_normal<R: Rng>(rng: &mut R) -> f32 {
    let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Compresses the planar image as a JPEG of quality `q` and reads it back.
fn jpeg_round_trip(out: &mut [f32], w: usize, h: usize, q: u8) {
    let img = planar_to_image(out, w as u32, h as u32);
    let mut bytes = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, q);
    if img.write_with_encoder(encoder).is_err() {
        return;
    }
    if let Ok(decoded) = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg) {
        let rgb = decoded.to_rgb8();
        if rgb.dimensions() == (w as u32, h as u32) {
            plain_into(&rgb, out);
        }
    }
}

/// Planar RGB floats in [0, 1] without augmentation.
pub fn plain_into(img: &RgbImage, out: &mut [f32]) {
    let plane = (img.width() * img.height()) as usize;
    for (i, p) in img.pixels().enumerate() {
        for ch in 0..3 {
            out[ch * plane + i] = p.0[ch] as f32 / 255.0;
        }
    }
}

/// Planar floats back to an image (for pictures of augmented examples).
pub fn planar_to_image(data: &[f32], width: u32, height: u32) -> RgbImage {
    let plane = (width * height) as usize;
    RgbImage::from_fn(width, height, |x, y| {
        let i = (y * width + x) as usize;
        image::Rgb(
            [0, 1, 2].map(|ch| (data[ch * plane + i] * 255.0).round().clamp(0.0, 255.0) as u8),
        )
    })
}

/// A grid of `cols` augmented copies per row, one row per input image.
pub fn augmented_grid<R: Rng>(
    images: &[&RgbImage],
    cfg: &AugmentConfig,
    cols: usize,
    rng: &mut R,
) -> RgbImage {
    let (w, h) = images
        .first()
        .map(|i| (i.width(), i.height()))
        .unwrap_or((1, 1));
    let gap = 4;
    let cols_total = cols as u32 + 1;
    let mut grid = RgbImage::from_pixel(
        cols_total * (w + gap) + gap,
        images.len() as u32 * (h + gap) + gap,
        image::Rgb([255, 255, 255]),
    );
    let mut buf = vec![0f32; (3 * w * h) as usize];
    for (r, img) in images.iter().enumerate() {
        for c in 0..cols_total {
            let tile = if c == 0 {
                (*img).clone()
            } else {
                augment_into(img, cfg, rng, &mut buf);
                planar_to_image(&buf, w, h)
            };
            image::imageops::replace(
                &mut grid,
                &tile,
                (gap + c * (w + gap)) as i64,
                (gap + r as u32 * (h + gap)) as i64,
            );
        }
    }
    grid
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn gradient() -> RgbImage {
        RgbImage::from_fn(8, 6, |x, y| {
            image::Rgb([(x * 30) as u8, (y * 40) as u8, 100])
        })
    }

    #[test]
    fn identity_settings_reproduce_the_image() {
        let img = gradient();
        let cfg = AugmentConfig {
            flip_horizontal: false,
            flip_vertical: false,
            rotation_deg: 0.0,
            shear: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            ..AugmentConfig::off()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut a = vec![0f32; 3 * 48];
        let mut b = vec![0f32; 3 * 48];
        augment_into(&img, &cfg, &mut rng, &mut a);
        plain_into(&img, &mut b);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5);
        }
    }

    #[test]
    fn outputs_stay_in_range_and_are_seeded() {
        let img = gradient();
        let cfg = AugmentConfig {
            flip_horizontal: true,
            flip_vertical: true,
            rotation_deg: 90.0,
            shear: 0.15,
            brightness: 0.15,
            contrast: 0.2,
            colour: 0.1,
            mixup: 0.0,
            ..AugmentConfig::off()
        };
        let run = |seed| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut out = vec![0f32; 3 * 48];
            augment_into(&img, &cfg, &mut rng, &mut out);
            out
        };
        let a = run(3);
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(a, run(3));
        assert_ne!(a, run(4));
    }

    #[test]
    fn colour_gain_changes_channels_independently() {
        let img = RgbImage::from_pixel(8, 6, image::Rgb([128, 128, 128]));
        let cfg = AugmentConfig {
            flip_horizontal: false,
            flip_vertical: false,
            rotation_deg: 0.0,
            shear: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            colour: 0.2,
            mixup: 0.0,
            ..AugmentConfig::off()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut out = vec![0f32; 3 * 48];
        augment_into(&img, &cfg, &mut rng, &mut out);
        let means: Vec<f32> = out.chunks(48).map(|c| c[0]).collect();
        for (ch, m) in means.iter().enumerate() {
            // Each channel is a uniform plane scaled by a gain in [0.8, 1.2].
            assert!(out[ch * 48..(ch + 1) * 48].iter().all(|v| v == m));
            assert!(
                (0.8 * 128.0 / 255.0..=1.2 * 128.0 / 255.0).contains(m),
                "{m}"
            );
        }
        assert!(means[0] != means[1] || means[1] != means[2]);
    }

    #[test]
    fn reflect_mirrors_at_the_edges() {
        let idx: Vec<usize> = (-3..8).map(|i| reflect(i, 4)).collect();
        assert_eq!(idx, vec![2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0]);
    }

    #[test]
    fn mixup_weights_follow_the_folded_beta_distribution() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for alpha in [0.2f32, 1.0, 4.0] {
            let n = 20_000;
            let w: Vec<f64> = (0..n)
                .map(|_| Mixup::draw(1, alpha, &mut rng).weight as f64)
                .collect();
            assert!(w.iter().all(|v| (0.5..=1.0).contains(v)));
            // Beta(a, a) has variance 1 / (4 (2a + 1)) around 0.5; folding keeps the
            // squared distance from 0.5.
            let var = w.iter().map(|v| (v - 0.5).powi(2)).sum::<f64>() / n as f64;
            let expected = 1.0 / (4.0 * (2.0 * alpha as f64 + 1.0));
            assert!(
                (var - expected).abs() < 0.05 * expected,
                "a={alpha}: {var} vs {expected}"
            );
        }
    }

    #[test]
    fn mixup_blends_each_image_with_its_partner() {
        let mix = Mixup {
            weight: 0.75,
            partner: vec![1, 2, 0],
        };
        let mut data = vec![0.0, 0.0, 1.0, 1.0, 0.4, 0.8];
        mix.apply(&mut data, 2);
        let want = [0.25, 0.25, 0.85, 0.95, 0.3, 0.6];
        for (a, b) in data.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{data:?}");
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let m = Mixup::draw(10, 0.4, &mut rng);
        let mut p = m.partner.clone();
        p.sort();
        assert_eq!(p, (0..10).collect::<Vec<_>>());
    }

    fn colourful() -> RgbImage {
        RgbImage::from_fn(24, 20, |x, y| {
            image::Rgb([
                (40 + x * 8) as u8,
                (30 + y * 9) as u8,
                (200 - x * 3 - y * 2) as u8,
            ])
        })
    }

    #[test]
    fn stain_jitter_at_unit_scale_and_no_shift_changes_nothing() {
        let img = colourful();
        let mut a = vec![0f32; 3 * 24 * 20];
        plain_into(&img, &mut a);
        let before = a.clone();
        stain_jitter(&mut a, 24 * 20, [1.0; 3], [0.0; 3]);
        for (x, y) in a.iter().zip(&before) {
            assert!((x - y).abs() < 2e-3, "{x} vs {y}");
        }
        // 0.2 more haematoxylin adds 0.2 times its stain vector to every pixel's optical
        // density: red and green darken more than blue.
        let mut h = before.clone();
        stain_jitter(&mut h, 24 * 20, [1.0; 3], [0.2, 0.0, 0.0]);
        for i in 0..480 {
            for ch in 0..3 {
                let gain = -(h[ch * 480 + i] / before[ch * 480 + i]).log10();
                let want = 0.2 * RGB_FROM_HED[0][ch];
                assert!(
                    (gain - want).abs() < 5e-3,
                    "pixel {i} channel {ch}: {gain} vs {want}"
                );
            }
        }
    }

    #[test]
    fn hue_rotation_keeps_gray_gray_and_a_full_turn_is_the_identity() {
        let m = hue_saturation_matrix(1.0, 0.7);
        for row in m {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{m:?}");
        }
        let full = hue_saturation_matrix(std::f32::consts::TAU, 1.0);
        for (i, row) in full.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-5, "{full:?}");
            }
        }
        // Saturation 0 sends every colour to the gray of its mean.
        let g = hue_saturation_matrix(0.3, 0.0);
        let c = [0.9f32, 0.2, 0.4];
        let out: Vec<f32> = g
            .iter()
            .map(|r| r[0] * c[0] + r[1] * c[1] + r[2] * c[2])
            .collect();
        assert!(
            (out[0] - out[1]).abs() < 1e-5 && (out[1] - out[2]).abs() < 1e-5,
            "{out:?}"
        );
    }

    #[test]
    fn blur_smooths_noise_adds_and_jpeg_keeps_the_picture() {
        let img = colourful();
        let n = 24 * 20;
        let mut plain = vec![0f32; 3 * n];
        plain_into(&img, &mut plain);
        let roughness =
            |v: &[f32]| -> f32 { (0..n - 1).map(|i| (v[i + 1] - v[i]).abs()).sum::<f32>() };
        // A checkerboard in the first plane, blurred, is much smoother.
        let mut check: Vec<f32> = (0..n).map(|i| ((i % 24 + i / 24) % 2) as f32).collect();
        let r0 = roughness(&check);
        gaussian_blur_plane(&mut check, 24, 20, 1.5);
        assert!(roughness(&check) < 0.2 * r0);
        // Each setting on its own, seeded: the same draw twice, inside [0, 1], near the input.
        for cfg in [
            AugmentConfig {
                blur: 2.0,
                ..AugmentConfig::off()
            },
            AugmentConfig {
                noise: 0.05,
                ..AugmentConfig::off()
            },
            AugmentConfig {
                jpeg_quality: 40,
                ..AugmentConfig::off()
            },
            AugmentConfig {
                stain: 0.2,
                ..AugmentConfig::off()
            },
            AugmentConfig {
                hue_deg: 40.0,
                saturation: 0.5,
                ..AugmentConfig::off()
            },
            AugmentConfig {
                zoom: 0.2,
                ..AugmentConfig::off()
            },
        ] {
            cfg.validate().unwrap();
            let run = |seed| {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                let mut out = vec![0f32; 3 * n];
                augment_into(&img, &cfg, &mut rng, &mut out);
                out
            };
            let (a, b, c) = (run(5), run(5), run(6));
            assert_eq!(a, b, "{cfg:?}");
            assert_ne!(a, c, "{cfg:?}: another seed, another draw");
            assert!(a.iter().all(|v| (0.0..=1.0).contains(v)), "{cfg:?}");
            let mad = a
                .iter()
                .zip(&plain)
                .map(|(x, y)| (x - y).abs())
                .sum::<f32>()
                / a.len() as f32;
            assert!(mad < 0.25, "{cfg:?}: mean change {mad}");
        }
        assert!(AugmentConfig {
            stain: 1.5,
            ..AugmentConfig::off()
        }
        .validate()
        .is_err());
        assert!(AugmentConfig {
            jpeg_quality: 99,
            ..AugmentConfig::off()
        }
        .validate()
        .is_err());
    }
}
