//! Whether a photo looks like the photos a model learnt from.
//!
//! A network trained on one microscope's photos answers confidently on any other's, and
//! mostly wrongly (the default model calls nearly every cell of another stain an eosinophil at
//! confidence 1.000). Confidence cannot tell; the photo can. Two measurements, each recorded in
//! the model file as its training photos' distribution ([`Familiarity`]):
//!
//! - the photo's **look** ([`photo_look`]): the optical density of its erythrocytes, how strongly
//!   and in which hue it is stained (all relative to its background), and how much fine detail
//!   it keeps (focus, compression, camera resolution), none of which depends on its leukocytes;
//! - what the **network** sees in each cell found: its pooled features, the classifier's input.
//!
//! Each is scored as a robust distance from the training photos (per-value z-scores against the
//! median and the scaled median absolute deviation; Mahalanobis over them for the look, their
//! root mean square for the features), and each has a
//! threshold chosen on held-out photos of the model's own validation part. A photo's
//! [`Familiarity::unfamiliarity`] is the larger of its two distances over their thresholds: above
//! 1 the photo is unfamiliar.

use crate::isolate::IsolationConfig;
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// The values of [`photo_look`], in order.
pub const LOOK_NAMES: [&str; 7] = [
    "erythrocyte_density_red",
    "erythrocyte_density_green",
    "erythrocyte_density_blue",
    "stain_chroma",
    "stain_red_share",
    "stain_green_share",
    "fine_detail",
];

/// A held-out photo is unfamiliar when its distance exceeds this many times the distance
/// below which 99% of the validation part's photos fall: a new smear from the same microscope
/// varies more (another day's stain, another slide's thickness) than one data set's photos do
/// among themselves, and one unfamiliar call on a familiar photo costs a person a look, where a
/// missed one costs a wrong differential.
pub const THRESHOLD_MARGIN: f32 = 1.5;
/// Share of a batch's photos above which a batch warning is given.
pub const BATCH_WARNING_SHARE: f64 = 0.2;
/// Validation photos needed to choose thresholds on them; with fewer, the training photos are
/// used (and the model file says so).
pub const MIN_HELD_OUT_PHOTOS: usize = 10;

/// What a photo looks like, independent of its leukocytes ([`LOOK_NAMES`]); `None` where it
/// cannot be measured (too few erythrocytes to measure the stain by). Every colour is taken
/// relative to the photo's background, as the network's inputs are white-balanced: another lamp
/// or camera white point changes none of them, another stain does.
pub fn photo_look(photo: &RgbImage) -> Vec<Option<f32>> {
    let cfg = IsolationConfig::default();
    let factor = crate::isolate::work_factor(photo.width(), photo.height(), cfg.work_max_side_px);
    let work = crate::isolate::downsample(photo, factor);
    let model = crate::isolate::ColourModel::estimate(&work, &cfg);
    let density = crate::stain::erythrocyte_density_at(&work, &model, &cfg);
    let chroma = f32::from(model.stain_chroma_pct(&work)) / 100.0;
    let hue = stain_hue(&work, &model);
    vec![
        density.map(|d| d[0]),
        density.map(|d| d[1]),
        density.map(|d| d[2]),
        Some(chroma),
        hue.map(|h| h[0]),
        hue.map(|h| h[1]),
        fine_detail(&work),
    ]
}

