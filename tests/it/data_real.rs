//! The data layer, audit and splits on the real BCCD data in ../shared/data/bccd.

use leuko::audit::{audit, AuditConfig, AuditReport};
use leuko::data::{class_counts, ClassLabel, ClassSet, DataDir, Dataset};
use leuko::split::{make_folds, make_split, oversample, Split};
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

fn data_dir() -> DataDir {
    DataDir::open(Path::new("../shared/data/bccd")).expect("BCCD data at ../shared/data/bccd")
}

fn dataset() -> &'static Dataset {
    static DS: OnceLock<Dataset> = OnceLock::new();
    DS.get_or_init(|| Dataset::load(&data_dir(), &ClassSet::default_four()).unwrap())
}

fn report() -> &'static AuditReport {
    static R: OnceLock<AuditReport> = OnceLock::new();
    R.get_or_init(|| audit(&data_dir(), &AuditConfig::default(), true).unwrap())
}

#[test]
fn class_counts_match_the_data_set() {
    let counts: HashMap<ClassLabel, usize> = dataset().class_counts().into_iter().collect();
    assert_eq!(counts[&ClassLabel::Neutrophil], 206);
    assert_eq!(counts[&ClassLabel::Eosinophil], 88);
    assert_eq!(counts[&ClassLabel::Lymphocyte], 33);
    assert_eq!(counts[&ClassLabel::Monocyte], 20);
    assert_eq!(dataset().samples.len(), 347);
}

#[test]
fn audit_finds_known_copies_and_conflicts() {
    let r = report();
    let group_of = r.group_of();
    let same = |a: u32, b: u32| group_of.contains_key(&a) && group_of.get(&a) == group_of.get(&b);
    // Pairs confirmed by eye: shifted copies of one field.
    assert!(same(37, 38), "37/38");
    assert!(same(230, 257), "230/257");
    assert!(same(19, 20), "19/20 (labelled NEUTROPHIL and LYMPHOCYTE)");
    assert!(!same(0, 1));
    assert!(r.conflicts() >= 1);
    assert!(
        (15..=40).contains(&r.groups.len()),
        "{} groups: the threshold or the method changed behaviour",
        r.groups.len()
    );
    for g in &r.groups {
        for p in &g.pairs {
            assert!(p.similarity >= AuditConfig::default().min_similarity);
        }
    }
}

fn check_split(split: &Split, group_of: &HashMap<u32, usize>) {
    let ds = dataset();
    let classes = &ds.classes;
    // Every sample exactly once.
    let mut all: Vec<u32> = [&split.train, &split.val, &split.test]
        .iter()
        .flat_map(|p| p.iter().map(|s| s.image_id))
        .collect();
    all.sort_unstable();
    let expected: Vec<u32> = ds.samples.iter().map(|s| s.image_id).collect();
    assert_eq!(all, expected);
    // No near-duplicate group straddles two parts.
    let part_of: HashMap<u32, usize> = [&split.train, &split.val, &split.test]
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.iter().map(move |s| (s.image_id, i)))
        .collect();
    let mut group_part: HashMap<usize, usize> = HashMap::new();
    for (id, part) in &part_of {
        if let Some(g) = group_of.get(id) {
            let first = *group_part.entry(*g).or_insert(*part);
            assert_eq!(first, *part, "group {g} straddles parts (image {id})");
        }
    }
    // Stratified within one image of exact.
    let totals = class_counts(&ds.samples, classes);
    let test = class_counts(&split.test, classes);
    let val = class_counts(&split.val, classes);
    for i in 0..classes.len() {
        let n = totals[i].1 as f64;
        let t = test[i].1 as f64;
        assert!(
            (t - 0.25 * n).abs() <= 1.0,
            "{}: test {t} of {n}",
            totals[i].0
        );
        let v = val[i].1 as f64;
        assert!(
            (v - 0.2 * (n - t)).abs() <= 1.0,
            "{}: val {v} of {}",
            totals[i].0,
            n - t
        );
    }
}

#[test]
fn split_is_grouped_stratified_and_deterministic() {
    let group_of = report().group_of();
    let a = make_split(dataset(), &group_of, 42);
    check_split(&a, &group_of);
    let b = make_split(dataset(), &group_of, 42);
    assert_eq!(a.to_json(), b.to_json(), "same seed, same bytes");
    let c = make_split(dataset(), &group_of, 43);
    assert_ne!(a.to_json(), c.to_json());
    // Round trip through the file format.
    let parsed = Split::parse(&a.to_json(), Path::new("split.json"), dataset()).unwrap();
    assert_eq!(parsed, a);
}

