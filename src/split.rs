//! Train/validation/test splits: stratified by class, grouped by near-duplicate
//! groups (a group never straddles two parts), seeded, and stored in a JSON
//! format other tools can read (`{"seed", "classes", "train", "val", "test"}`).
//! A BCCD sample is named by its image id (`[12, "NEUTROPHIL"]`), a lab's labelled cell by its
//! file as the labels CSV or class folder gives it, with its box when it has one
//! (`["slide1/a.jpg [10,20,90,100]", "BLAST"]`), so a split file still means the same cells
//! after rows are added to or reordered in the CSV.

use crate::data::{ClassLabel, ClassSet, Dataset, PhotoSource, Sample};
use crate::error::{LeukoError, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

/// Share of samples held out for testing.
pub const TEST_FRACTION: f64 = 0.25;
/// Share of the remaining samples used for validation.
pub const VAL_FRACTION: f64 = 0.20;

/// The parts a sample can belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Train,
    Val,
    Test,
}

/// A train/validation/test split of samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub seed: u64,
    pub classes: ClassSet,
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
    pub test: Vec<Sample>,
}

/// Makes one random generator per purpose from a run's seed, so that adding a
/// random choice in one place does not change the others.
pub fn rng_for(seed: u64, purpose: &str) -> ChaCha8Rng {
    // FNV-1a of the purpose, mixed into the seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in purpose.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ChaCha8Rng::seed_from_u64(seed ^ h.rotate_left(17))
}

/// A unit that moves as a whole: one near-duplicate group (or one lone sample).
#[derive(Debug, Clone)]
struct Unit {
    samples: Vec<Sample>,
}

/// Gathers samples into units by `group_of` (image id → group); ungrouped samples are alone.
fn units(samples: &[Sample], group_of: &HashMap<u32, usize>) -> Vec<Unit> {
    let mut grouped: BTreeMap<usize, Vec<Sample>> = BTreeMap::new();
    let mut out = Vec::new();
    for s in samples {
        match group_of.get(&s.image_id) {
            Some(&g) => grouped.entry(g).or_default().push(*s),
            None => out.push(Unit { samples: vec![*s] }),
        }
    }
    out.extend(grouped.into_values().map(|samples| Unit { samples }));
    out
}

