//! The usable samples of a data source (the BCCD folder, or a lab's labelled cells), and every
//! row that is not used, with its reason.

use super::cells::{CellBox, CellTable, LabelledCell};
use super::label::{ClassLabel, ClassSet};
use super::labels_csv::{read_labels, Category};
use super::location::DataDir;
use crate::error::Result;
use crate::imageio;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// Where a data set's photos are: the BCCD folder (samples are its image ids) or a table of
/// labelled cells (samples are row numbers of [`CellTable::cells`]).
#[derive(Debug, Clone)]
pub enum PhotoSource {
    Bccd(DataDir),
    Cells(Arc<CellTable>),
}

impl PhotoSource {
    /// The photo of sample `id`.
    pub fn photo_path(&self, id: u32) -> PathBuf {
        match self {
            PhotoSource::Bccd(dir) => dir.image_path(id),
            PhotoSource::Cells(t) => t.cells[id as usize].photo.clone(),
        }
    }

    /// The labelled cell of sample `id`, for a table of cells.
    pub fn cell(&self, id: u32) -> Option<&LabelledCell> {
        match self {
            PhotoSource::Bccd(_) => None,
            PhotoSource::Cells(t) => t.cells.get(id as usize),
        }
    }

    /// The box a label gives for sample `id` (none: the isolation finds the cell).
    pub fn cell_box(&self, id: u32) -> Option<CellBox> {
        self.cell(id).and_then(|c| c.bbox)
    }

    /// Sample `id`'s name for people: BCCD's image id, or the cell's file (and box).
    pub fn sample_name(&self, id: u32) -> String {
        match self.cell(id) {
            Some(c) => match c.bbox {
                Some(b) => format!(
                    "{} [{},{},{},{}]",
                    c.file, b.x_min, b.y_min, b.x_max, b.y_max
                ),
                None => c.file.clone(),
            },
            None => format!("image {id}"),
        }
    }

    /// The BCCD folder, or the CSV / folder the cells were read from.
    pub fn origin(&self) -> PathBuf {
        match self {
            PhotoSource::Bccd(dir) => dir.root().to_path_buf(),
            PhotoSource::Cells(t) => t.origin.clone(),
        }
    }

    /// The BCCD folder, when this is BCCD.
    pub fn bccd(&self) -> Option<&DataDir> {
        match self {
            PhotoSource::Bccd(dir) => Some(dir),
            PhotoSource::Cells(_) => None,
        }
    }
}

/// One labelled photo the model can learn from or be tested on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Sample {
    pub image_id: u32,
    pub label: ClassLabel,
}

/// Why a row of `labels.csv` is not used. Label-based reasons are checked before
/// the image file, so each row is counted once, under its first reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionReason {
    MalformedRow,
    Unlabelled,
    MultiLabel,
    ClassNotSelected,
    ImageMissing,
    ImageUnreadable,
}

impl ExclusionReason {
    pub fn describe(self) -> &'static str {
        match self {
            ExclusionReason::MalformedRow => "malformed row",
            ExclusionReason::Unlabelled => "unlabelled",
            ExclusionReason::MultiLabel => "several leukocytes (multi-label)",
            ExclusionReason::ClassNotSelected => "class not selected",
            ExclusionReason::ImageMissing => "image file missing",
            ExclusionReason::ImageUnreadable => "image unreadable",
        }
    }
}

/// A row that was not used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Excluded {
    /// 1-based line in `labels.csv`.
    pub line: u64,
    pub image_id: Option<u32>,
    pub reason: ExclusionReason,
    pub detail: String,
}

/// The usable samples of a data folder for a class set.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub source: PhotoSource,
    pub classes: ClassSet,
    /// Sorted by image id.
    pub samples: Vec<Sample>,
    /// Sorted by line.
    pub excluded: Vec<Excluded>,
    /// Photos in `JPEGImages/` that no row of `labels.csv` mentions.
    pub images_without_row: Vec<u32>,
}

impl Dataset {
    /// Reads `labels.csv` and checks that every selected image exists and decodes.
    pub fn load(dir: &DataDir, classes: &ClassSet) -> Result<Dataset> {
        let labels_path = dir.labels_csv();
        let labels = read_labels(&labels_path)?;
        let mut excluded: Vec<Excluded> = labels
            .problems
            .iter()
            .map(|p| Excluded {
                line: p.line,
                image_id: None,
                reason: ExclusionReason::MalformedRow,
                detail: format!("{}, line {}: {}", labels_path.display(), p.line, p.message),
            })
            .collect();

        let mut candidates = Vec::new();
        for row in &labels.rows {
            let exclude = |reason, detail: String| Excluded {
                line: row.line,
                image_id: Some(row.image_id),
                reason,
                detail,
            };
            match &row.category {
                Category::Unlabelled => {
                    excluded.push(exclude(ExclusionReason::Unlabelled, String::new()))
                }
                Category::Multi(list) => excluded.push(exclude(
                    ExclusionReason::MultiLabel,
                    list.iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                )),
                Category::Single(c) if !classes.contains(*c) => {
                    excluded.push(exclude(ExclusionReason::ClassNotSelected, c.to_string()))
                }
                Category::Single(c) => candidates.push((row.line, row.image_id, *c)),
            }
        }

        // Decoding every selected photo (≈ 1 s for BCCD on 2 cores) is what makes
        // "image unreadable" a counted reason rather than a crash later in training.
        let checked: Vec<(u64, u32, ClassLabel, Option<Excluded>)> = candidates
            .par_iter()
            .map(|&(line, image_id, label)| {
                let path = dir.image_path(image_id);
                let problem = if !path.is_file() {
                    Some((ExclusionReason::ImageMissing, path.display().to_string()))
                } else {
                    imageio::load_rgb(&path)
                        .err()
                        .map(|e| (ExclusionReason::ImageUnreadable, e.to_string()))
                };
                let problem = problem.map(|(reason, detail)| Excluded {
                    line,
                    image_id: Some(image_id),
                    reason,
                    detail,
                });
                (line, image_id, label, problem)
            })
            .collect();

        let mut samples = Vec::new();
        for (_, image_id, label, problem) in checked {
            match problem {
                Some(p) => excluded.push(p),
                None => samples.push(Sample { image_id, label }),
            }
        }
        samples.sort();
        excluded.sort_by_key(|e| e.line);

        let mentioned: std::collections::HashSet<u32> =
            labels.rows.iter().map(|r| r.image_id).collect();
        let images_without_row = dir
            .image_ids_on_disk()?
            .into_iter()
            .filter(|id| !mentioned.contains(id))
            .collect();

        Ok(Dataset {
            source: PhotoSource::Bccd(dir.clone()),
            classes: classes.clone(),
            samples,
            excluded,
            images_without_row,
        })
    }