#[test]
fn folds_cover_every_sample_once_as_test() {
    let group_of = report().group_of();
    let folds = make_folds(dataset(), &group_of, 42, 5).unwrap();
    let mut tested: Vec<u32> = folds
        .iter()
        .flat_map(|f| f.test.iter().map(|s| s.image_id))
        .collect();
    tested.sort_unstable();
    assert_eq!(tested.len(), dataset().samples.len());
    tested.dedup();
    assert_eq!(tested.len(), dataset().samples.len());
    let totals = dataset().class_counts();
    for f in &folds {
        for (i, (_, n)) in class_counts(&f.test, &dataset().classes).iter().enumerate() {
            assert!((*n as f64 - totals[i].1 as f64 / 5.0).abs() <= 1.0);
        }
        // Validation comes out of the other folds, as in the plain split.
        let test_ids: Vec<u32> = f.test.iter().map(|s| s.image_id).collect();
        assert!(f.val.iter().all(|s| !test_ids.contains(&s.image_id)));
    }
}

#[test]
fn reference_split_loads_and_oversampling_touches_train_only() {
    let s = Split::read(
        Path::new("../shared/anchors/keras_seed/split.json"),
        dataset(),
    )
    .unwrap();
    assert_eq!((s.train.len(), s.val.len(), s.test.len()), (208, 52, 87));
    let o = oversample(&s.train, 42);
    let counts = class_counts(&o, &s.classes);
    assert!(counts.iter().all(|(_, n)| *n == 123), "{counts:?}");
}

#[test]
fn malformed_split_files_give_errors_naming_the_problem() {
    let ds = dataset();
    let cases = [
        ("not json", "expected"),
        (
            r#"{"seed":1,"classes":["NEUTROPHIL","PLATELET"],"train":[],"val":[],"test":[]}"#,
            "PLATELET",
        ),
        (
            r#"{"seed":1,"classes":["NEUTROPHIL","EOSINOPHIL"],"train":[[99999,"NEUTROPHIL"]],"val":[],"test":[[0,"NEUTROPHIL"]]}"#,
            "image 99999",
        ),
        (
            r#"{"seed":1,"classes":["NEUTROPHIL","EOSINOPHIL"],"train":[[0,"NEUTROPHIL"]],"val":[],"test":[[0,"NEUTROPHIL"]]}"#,
            "both",
        ),
        (
            r#"{"seed":1,"classes":["NEUTROPHIL","EOSINOPHIL"],"train":[[0,"EOSINOPHIL"]],"val":[],"test":[[1,"NEUTROPHIL"]]}"#,
            "labels.csv",
        ),
        (
            r#"{"seed":1,"classes":["NEUTROPHIL","EOSINOPHIL"],"train":[[0,"NEUTROPHIL"]],"val":[],"test":[[15,"MONOCYTE"]]}"#,
            "not in \"classes\"",
        ),
    ];
    for (text, needle) in cases {
        let msg = Split::parse(text, Path::new("bad-split.json"), ds)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("bad-split.json") && msg.contains(needle),
            "{needle}: {msg}"
        );
    }
}

/// The near-duplicate search on a lab's own photos: the Jiangxi Tecom set holds one photo twice
/// (`112.bmp` and `139.bmp`), which the audit finds among look-alike single-cell photos; the two
/// cells then share a group, so no split can put them on both sides.
#[test]
fn audit_of_labelled_cells_finds_the_copied_photo_and_groups_its_cells() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("labels.csv");
    let jtsc = crate::common::JTSC;
    let mut text = String::from("file,class\n");
    for (k, i) in [101, 112, 120, 131, 139, 150, 176, 190].iter().enumerate() {
        let class = if k < 5 { "LYMPHOCYTE" } else { "NEUTROPHIL" };
        text.push_str(&format!("{jtsc}/images/{i:03}.bmp,{class}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let table = leuko::data::cells::read_labels_csv(&csv).unwrap();
    let (photos, labels) = table.photos();
    assert_eq!(photos.len(), 8);
    let report =
        leuko::audit::audit_photos(&photos, &labels, &AuditConfig::default(), true).unwrap();
    let copies: Vec<Vec<u32>> = report.groups.iter().map(|g| g.members.clone()).collect();
    assert_eq!(copies, vec![vec![1, 4]], "{report:?}");
    let ds = Dataset::from_cells(table, None).unwrap();
    let plain = ds.cell_groups(None).unwrap();
    assert_ne!(plain[&1], plain[&4]);
    let joined = ds.cell_groups(Some(&report.group_of())).unwrap();
    assert_eq!(joined[&1], joined[&4]);
    let distinct: std::collections::HashSet<usize> = joined.values().copied().collect();
    assert_eq!(distinct.len(), 7);
}