/// The colour of the stain: the mean red and green share of the most strongly coloured tenth of
/// the pixels, after white balance against the background (whatever is stained: erythrocytes,
/// nuclei, granules). Hue only, so a paler or stronger stain of the same dyes keeps it.
fn stain_hue(work: &RgbImage, model: &crate::isolate::ColourModel) -> Option<[f32; 2]> {
    let g = model.channel_gain.map(|v| v as f32 / 256.0);
    let mut px: Vec<(f32, f32, f32)> = work
        .pixels()
        .map(|p| {
            let (r, gg, b) = (
                f32::from(p[0]) * g[0],
                f32::from(p[1]) * g[1],
                f32::from(p[2]) * g[2],
            );
            let sum = (r + gg + b).max(1.0);
            let spread = r.max(gg).max(b) - r.min(gg).min(b);
            (spread / sum, r / sum, gg / sum)
        })
        .collect();
    if px.len() < 100 {
        return None;
    }
    let k = px.len() / 10;
    px.select_nth_unstable_by(k, |a, b| b.0.total_cmp(&a.0));
    let top = &px[..k];
    let n = top.len() as f32;
    Some([
        top.iter().map(|p| p.1).sum::<f32>() / n,
        top.iter().map(|p| p.2).sum::<f32>() / n,
    ])
}

/// Energy of the differences between neighbouring pixels over that of pixels four apart (gray,
/// at the isolation's working size): 1 for pixel noise, 0.25 for a sharp edge, less for a
/// blurred one; independent of brightness and contrast. A softer camera, focus or compression
/// lowers it.
fn fine_detail(img: &RgbImage) -> Option<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < 8 || h < 8 {
        return None;
    }
    let gray: Vec<f32> = img
        .pixels()
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect();
    let sq = |a: f32, b: f32| f64::from((a - b) * (a - b));
    let (mut near, mut far) = (0f64, 0f64);
    for y in 0..h {
        for x in 0..w - 4 {
            let i = y * w + x;
            near += sq(gray[i + 1], gray[i]);
            far += sq(gray[i + 4], gray[i]);
        }
    }
    for y in 0..h - 4 {
        for x in 0..w {
            let i = y * w + x;
            near += sq(gray[i + w], gray[i]);
            far += sq(gray[i + 4 * w], gray[i]);
        }
    }
    (far > 0.0).then(|| (near / far) as f32)
}

/// One photo, measured as [`Familiarity`] compares photos (`crate::infer::measure_photo`
/// measures it as prediction sees it).
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoMeasure {
    /// [`photo_look`].
    pub look: Vec<Option<f32>>,
    /// The pooled network features of each leukocyte found in it.
    pub cell_features: Vec<Vec<f32>>,
}

/// The distribution of some values over a model's training photos: per value the median and a
/// robust scale (1.4826 x the median absolute deviation, floored so that a value that hardly
/// varies in training does not make every other photo infinitely far).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    pub median: Vec<f32>,
    pub scale: Vec<f32>,
    /// How the per-value z-scores combine into one distance.
    #[serde(default)]
    pub norm: Norm,
    /// For [`Norm::Mahalanobis`]: the training photos' covariance of the z-scores (row-major,
    /// values x values), with a ridge of [`RIDGE`] added to its diagonal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub covariance: Vec<f32>,
}

/// Added to the diagonal of a [`Profile::covariance`] (in z-score units): keeps it invertible,
/// and a direction in which the training photos never varied does not become infinitely far.
pub const RIDGE: f32 = 0.1;

/// How a [`Profile`] combines the z-scores of a photo's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// Root mean square: many values a little off (the network's features).
    #[default]
    Rms,
    /// The largest: any one value far off.
    Max,
    /// Mahalanobis over the values present, per value (`sqrt(z' C^-1 z / k)`): values off
    /// together in a way the training photos never are (a photo's look: the erythrocytes'
    /// density in red up while green goes down is another stain, not a thicker smear).
    Mahalanobis,
}