/// Distributes units over parts so that each part's class counts approach
/// `fractions[p] * class total`: big units first (they are the hard ones to
/// place), then each unit where it reduces the distance to the targets most;
/// ties broken by the seeded generator. Lone samples come last and fill the gaps,
/// which is what keeps every part within about one sample of its target.
fn distribute(
    mut units: Vec<Unit>,
    fractions: &[f64],
    classes: &ClassSet,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<Sample>> {
    let k = classes.len();
    let mut totals = vec![0f64; k];
    for u in &units {
        for s in &u.samples {
            if let Some(c) = classes.index_of(s.label) {
                totals[c] += 1.0;
            }
        }
    }
    let targets: Vec<Vec<f64>> = fractions
        .iter()
        .map(|f| totals.iter().map(|t| t * f).collect())
        .collect();
    let mut counts = vec![vec![0f64; k]; fractions.len()];
    let mut parts = vec![Vec::new(); fractions.len()];

    units.sort_by_key(|u| u.samples.iter().map(|s| s.image_id).min());
    units.shuffle(rng);
    units.sort_by_key(|u| std::cmp::Reverse(u.samples.len()));

    for u in units {
        let mut add = vec![0f64; k];
        for s in &u.samples {
            if let Some(c) = classes.index_of(s.label) {
                add[c] += 1.0;
            }
        }
        let cost = |p: usize| -> f64 {
            (0..k)
                .map(|c| {
                    let before = (counts[p][c] - targets[p][c]).abs();
                    let after = (counts[p][c] + add[c] - targets[p][c]).abs();
                    after - before
                })
                .sum()
        };
        let costs: Vec<f64> = (0..fractions.len()).map(cost).collect();
        let best = costs.iter().cloned().fold(f64::INFINITY, f64::min);
        let ties: Vec<usize> = (0..fractions.len())
            .filter(|&p| costs[p] <= best + 1e-9)
            .collect();
        let p = ties[rng.random_range(0..ties.len())];
        for c in 0..k {
            counts[p][c] += add[c];
        }
        parts[p].extend(u.samples);
    }
    for part in &mut parts {
        part.sort();
    }
    parts
}

/// Splits the rest (everything but the test part) into train and validation.
fn train_val(
    rest: Vec<Sample>,
    group_of: &HashMap<u32, usize>,
    classes: &ClassSet,
    rng: &mut ChaCha8Rng,
) -> (Vec<Sample>, Vec<Sample>) {
    let mut parts = distribute(
        units(&rest, group_of),
        &[1.0 - VAL_FRACTION, VAL_FRACTION],
        classes,
        rng,
    );
    let val = parts.pop().unwrap_or_default();
    let train = parts.pop().unwrap_or_default();
    (train, val)
}

/// The standard split: 25% test, then 80% train / 20% validation of the rest.
pub fn make_split(dataset: &Dataset, group_of: &HashMap<u32, usize>, seed: u64) -> Split {
    let mut rng = rng_for(seed, "split");
    let mut parts = distribute(
        units(&dataset.samples, group_of),
        &[TEST_FRACTION, 1.0 - TEST_FRACTION],
        &dataset.classes,
        &mut rng,
    );
    let rest = parts.pop().unwrap_or_default();
    let test = parts.pop().unwrap_or_default();
    let (train, val) = train_val(rest, group_of, &dataset.classes, &mut rng);
    Split {
        seed,
        classes: dataset.classes.clone(),
        train,
        val,
        test,
    }
}

/// A class needs at least this many samples for a validation part: a fifth of fewer cells (one
/// to three per class) picks the best epoch by chance.
pub const MIN_PER_CLASS_FOR_VAL: usize = 20;

/// A split without a test part, for a lab's own cells (evaluate on cells kept aside with
/// `leuko evaluate --data`): 80% train / 20% validation, grouped and stratified; when a class has
/// fewer than [`MIN_PER_CLASS_FOR_VAL`] samples, everything is training data and the validation
/// part is empty (training then runs its fixed schedule, with no early stopping).
pub fn make_train_val(dataset: &Dataset, group_of: &HashMap<u32, usize>, seed: u64) -> Split {
    let enough = dataset
        .class_counts()
        .iter()
        .all(|&(_, n)| n >= MIN_PER_CLASS_FOR_VAL);
    let (train, val) = if enough {
        let mut rng = rng_for(seed, "split");
        train_val(
            dataset.samples.clone(),
            group_of,
            &dataset.classes,
            &mut rng,
        )
    } else {
        (dataset.samples.clone(), Vec::new())
    };
    Split {
        seed,
        classes: dataset.classes.clone(),
        train,
        val,
        test: Vec::new(),
    }
}

/// K grouped, stratified folds: fold k is the test part of the k-th split; its
/// validation part is taken from the other folds as in [`make_split`].
pub fn make_folds(
    dataset: &Dataset,
    group_of: &HashMap<u32, usize>,
    seed: u64,
    k: usize,
) -> Result<Vec<Split>> {
    if k < 2 {
        return Err(LeukoError::Invalid(format!(
            "--folds must be at least 2, got {k}"
        )));
    }
    let mut rng = rng_for(seed, "folds");
    let folds = distribute(
        units(&dataset.samples, group_of),
        &vec![1.0 / k as f64; k],
        &dataset.classes,
        &mut rng,
    );
    let mut out = Vec::with_capacity(k);
    for (i, test) in folds.iter().enumerate() {
        let rest: Vec<Sample> = folds
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, f)| f.iter().copied())
            .collect();
        let mut fold_rng = rng_for(seed, &format!("fold-{i}"));
        let (train, val) = train_val(rest, group_of, &dataset.classes, &mut fold_rng);
        out.push(Split {
            seed,
            classes: dataset.classes.clone(),
            train,
            val,
            test: test.clone(),
        });
    }
    Ok(out)
}

/// Random oversampling of a training part: every sample is kept, and each class
/// is topped up with seeded draws (with replacement) until it has as many samples
/// as the largest class. Validation and test are never passed here.
pub fn oversample(train: &[Sample], seed: u64) -> Vec<Sample> {
    let mut rng = rng_for(seed, "oversample");
    let mut by_class: BTreeMap<ClassLabel, Vec<Sample>> = BTreeMap::new();
    for s in train {
        by_class.entry(s.label).or_default().push(*s);
    }
    let largest = by_class.values().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::with_capacity(largest * by_class.len());
    for members in by_class.values() {
        out.extend_from_slice(members);
        for _ in members.len()..largest {
            out.push(members[rng.random_range(0..members.len())]);
        }
    }
    out
}

impl Split {
    pub fn part(&self, part: Part) -> &[Sample] {
        match part {
            Part::Train => &self.train,
            Part::Val => &self.val,
            Part::Test => &self.test,
        }
    }

    /// The split as JSON, one sample per line, in a stable order: the same split
    /// always gives the same bytes. Samples are named by their ids, as BCCD's are.
    pub fn to_json(&self) -> String {
        self.render(None)
    }

