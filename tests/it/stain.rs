//! Stain normalisation on BCCD's real photos: every photo's erythrocytes can be measured, the
//! reference density is BCCD's median, and normalising brings differently stained smears together.

use leuko::data::{ClassSet, DataDir, Dataset};
use leuko::stain::{erythrocyte_density, ColourBalance, REFERENCE_ERYTHROCYTE_DENSITY};
use rayon::prelude::*;
use std::path::Path;

fn densities() -> Vec<(u32, Option<[f32; 3]>)> {
    let dir = DataDir::open(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/bccd"
    )))
    .unwrap();
    let ds = Dataset::load(&dir, &ClassSet::default()).unwrap();
    ds.samples
        .par_iter()
        .map(|s| {
            let photo = leuko::imageio::load_rgb(&dir.image_path(s.image_id)).unwrap();
            (s.image_id, erythrocyte_density(&photo))
        })
        .collect()
}

fn median(mut v: Vec<f32>) -> f32 {
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

#[test]
fn bccd_erythrocytes_are_measured_and_the_reference_is_their_median() {
    let all = densities();
    let measured: Vec<[f32; 3]> = all.iter().filter_map(|(_, d)| *d).collect();
    let missing: Vec<u32> = all
        .iter()
        .filter(|(_, d)| d.is_none())
        .map(|(id, _)| *id)
        .collect();
    assert!(
        missing.len() * 100 <= all.len(),
        "erythrocyte density not measured on {} of {} photos: {missing:?}",
        missing.len(),
        all.len()
    );
    if let Ok(path) = std::env::var("LEUKO_STAIN_DUMP") {
        let text: String = all
            .iter()
            .filter_map(|(id, d)| d.map(|d| format!("{id},{},{},{}\n", d[0], d[1], d[2])))
            .collect();
        std::fs::write(path, text).unwrap();
    }
    for c in 0..3 {
        let m = median(measured.iter().map(|d| d[c]).collect());
        eprintln!("channel {c}: median erythrocyte density {m:.4}");
        assert!(
            (m - REFERENCE_ERYTHROCYTE_DENSITY[c]).abs() <= 0.02 * m,
            "channel {c}: BCCD's median {m:.4}, reference {}",
            REFERENCE_ERYTHROCYTE_DENSITY[c]
        );
    }
}

#[test]
fn normalising_narrows_the_spread_of_erythrocyte_density_between_photos() {
    let dir = DataDir::open(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/bccd"
    )))
    .unwrap();
    // A light and a heavily stained smear (green densities about 0.09 and 0.12).
    let spread = |normalise: bool| -> f32 {
        let g: Vec<f32> = [256u32, 72]
            .iter()
            .map(|&id| {
                let mut photo = leuko::imageio::load_rgb(&dir.image_path(id)).unwrap();
                if let Some(b) = ColourBalance::for_photo(&photo, true, normalise) {
                    b.apply(&mut photo);
                }
                erythrocyte_density(&photo).unwrap()[1]
            })
            .collect();
        (g[1] - g[0]).abs()
    };
    let (before, after) = (spread(false), spread(true));
    assert!(
        before > 0.02 && after < before / 4.0,
        "green density difference {before:.4} white-balanced, {after:.4} stain-normalised"
    );
}