impl Profile {
    /// The profile of `rows` (each of the same length; missing values left out).
    fn fit(rows: &[Vec<Option<f32>>], names: &[&str], norm: Norm) -> Option<Profile> {
        let d = rows.first()?.len();
        let mut median = Vec::with_capacity(d);
        let mut scale = Vec::with_capacity(d);
        for j in 0..d {
            let mut v: Vec<f32> = rows
                .iter()
                .filter_map(|r| r.get(j).copied().flatten())
                .filter(|x| x.is_finite())
                .collect();
            let m = median_of(&mut v).unwrap_or(0.0);
            let mut dev: Vec<f32> = v.iter().map(|x| (x - m).abs()).collect();
            let mad = median_of(&mut dev).unwrap_or(0.0);
            median.push(m);
            scale.push(1.4826 * mad);
        }
        // Floors: a hundredth of the value itself, and a tenth of the typical scale.
        let mut typical: Vec<f32> = scale.clone();
        let typical = median_of(&mut typical).unwrap_or(0.0);
        for (s, m) in scale.iter_mut().zip(&median) {
            *s = s.max(0.01 * m.abs()).max(0.1 * typical).max(1e-6);
        }
        let mut profile = Profile {
            names: names.iter().map(|s| s.to_string()).collect(),
            median,
            scale,
            norm,
            covariance: Vec::new(),
        };
        if norm == Norm::Mahalanobis {
            profile.covariance = profile.z_covariance(rows);
        }
        Some(profile)
    }

    /// Covariance of the z-scores over the rows with every value present (plus [`RIDGE`]);
    /// the identity when there are too few such rows.
    fn z_covariance(&self, rows: &[Vec<Option<f32>>]) -> Vec<f32> {
        let d = self.median.len();
        let zs: Vec<Vec<f64>> = rows
            .iter()
            .filter_map(|r| {
                r.iter()
                    .zip(self.median.iter().zip(&self.scale))
                    .map(|(v, (m, s))| v.filter(|v| v.is_finite()).map(|v| f64::from((v - m) / s)))
                    .collect::<Option<Vec<f64>>>()
            })
            .collect();
        let mut c = vec![0f64; d * d];
        if zs.len() > 2 * d {
            for z in &zs {
                for i in 0..d {
                    for j in 0..d {
                        c[i * d + j] += z[i] * z[j];
                    }
                }
            }
            c.iter_mut().for_each(|v| *v /= zs.len() as f64);
        } else {
            (0..d).for_each(|i| c[i * d + i] = 1.0);
        }
        (0..d).for_each(|i| c[i * d + i] += f64::from(RIDGE));
        c.iter().map(|&v| v as f32).collect()
    }

    /// The z-scores of the values present combined by [`Profile::norm`]; `None` when none is
    /// present, or when `x` does not have this profile's length.
    pub fn distance(&self, x: &[Option<f32>]) -> Option<f32> {
        if x.len() != self.median.len() {
            return None;
        }
        let (mut sum, mut max, mut n) = (0f64, 0f64, 0usize);
        for ((v, m), s) in x.iter().zip(&self.median).zip(&self.scale) {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                let z = f64::from((v - m) / s);
                sum += z * z;
                max = max.max(z.abs());
                n += 1;
            }
        }
        if n == 0 {
            return None;
        }
        Some(match self.norm {
            Norm::Rms => (sum / n as f64).sqrt() as f32,
            Norm::Max => max as f32,
            Norm::Mahalanobis => self.mahalanobis(x)?,
        })
    }

    /// `sqrt(z' C^-1 z / k)` over the `k` values of `x` present, `C` the covariance restricted
    /// to them (solved by Cholesky).
    fn mahalanobis(&self, x: &[Option<f32>]) -> Option<f32> {
        let d = self.median.len();
        if self.covariance.len() != d * d {
            return None;
        }
        let idx: Vec<usize> = (0..d)
            .filter(|&i| x[i].is_some_and(|v| v.is_finite()))
            .collect();
        let k = idx.len();
        let z: Vec<f64> = idx
            .iter()
            .map(|&i| f64::from((x[i].unwrap_or(0.0) - self.median[i]) / self.scale[i]))
            .collect();
        // Cholesky factor L of the sub-matrix, then solve L y = z: z' C^-1 z = |y|^2.
        let mut l = vec![0f64; k * k];
        for a in 0..k {
            for b in 0..=a {
                let mut v = f64::from(self.covariance[idx[a] * d + idx[b]]);
                for c in 0..b {
                    v -= l[a * k + c] * l[b * k + c];
                }
                if a == b {
                    if v <= 0.0 {
                        return None;
                    }
                    l[a * k + a] = v.sqrt();
                } else {
                    l[a * k + b] = v / l[b * k + b];
                }
            }
        }
        let mut y = vec![0f64; k];
        for a in 0..k {
            let mut v = z[a];
            for c in 0..a {
                v -= l[a * k + c] * y[c];
            }
            y[a] = v / l[a * k + a];
        }
        Some((y.iter().map(|v| v * v).sum::<f64>() / k as f64).sqrt() as f32)
    }
}

