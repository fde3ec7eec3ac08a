//! The review flags on real and constructed photos: no leukocyte, a photo unlike the training
//! photos, and the share of held-out BCCD and other-microscope photos the embedded default model
//! calls unfamiliar.

use crate::common::{self, photo, JTSC};
use leuko::data::{ClassSet, DataDir, Dataset};
use leuko::predict::{Classifier, ReviewReason, EMBEDDED_SPLIT};
use leuko::split::Split;
use std::path::Path;

#[test]
fn a_photo_without_a_leukocyte_is_a_review_item() {
    let c = Classifier::embedded().unwrap();
    // An empty smear background with sensor noise.
    let img = image::RgbImage::from_fn(320, 240, |x, y| {
        let n = ((x * 7919 + y * 104_729) % 9) as u8;
        image::Rgb([205 + n, 200 + n, 196 + n])
    });
    let p = c.classify(&img).unwrap();
    assert!(p.cells.is_empty());
    assert!(p.review);
    assert!(
        p.review_reasons.contains(&ReviewReason::NoLeukocyteFound),
        "{:?}",
        p.review_reasons
    );
}

#[test]
fn a_photo_recoloured_far_outside_bccd_is_unfamiliar_and_so_are_its_cells() {
    let c = Classifier::embedded().unwrap();
    let original = leuko::imageio::load_rgb(&photo(3)).unwrap();
    let p = c.classify(&original).unwrap();
    assert!(!p.unfamiliar(), "unfamiliarity {:?}", p.unfamiliarity);
    // The stain's colours rotated (red -> green -> blue): no BCCD smear looks like this.
    let mut turned = original.clone();
    for px in turned.pixels_mut() {
        let [r, g, b] = px.0;
        px.0 = [b, r, g];
    }
    let q = c.classify(&turned).unwrap();
    assert!(
        q.unfamiliarity.unwrap() > 1.0,
        "unfamiliarity {:?}",
        q.unfamiliarity
    );
    assert!(q.review_reasons.contains(&ReviewReason::UnfamiliarPhoto));
    for cell in &q.cells {
        assert!(cell.review && cell.review_reasons.contains(&ReviewReason::UnfamiliarPhoto));
    }
}

/// At most 5% of the default model's held-out BCCD test photos are unfamiliar (the thresholds
/// were chosen on its validation photos), and at least 90% of another microscope's.
#[test]
fn the_default_model_knows_bccd_test_photos_and_not_another_microscopes() {
    let c = Classifier::embedded().unwrap();
    let dir = DataDir::open(Path::new(common::BCCD)).unwrap();
    let ds = Dataset::load(&dir, &ClassSet::new(c.classes().to_vec()).unwrap()).unwrap();
    let split = Split::parse(EMBEDDED_SPLIT, Path::new("models/default.split.json"), &ds).unwrap();
    let unfamiliar = |paths: Vec<std::path::PathBuf>| -> (usize, usize) {
        let n = paths.len();
        let u = paths
            .iter()
            .filter(|p| c.classify_file(p).unwrap().unfamiliar())
            .count();
        (u, n)
    };
    let (u, n) = unfamiliar(leuko::infer::photos_of(&ds.source, &split.test));
    assert!(
        n >= 80 && u * 20 <= n,
        "{u} of {n} BCCD test photos unfamiliar"
    );
    let jtsc: Vec<_> = (1..=300)
        .step_by(5)
        .map(|i| Path::new(JTSC).join(format!("images/{i:03}.bmp")))
        .collect();
    let (u, n) = unfamiliar(jtsc);
    assert!(
        u * 10 >= n * 9,
        "{u} of {n} Jiangxi Tecom photos unfamiliar"
    );
}

#[test]
fn the_batch_warning_reaches_stderr_and_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.html");
    let photos: Vec<String> = [1, 2, 3]
        .iter()
        .map(|i| format!("{JTSC}/images/{i:03}.bmp"))
        .collect();
    let mut args: Vec<&str> = photos.iter().map(String::as_str).collect();
    args.extend(["--out", common::s(&out), "--quiet"]);
    let o = common::leuko("report", &args);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
    let err = common::text(&o.stderr);
    assert!(
        err.contains("warning: 3 of 3 photos (100%) look unlike"),
        "{err}"
    );
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains("id=\"unfamiliar\"") && html.contains("--init default"));
}
