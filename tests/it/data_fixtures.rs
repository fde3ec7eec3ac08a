//! The data layer on small hand-made fixtures: CSV edge cases, missing and
//! unreadable images, a malformed VOC file.

use leuko::data::voc::read_annotation;
use leuko::data::{ClassLabel, ClassSet, DataDir, Dataset, ExclusionReason};
use std::path::Path;

/// A tiny BCCD-shaped folder: labels from the fixture, a small JPEG for ids 0-6
/// (id 5's is a text file in disguise), none for id 9.
fn mini_bccd() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        "tests/fixtures/labels_edge.csv",
        dir.path().join("labels.csv"),
    )
    .unwrap();
    let images = dir.path().join("JPEGImages");
    std::fs::create_dir(&images).unwrap();
    for id in 0..=6u32 {
        let path = images.join(format!("BloodImage_{id:05}.jpg"));
        if id == 5 {
            std::fs::write(&path, "this is not a JPEG").unwrap();
        } else {
            image::RgbImage::from_pixel(16, 12, image::Rgb([200, 150, 160]))
                .save(&path)
                .unwrap();
        }
    }
    // A photo with no row in labels.csv.
    image::RgbImage::from_pixel(16, 12, image::Rgb([1, 2, 3]))
        .save(images.join("BloodImage_00042.jpg"))
        .unwrap();
    dir
}

#[test]
fn every_unused_row_is_counted_under_its_reason() {
    let tmp = mini_bccd();
    let dir = DataDir::open(tmp.path()).unwrap();
    let ds = Dataset::load(&dir, &ClassSet::default_four()).unwrap();

    let ids: Vec<(u32, ClassLabel)> = ds.samples.iter().map(|s| (s.image_id, s.label)).collect();
    assert_eq!(
        ids,
        vec![
            (0, ClassLabel::Neutrophil),
            (4, ClassLabel::Lymphocyte),
            (6, ClassLabel::Eosinophil)
        ]
    );
    let reason_of = |id: u32| {
        ds.excluded
            .iter()
            .find(|e| e.image_id == Some(id))
            .map(|e| e.reason)
    };
    assert_eq!(reason_of(1), Some(ExclusionReason::MultiLabel));
    assert_eq!(reason_of(2), Some(ExclusionReason::Unlabelled));
    assert_eq!(reason_of(3), Some(ExclusionReason::ClassNotSelected));
    assert_eq!(reason_of(5), Some(ExclusionReason::ImageUnreadable));
    assert_eq!(reason_of(9), Some(ExclusionReason::ImageMissing));
    let malformed: Vec<_> = ds
        .excluded
        .iter()
        .filter(|e| e.reason == ExclusionReason::MalformedRow)
        .collect();
    assert_eq!(malformed.len(), 2, "{malformed:?}");
    assert!(malformed[0].detail.contains("line 9") && malformed[0].detail.contains("seven"));
    assert!(malformed[1].detail.contains("line 10") && malformed[1].detail.contains("PLATELET"));
    let unreadable = ds.excluded.iter().find(|e| e.image_id == Some(5)).unwrap();
    assert!(
        unreadable.detail.contains("BloodImage_00005.jpg"),
        "{}",
        unreadable.detail
    );
    assert_eq!(ds.excluded.len(), 7, "each row counted once");
    assert_eq!(ds.images_without_row, vec![42]);
}

#[test]
fn basophil_can_be_selected() {
    let tmp = mini_bccd();
    let dir = DataDir::open(tmp.path()).unwrap();
    let classes =
        ClassSet::parse_list("NEUTROPHIL,EOSINOPHIL,LYMPHOCYTE,MONOCYTE,BASOPHIL").unwrap();
    let ds = Dataset::load(&dir, &classes).unwrap();
    assert_eq!(ds.label_of(3), Some(ClassLabel::Basophil));
}

#[test]
fn missing_labels_csv_names_the_file() {
    let tmp = mini_bccd();
    let dir = DataDir::open(tmp.path()).unwrap();
    std::fs::remove_file(tmp.path().join("labels.csv")).unwrap();
    let msg = Dataset::load(&dir, &ClassSet::default_four())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("labels.csv"), "{msg}");
}

#[test]
fn malformed_voc_file_names_file_and_field() {
    let msg = read_annotation(Path::new("tests/fixtures/malformed_voc.xml"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("malformed_voc.xml"), "{msg}");
    assert!(
        msg.contains("<ymin>") && msg.contains("two hundred"),
        "{msg}"
    );
}