fn median_of(v: &mut [f32]) -> Option<f32> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// What a model's training photos look like, and how far from them a photo may be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Familiarity {
    /// The photos' look ([`photo_look`]).
    pub look: Profile,
    /// The pooled network features of the leukocytes found in them.
    pub features: Profile,
    /// Look distance above which a photo is unfamiliar.
    pub look_threshold: f32,
    /// Median feature distance of a photo's cells above which it is unfamiliar.
    pub feature_threshold: f32,
    /// Training photos profiled.
    pub photos: usize,
    /// Where the thresholds were chosen, in words.
    pub chosen_on: String,
}

/// The two distances of one photo from a model's training photos.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distances {
    pub look: Option<f32>,
    /// The median over the photo's cells (`None` without cells).
    pub features: Option<f32>,
}

impl Familiarity {
    /// Profiles `train` (the training photos) and chooses the thresholds on `held_out` (the
    /// validation photos; the training photos when there are fewer than
    /// [`MIN_HELD_OUT_PHOTOS`]). `None` without training photos.
    pub fn fit(train: &[PhotoMeasure], held_out: &[PhotoMeasure]) -> Option<Familiarity> {
        let looks: Vec<Vec<Option<f32>>> = train.iter().map(|m| m.look.clone()).collect();
        let look = Profile::fit(&looks, &LOOK_NAMES, Norm::Mahalanobis)?;
        let feats: Vec<Vec<Option<f32>>> = train
            .iter()
            .flat_map(|m| &m.cell_features)
            .map(|f| f.iter().map(|&v| Some(v)).collect())
            .collect();
        let features = Profile::fit(&feats, &[], Norm::Rms).unwrap_or(Profile {
            names: Vec::new(),
            median: Vec::new(),
            scale: Vec::new(),
            norm: Norm::Rms,
            covariance: Vec::new(),
        });
        let mut fam = Familiarity {
            look,
            features,
            look_threshold: f32::MAX,
            feature_threshold: f32::MAX,
            photos: train.len(),
            chosen_on: String::new(),
        };
        let (basis, name) = if held_out.len() >= MIN_HELD_OUT_PHOTOS {
            (held_out, "validation")
        } else {
            (train, "training")
        };
        let mut look_d: Vec<f32> = basis.iter().filter_map(|m| fam.distances(m).look).collect();
        let mut feat_d: Vec<f32> = basis
            .iter()
            .filter_map(|m| fam.distances(m).features)
            .collect();
        // Nothing to choose a threshold on (no cell found in any photo): f32::MAX, which flags
        // nothing and, unlike infinity, survives JSON.
        let pick = |d: &mut [f32]| {
            quantile(d, 0.99).map_or(f32::MAX, |q| (q * THRESHOLD_MARGIN).clamp(1e-6, f32::MAX))
        };
        fam.look_threshold = pick(&mut look_d);
        fam.feature_threshold = pick(&mut feat_d);
        fam.chosen_on = format!(
            "{THRESHOLD_MARGIN} x the 99th percentile of {} {name} photos",
            basis.len()
        );
        Some(fam)
    }