    /// The cells of a table as a data set: every cell of `classes` (all the table's classes when
    /// `None`) is a sample, numbered by its row. Cells of other classes are left out and counted
    /// under [`ExclusionReason::ClassNotSelected`].
    pub fn from_cells(table: CellTable, classes: Option<&ClassSet>) -> Result<Dataset> {
        let classes = match classes {
            Some(c) => c.clone(),
            None => ClassSet::new(table.classes()).map_err(|e| {
                crate::LeukoError::Invalid(format!("{}: {e}", table.origin.display()))
            })?,
        };
        let mut samples = Vec::new();
        let mut excluded = Vec::new();
        for (i, c) in table.cells.iter().enumerate() {
            if classes.contains(c.class) {
                samples.push(Sample {
                    image_id: i as u32,
                    label: c.class,
                });
            } else {
                excluded.push(Excluded {
                    line: 0,
                    image_id: Some(i as u32),
                    reason: ExclusionReason::ClassNotSelected,
                    detail: format!("{} ({})", c.file, c.class),
                });
            }
        }
        Ok(Dataset {
            source: PhotoSource::Cells(Arc::new(table)),
            classes,
            samples,
            excluded,
            images_without_row: Vec::new(),
        })
    }

    /// For a labels CSV or class folders: each cell's group (cells of one group always fall in
    /// the same split part). Cells share a group when they share a `group` value, else when
    /// they are in one photo, and also when their photos are near-duplicates of one another
    /// (`duplicates`: photo id of [`crate::data::cells::CellTable::photos`] to its group of
    /// near-duplicate photos, from `crate::audit::AuditReport::group_of`). `None` for BCCD.
    pub fn cell_groups(
        &self,
        duplicates: Option<&HashMap<u32, usize>>,
    ) -> Option<HashMap<u32, usize>> {
        let PhotoSource::Cells(t) = &self.source else {
            return None;
        };
        let (photos, _) = t.photos();
        let photo_id: HashMap<&std::path::PathBuf, u32> =
            photos.iter().map(|(id, p)| (p, *id)).collect();
        let no_duplicates = HashMap::new();
        let dup_of = duplicates.unwrap_or(&no_duplicates);
        // Union-find over keys: a cell joins its group (or photo) and its photo's duplicate group.
        let mut parent: Vec<usize> = Vec::new();
        let mut key_index: HashMap<String, usize> = HashMap::new();
        fn find(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        let mut node = |key: String, parent: &mut Vec<usize>| -> usize {
            *key_index.entry(key).or_insert_with(|| {
                parent.push(parent.len());
                parent.len() - 1
            })
        };
        let mut cell_node = Vec::with_capacity(self.samples.len());
        for s in &self.samples {
            let c = &t.cells[s.image_id as usize];
            let own = match &c.group {
                Some(g) => format!("group:{g}"),
                None => format!("photo:{}", c.photo.display()),
            };
            let a = node(own, &mut parent);
            if let Some(g) = photo_id.get(&c.photo).and_then(|id| dup_of.get(id)) {
                let b = node(format!("duplicates:{g}"), &mut parent);
                let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                parent[ra.max(rb)] = ra.min(rb);
            }
            cell_node.push((s.image_id, a));
        }
        let mut numbered: HashMap<usize, usize> = HashMap::new();
        let mut out = HashMap::new();
        for (id, a) in cell_node {
            let root = find(&mut parent, a);
            let n = numbered.len();
            out.insert(id, *numbered.entry(root).or_insert(n));
        }
        Some(out)
    }

    /// Samples per class, in the class set's order.
    pub fn class_counts(&self) -> Vec<(ClassLabel, usize)> {
        class_counts(&self.samples, &self.classes)
    }

    /// Excluded rows per reason.
    pub fn excluded_counts(&self) -> BTreeMap<ExclusionReason, usize> {
        let mut m = BTreeMap::new();
        for e in &self.excluded {
            *m.entry(e.reason).or_insert(0) += 1;
        }
        m
    }

    /// The label of a usable sample.
    pub fn label_of(&self, image_id: u32) -> Option<ClassLabel> {
        self.samples
            .binary_search_by_key(&image_id, |s| s.image_id)
            .ok()
            .map(|i| self.samples[i].label)
    }
}

/// Counts samples per class of `classes`, in its order.
pub fn class_counts(samples: &[Sample], classes: &ClassSet) -> Vec<(ClassLabel, usize)> {
    classes
        .labels()
        .iter()
        .map(|&c| (c, samples.iter().filter(|s| s.label == c).count()))
        .collect()
}