    /// [`Split::to_json`] with samples named as `source` names them (see the module
    /// documentation): BCCD by id, a lab's cells by file and box.
    pub fn to_json_for(&self, source: &PhotoSource) -> String {
        self.render(Some(source))
    }

    fn render(&self, source: Option<&PhotoSource>) -> String {
        let mut s = String::new();
        let classes: Vec<String> = self
            .classes
            .labels()
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect();
        let _ = write!(
            s,
            "{{\n  \"seed\": {},\n  \"classes\": [{}]",
            self.seed,
            classes.join(", ")
        );
        for (name, part) in [
            ("train", &self.train),
            ("val", &self.val),
            ("test", &self.test),
        ] {
            let _ = write!(s, ",\n  \"{name}\": [");
            for (i, smp) in part.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                let name = match source {
                    Some(src @ PhotoSource::Cells(_)) => {
                        json_string(&src.sample_name(smp.image_id))
                    }
                    _ => smp.image_id.to_string(),
                };
                let _ = write!(s, "{sep}\n    [{name}, \"{}\"]", smp.label);
            }
            s.push_str(if part.is_empty() { "]" } else { "\n  ]" });
        }
        s.push_str("\n}\n");
        s
    }

    /// Writes the split atomically, samples named by id (BCCD).
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_atomic(path, self.to_json().as_bytes())
    }

    /// Writes the split atomically, samples named as `source` names them.
    pub fn write_for(&self, path: &Path, source: &PhotoSource) -> Result<()> {
        crate::fsutil::write_atomic(path, self.to_json_for(source).as_bytes())
    }

    /// Reads a split file (ours or one made elsewhere) and checks it against the data
    /// set: known classes, ids of usable samples, labels that agree with labels.csv,
    /// no id in two parts.
    pub fn read(path: &Path, dataset: &Dataset) -> Result<Split> {
        let text = std::fs::read_to_string(path).map_err(|e| LeukoError::io(path, e))?;
        Split::parse(&text, path, dataset)
    }

    pub fn parse(text: &str, path: &Path, dataset: &Dataset) -> Result<Split> {
        /// A sample as a split file names it: BCCD's image id, or a cell's file (and box).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Name {
            Id(u32),
            Cell(String),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            seed: Option<u64>,
            classes: Vec<String>,
            train: Vec<(Name, String)>,
            val: Vec<(Name, String)>,
            test: Vec<(Name, String)>,
        }
        let bad = |message: String| LeukoError::Split {
            path: path.to_path_buf(),
            message,
        };
        let raw: Raw = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let classes = raw
            .classes
            .iter()
            .map(|c| {
                let label = c.parse::<ClassLabel>()?;
                if label.is_standard() || dataset.classes.contains(label) {
                    Ok(label)
                } else {
                    Err(LeukoError::Invalid(format!(
                        "unknown class {c:?}: the data set's classes are {}",
                        dataset
                            .classes
                            .labels()
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            })
            .collect::<Result<Vec<_>>>()
            .map_err(|e| bad(format!("\"classes\": {e}")))?;
        let classes = ClassSet::new(classes).map_err(|e| bad(format!("\"classes\": {e}")))?;

        let by_name: HashMap<String, u32> = match &dataset.source {
            PhotoSource::Bccd(_) => HashMap::new(),
            PhotoSource::Cells(_) => dataset
                .samples
                .iter()
                .map(|s| (dataset.source.sample_name(s.image_id), s.image_id))
                .collect(),
        };
        let cells = matches!(dataset.source, PhotoSource::Cells(_));
        let mut seen: HashMap<u32, &str> = HashMap::new();
        let mut convert = |name: &'static str, rows: &[(Name, String)]| -> Result<Vec<Sample>> {
            let mut out = Vec::with_capacity(rows.len());
            for (entry, label) in rows {
                let id = match (entry, cells) {
                    (Name::Id(id), false) => id,
                    (Name::Cell(cell), true) => match by_name.get(cell) {
                        Some(id) => id,
                        None => {
                            return Err(bad(format!(
                                "\"{name}\", {cell:?}: not a usable cell of {} (not in it, or \
                                 its class is not selected)",
                                dataset.source.origin().display()
                            )))
                        }
                    },
                    (Name::Id(id), true) => {
                        return Err(bad(format!(
                            "\"{name}\", {id}: the cells of {} are named by their file, not by \
                             a number (this split is for BCCD)",
                            dataset.source.origin().display()
                        )))
                    }
                    (Name::Cell(cell), false) => {
                        return Err(bad(format!(
                            "\"{name}\", {cell:?}: BCCD's photos are named by their image id \
                             (this split is for a labels CSV or class folders)"
                        )))
                    }
                };
                let shown = if cells {
                    format!("{:?}", dataset.source.sample_name(*id))
                } else {
                    format!("image {id}")
                };
                let label: ClassLabel = label
                    .parse()
                    .map_err(|e| bad(format!("\"{name}\", {shown}: {e}")))?;
                if !classes.contains(label) {
                    return Err(bad(format!(
                        "\"{name}\", {shown}: class {label} is not in \"classes\""
                    )));
                }
                if let Some(other) = seen.insert(*id, name) {
                    return Err(bad(format!(
                        "{shown} is in both \"{other}\" and \"{name}\" (a leak)"
                    )));
                }
                match dataset.label_of(*id) {
                    None => {
                        return Err(bad(format!(
                            "\"{name}\", image {id}: not a usable sample of the data set at {} \
                             (unknown id, no image, or not a single-label row)",
                            dataset.source.origin().display()
                        )))
                    }
                    Some(l) if l != label => {
                        return Err(bad(format!(
                            "\"{name}\", {shown}: labelled {label} here but {l} in {}",
                            if cells {
                                dataset.source.origin().display().to_string()
                            } else {
                                "labels.csv".to_string()
                            }
                        )))
                    }
                    Some(_) => {}
                }
                out.push(Sample {
                    image_id: *id,
                    label,
                });
            }
            Ok(out)
        };
        let train = convert("train", &raw.train)?;
        let val = convert("val", &raw.val)?;
        let test = convert("test", &raw.test)?;
        // A lab's cells may be split into training and validation cells only (their test cells
        // kept aside in another file).
        if train.is_empty() || (test.is_empty() && !cells) {
            return Err(bad("\"train\" and \"test\" must not be empty".to_string()));
        }
        Ok(Split {
            seed: raw.seed.unwrap_or(0),
            classes,
            train,
            val,
            test,
        })
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("{text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(counts: &[(ClassLabel, u32)]) -> Vec<Sample> {
        let mut id = 0;
        let mut out = Vec::new();
        for &(label, n) in counts {
            for _ in 0..n {
                out.push(Sample {
                    image_id: id,
                    label,
                });
                id += 1;
            }
        }
        out
    }

    #[test]
    fn distribute_hits_targets_and_keeps_groups_whole() {
        let s = samples(&[
            (ClassLabel::Neutrophil, 206),
            (ClassLabel::Eosinophil, 88),
            (ClassLabel::Lymphocyte, 33),
            (ClassLabel::Monocyte, 20),
        ]);
        // Every 7th sample is paired with the next one.
        let group_of: HashMap<u32, usize> = (0..340u32)
            .step_by(7)
            .flat_map(|i| [(i, i as usize), (i + 1, i as usize)])
            .collect();
        let classes = ClassSet::default_four();
        let mut rng = rng_for(1, "t");
        let parts = distribute(units(&s, &group_of), &[0.25, 0.75], &classes, &mut rng);
        for (p, f) in parts.iter().zip([0.25, 0.75]) {
            for &(c, n) in &[
                (ClassLabel::Neutrophil, 206.0),
                (ClassLabel::Eosinophil, 88.0),
                (ClassLabel::Lymphocyte, 33.0),
                (ClassLabel::Monocyte, 20.0),
            ] {
                let got = p.iter().filter(|x| x.label == c).count() as f64;
                assert!((got - f * n).abs() <= 1.0, "{c}: {got} vs {}", f * n);
            }
        }
        for i in (0..340u32).step_by(7) {
            let in_first = |id| parts[0].iter().any(|x| x.image_id == id);
            assert_eq!(in_first(i), in_first(i + 1), "group {i} straddles parts");
        }
    }

    #[test]
    fn oversampling_balances_classes_and_keeps_every_sample() {
        let s = samples(&[(ClassLabel::Neutrophil, 10), (ClassLabel::Monocyte, 3)]);
        let o = oversample(&s, 7);
        assert_eq!(o.len(), 20);
        for x in &s {
            assert!(o.contains(x));
        }
        assert_eq!(
            o.iter().filter(|x| x.label == ClassLabel::Monocyte).count(),
            10
        );
        assert_eq!(o, oversample(&s, 7), "seeded");
        assert_ne!(o, oversample(&s, 8));
    }

    #[test]
    fn purposes_get_independent_streams() {
        let a: u64 = rng_for(42, "split").random();
        let b: u64 = rng_for(42, "augment").random();
        assert_ne!(a, b);
        assert_eq!(a, rng_for(42, "split").random::<u64>());
    }
}