    /// Checks that the profile is whole: lengths agree, scales and thresholds are positive.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (name, p) in [("look", &self.look), ("features", &self.features)] {
            let d = p.median.len();
            if p.scale.len() != d
                || (!p.names.is_empty() && p.names.len() != d)
                || (!p.covariance.is_empty() && p.covariance.len() != d * d)
                || (p.norm == Norm::Mahalanobis && p.covariance.len() != d * d)
            {
                return Err(format!("{name}: values of different lengths"));
            }
            if p.median.iter().any(|v| !v.is_finite())
                || p.scale.iter().any(|v| !(v.is_finite() && *v > 0.0))
                || p.covariance.iter().any(|v| !v.is_finite())
            {
                return Err(format!(
                    "{name}: a median, scale or covariance is not a positive finite number"
                ));
            }
        }
        for (name, t) in [
            ("look_threshold", self.look_threshold),
            ("feature_threshold", self.feature_threshold),
        ] {
            if !(t.is_finite() && t > 0.0) {
                return Err(format!("{name} {t} is not positive"));
            }
        }
        Ok(())
    }

    /// The photo's distances from the training photos.
    pub fn distances(&self, m: &PhotoMeasure) -> Distances {
        let mut cells: Vec<f32> = m
            .cell_features
            .iter()
            .filter_map(|f| {
                let x: Vec<Option<f32>> = f.iter().map(|&v| Some(v)).collect();
                self.features.distance(&x)
            })
            .collect();
        Distances {
            look: self.look.distance(&m.look),
            features: median_of(&mut cells),
        }
    }

    /// The larger of the photo's two distances, each over its threshold: above 1, the photo is
    /// unlike the training photos. 0 when nothing could be measured.
    pub fn unfamiliarity(&self, m: &PhotoMeasure) -> f32 {
        let d = self.distances(m);
        let look = d.look.map_or(0.0, |v| v / self.look_threshold);
        let feat = d.features.map_or(0.0, |v| v / self.feature_threshold);
        let u = look.max(feat);
        if u.is_finite() {
            u
        } else {
            f32::MAX
        }
    }
}

/// The `q` quantile (nearest rank) of `v`.
fn quantile(v: &mut [f32], q: f64) -> Option<f32> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// The batch warning when `unfamiliar` of `photos` photos are unfamiliar (more than
/// [`BATCH_WARNING_SHARE`] of them), with what to do about it.
pub fn batch_warning(unfamiliar: usize, photos: usize) -> Option<String> {
    if photos == 0 || (unfamiliar as f64) <= BATCH_WARNING_SHARE * photos as f64 {
        return None;
    }
    Some(format!(
        "{unfamiliar} of {photos} photos ({:.0}%) look unlike the photos this model was trained on \
         (another microscope, camera or stain): {UNFAMILIAR_ADVICE}",
        100.0 * unfamiliar as f64 / photos as f64
    ))
}

/// What the batch warning advises (the web page shows it too).
pub const UNFAMILIAR_ADVICE: &str = "its calls on them are unreliable. Label some of your own \
     cells and fine-tune it: leuko train --data LABELS.csv --init default";

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(look: [f32; 7], feature: f32) -> PhotoMeasure {
        PhotoMeasure {
            look: look.iter().map(|&v| Some(v)).collect(),
            cell_features: vec![vec![feature, 1.0]],
        }
    }

    #[test]
    fn photos_far_from_the_training_photos_are_unfamiliar_and_close_ones_are_not() {
        let base = [0.3, 0.5, 0.2, 0.4, 0.45, 0.25, 0.35];
        let train: Vec<PhotoMeasure> = (0..40)
            .map(|i| {
                let e = (i as f32 - 20.0) / 400.0;
                measure(base.map(|v| v + e), 2.0 + 10.0 * e)
            })
            .collect();
        let val: Vec<PhotoMeasure> = (0..12)
            .map(|i| {
                let e = (i as f32 - 6.0) / 300.0;
                measure(base.map(|v| v + e), 2.0 + 10.0 * e)
            })
            .collect();
        let fam = Familiarity::fit(&train, &val).unwrap();
        assert!(
            fam.chosen_on.contains("12 validation photos"),
            "{}",
            fam.chosen_on
        );
        assert!(fam.unfamiliarity(&measure(base, 2.0)) < 1.0);
        // Another stain: the erythrocytes' density in red far off.
        let mut other = base;
        other[0] = 0.5;
        assert!(fam.unfamiliarity(&measure(other, 2.0)) > 1.0);
        // The network sees something else in the cells.
        assert!(fam.unfamiliarity(&measure(base, 9.0)) > 1.0);
        // No cells: judged on the look alone; nothing measurable: 0.
        let no_cells = PhotoMeasure {
            look: base.iter().map(|&v| Some(v)).collect(),
            cell_features: Vec::new(),
        };
        assert!(fam.unfamiliarity(&no_cells) < 1.0);
        let nothing = PhotoMeasure {
            look: vec![None; 7],
            cell_features: Vec::new(),
        };
        assert_eq!(fam.unfamiliarity(&nothing), 0.0);
    }

    #[test]
    fn mahalanobis_sees_values_off_together_as_the_training_photos_never_are() {
        // Two values that always rise and fall together.
        let rows: Vec<Vec<Option<f32>>> = (0..60)
            .map(|i| {
                let t = (i as f32 - 30.0) / 10.0;
                let wobble = if i % 2 == 0 { 0.05 } else { -0.05 };
                vec![Some(t), Some(t + wobble)]
            })
            .collect();
        let p = Profile::fit(&rows, &["a", "b"], Norm::Mahalanobis).unwrap();
        let along = p.distance(&[Some(1.5), Some(1.5)]).unwrap();
        let across = p.distance(&[Some(1.5), Some(-1.5)]).unwrap();
        assert!(across > 3.0 * along, "{across} vs {along}");
        // A missing value: the distance of the other alone.
        assert!(p.distance(&[Some(0.0), None]).unwrap() < 0.5);
        assert!(p.distance(&[None, None]).is_none());
    }

    #[test]
    fn few_validation_photos_choose_on_the_training_photos() {
        let train: Vec<PhotoMeasure> = (0..5)
            .map(|i| measure([0.3 + i as f32 / 100.0; 7], 1.0))
            .collect();
        let fam = Familiarity::fit(&train, &train[..2]).unwrap();
        assert!(
            fam.chosen_on.contains("5 training photos"),
            "{}",
            fam.chosen_on
        );
        assert!(Familiarity::fit(&[], &[]).is_none());
    }

    #[test]
    fn fine_detail_drops_when_a_photo_is_blurred() {
        // A dark disc on a light background, as a cell on a smear.
        let img = RgbImage::from_fn(64, 64, |x, y| {
            let d = ((x as f32 - 32.0).powi(2) + (y as f32 - 30.0).powi(2)).sqrt();
            let v = if d < 14.0 { 60 } else { 220 };
            image::Rgb([v, v, v])
        });
        let sharp = fine_detail(&img).unwrap();
        let soft = fine_detail(&image::imageops::blur(&img, 2.0)).unwrap();
        assert!(soft < sharp, "{soft} !< {sharp}");
        assert!(fine_detail(&RgbImage::new(4, 4)).is_none());
    }

    #[test]
    fn the_batch_warning_fires_above_a_fifth_of_the_photos_and_says_what_to_do() {
        assert!(batch_warning(2, 10).is_none());
        let w = batch_warning(3, 10).unwrap();
        assert!(
            w.contains("3 of 10 photos (30%)") && w.contains("--init default"),
            "{w}"
        );
        assert!(batch_warning(0, 0).is_none());
    }
}
