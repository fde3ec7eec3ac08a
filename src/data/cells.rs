//! A lab's own labelled cells: a labels CSV or class folders, read into one [`CellTable`].
//!
//! **Labels CSV**: a header with at least `file,class`; `file` relative to the CSV's folder (or
//! absolute); optional `x_min,y_min,x_max,y_max` (the cell's box in photo pixels, max exclusive;
//! a photo with several leukocytes has one row per cell); optional `group` (slide, sample or
//! patient: rows of one group always fall in the same split part). A UTF-8 byte-order mark and
//! CRLF line ends are accepted; header names are case-insensitive.
//!
//! **Class folders**: `DIR/<class>/*.{jpg,jpeg,png,bmp,tif,tiff}` (searched recursively below each
//! class folder), field photos or single-cell crops; files of other kinds are reported and left
//! out.
//!
//! Every row that cannot be used is kept in [`CellTable::problems`] with its line (or file) and
//! the reason; the usable rows are kept.

use super::label::ClassLabel;
use crate::error::{LeukoError, Result};
use crate::imageio::has_image_extension;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// A cell's box in photo pixels (max exclusive), as a labels CSV gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CellBox {
    pub x_min: u32,
    pub y_min: u32,
    pub x_max: u32,
    pub y_max: u32,
}

/// One labelled cell.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledCell {
    /// The photo, as a path that opens (relative paths resolved against the CSV's folder).
    pub photo: PathBuf,
    /// The photo's name as the source gives it (the CSV's `file`, or the path below the
    /// folder), for messages and outputs.
    pub file: String,
    /// `None`: the cell is found in the photo by the isolation (the largest leukocyte).
    pub bbox: Option<CellBox>,
    pub class: ClassLabel,
    /// Slide, sample or patient; `None` when the source says nothing.
    pub group: Option<String>,
}

/// A row or file that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellProblem {
    /// `labels.csv, line 7` or the file's path.
    pub place: String,
    pub message: String,
}

/// The usable cells of a source and what was left out.
#[derive(Debug, Clone, Default)]
pub struct CellTable {
    /// The CSV file or the class-folder root.
    pub origin: PathBuf,
    pub cells: Vec<LabelledCell>,
    pub problems: Vec<CellProblem>,
}

impl CellTable {
    /// Every photo the cells are in, once each, in first-seen order (its index is the photo's
    /// id in a near-duplicate audit), with what its cells are labelled ("NEUTROPHIL", or the
    /// sorted classes of a photo with several cells, joined by ", ").
    pub fn photos(&self) -> (Vec<(u32, PathBuf)>, HashMap<u32, String>) {
        let mut index: HashMap<&PathBuf, u32> = HashMap::new();
        let mut photos = Vec::new();
        let mut classes: HashMap<u32, Vec<&str>> = HashMap::new();
        for c in &self.cells {
            let n = index.len() as u32;
            let id = *index.entry(&c.photo).or_insert_with(|| {
                photos.push((n, c.photo.clone()));
                n
            });
            classes.entry(id).or_default().push(c.class.as_str());
        }
        let labels = classes
            .into_iter()
            .map(|(id, mut v)| {
                v.sort_unstable();
                v.dedup();
                (id, v.join(", "))
            })
            .collect();
        (photos, labels)
    }

    /// The classes the cells name, standard types first (see [`ClassLabel`]'s order).
    pub fn classes(&self) -> Vec<ClassLabel> {
        let mut c: Vec<ClassLabel> = self
            .cells
            .iter()
            .map(|c| c.class)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        c.sort();
        c
    }
}

/// Which kind of source a `--data PATH` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// A labels CSV (`file,class[,x_min,y_min,x_max,y_max][,group]`).
    Csv,
    /// `DIR/<class>/<photos>`.
    Folders,
    /// The BCCD folder (`labels.csv`, `JPEGImages/`, `Annotations/`).
    Bccd,
}

/// The kind of source at `path`: a file is a labels CSV; a folder with `JPEGImages/` is BCCD;
/// any other folder holds class folders.
pub fn detect_kind(path: &Path) -> SourceKind {
    if path.is_file() {
        SourceKind::Csv
    } else if path.join("JPEGImages").is_dir() {
        SourceKind::Bccd
    } else {
        SourceKind::Folders
    }
}

/// Reads a labels CSV (module documentation).
pub fn read_labels_csv(path: &Path) -> Result<CellTable> {
    let bytes = std::fs::read(path).map_err(|e| LeukoError::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_labels_csv(&bytes, path, base)
}

/// Parses a labels CSV; `path` names it in messages, `base` resolves relative `file` paths.
pub fn parse_labels_csv(bytes: &[u8], path: &Path, base: &Path) -> Result<CellTable> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| LeukoError::Csv {
            path: path.to_path_buf(),
            message: format!("cannot read the header: {e}"),
        })?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(file_col), Some(class_col)) = (col("file"), col("class")) else {
        return Err(LeukoError::Csv {
            path: path.to_path_buf(),
            message: format!(
                "the header must name at least the columns file and class (it has: {})",
                headers.join(", ")
            ),
        });
    };
    let box_cols = ["x_min", "y_min", "x_max", "y_max"].map(col);
    let any_box = box_cols.iter().any(Option::is_some);
    if any_box && box_cols.iter().any(Option::is_none) {
        return Err(LeukoError::Csv {
            path: path.to_path_buf(),
            message: "a box needs all four columns x_min, y_min, x_max, y_max".to_string(),
        });
    }
    let group_col = col("group");
    let known = ["file", "class", "x_min", "y_min", "x_max", "y_max", "group"];
    let name = path.display().to_string();
    let mut table = CellTable {
        origin: path.to_path_buf(),
        ..CellTable::default()
    };
    for unknown in headers.iter().filter(|h| !known.contains(&h.as_str())) {
        table.problems.push(CellProblem {
            place: format!("{name}, line 1"),
            message: format!(
                "unknown column {unknown:?} ignored (known: {})",
                known.join(", ")
            ),
        });
    }
    let mut seen: HashMap<(String, Option<CellBox>), (u64, ClassLabel)> = HashMap::new();
    let mut sizes: HashMap<PathBuf, Option<(u32, u32)>> = HashMap::new();
    for (i, record) in reader.records().enumerate() {
        let line = i as u64 + 2;
        let place = format!("{name}, line {line}");
        let mut problem = |message: String| {
            table.problems.push(CellProblem {
                place: place.clone(),
                message,
            })
        };
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                problem(format!("malformed row: {e}"));
                continue;
            }
        };
        let field = |c: usize| record.get(c).unwrap_or("").trim();
        let file = field(file_col);
        if file.is_empty() {
            problem("empty file".to_string());
            continue;
        }
        let class = match field(class_col) {
            "" => {
                problem(format!("{file}: empty class"));
                continue;
            }
            c => match ClassLabel::named(c) {
                Ok(c) => c,
                Err(e) => {
                    problem(format!("{file}: {e}"));
                    continue;
                }
            },
        };
        let photo = resolve(base, file);
        let size = *sizes
            .entry(photo.clone())
            .or_insert_with(|| image::image_dimensions(&photo).ok());
        let Some((w, h)) = size else {
            let why = if photo.is_file() {
                "not a readable image"
            } else {
                "no such file"
            };
            problem(format!("{file}: {why} ({})", photo.display()));
            continue;
        };
        let bbox = if any_box {
            let v: Vec<&str> = box_cols
                .iter()
                .map(|c| field(c.expect("all four box columns")))
                .collect();
            if v.iter().all(|s| s.is_empty()) {
                None
            } else {
                match parse_box(&v, w, h) {
                    Ok(b) => Some(b),
                    Err(why) => {
                        problem(format!("{file}: {why}"));
                        continue;
                    }
                }
            }
        } else {
            None
        };
        let key = (file.to_string(), bbox);
        if let Some(&(first, first_class)) = seen.get(&key) {
            let what = if first_class == class {
                "the same cell again".to_string()
            } else {
                format!("the same cell labelled {first_class} there: a label conflict")
            };
            problem(format!(
                "{file}: {what} as on line {first}; this row is left out"
            ));
            continue;
        }
        seen.insert(key, (line, class));
        let group = group_col
            .map(field)
            .filter(|g| !g.is_empty())
            .map(str::to_string);
        table.cells.push(LabelledCell {
            photo,
            file: file.to_string(),
            bbox,
            class,
            group,
        });
    }
    Ok(table)
}

fn resolve(base: &Path, file: &str) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A box from its four fields, inside a `w` x `h` photo and at least 2 pixels on each side.
fn parse_box(v: &[&str], w: u32, h: u32) -> std::result::Result<CellBox, String> {
    let mut n = [0u32; 4];
    for (k, s) in v.iter().enumerate() {
        n[k] = s
            .parse::<u32>()
            .map_err(|_| format!("box field {s:?} is not a whole number of pixels"))?;
    }
    let [x_min, y_min, x_max, y_max] = n;
    if x_max < x_min + 2 || y_max < y_min + 2 {
        return Err(format!(
            "box {x_min},{y_min},{x_max},{y_max} is empty or smaller than 2x2 pixels"
        ));
    }
    if x_max > w || y_max > h {
        return Err(format!(
            "box {x_min},{y_min},{x_max},{y_max} lies outside the {w}x{h} photo"
        ));
    }
    Ok(CellBox {
        x_min,
        y_min,
        x_max,
        y_max,
    })
}

/// Reads class folders (module documentation).
pub fn read_class_folders(root: &Path) -> Result<CellTable> {
    let entries = std::fs::read_dir(root).map_err(|e| LeukoError::io(root, e))?;
    let mut table = CellTable {
        origin: root.to_path_buf(),
        ..CellTable::default()
    };
    let mut folders = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| LeukoError::io(root, e))?.path();
        if path.is_dir() {
            folders.push(path);
        } else {
            table.problems.push(CellProblem {
                place: path.display().to_string(),
                message: "not in a class folder; left out".to_string(),
            });
        }
    }
    folders.sort();
    for folder in folders {
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let class = match ClassLabel::named(&name) {
            Ok(c) => c,
            Err(e) => {
                table.problems.push(CellProblem {
                    place: folder.display().to_string(),
                    message: format!("the folder's name is not a class: {e}"),
                });
                continue;
            }
        };
        let mut files = Vec::new();
        walk(&folder, &mut files, &mut table.problems);
        files.sort();
        for photo in files {
            let file = photo
                .strip_prefix(root)
                .unwrap_or(&photo)
                .display()
                .to_string();
            if image::image_dimensions(&photo).is_err() {
                table.problems.push(CellProblem {
                    place: photo.display().to_string(),
                    message: "not a readable image".to_string(),
                });
                continue;
            }
            table.cells.push(LabelledCell {
                photo,
                file,
                bbox: None,
                class,
                group: None,
            });
        }
    }
    Ok(table)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>, problems: &mut Vec<CellProblem>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(CellProblem {
                place: dir.display().to_string(),
                message: format!("cannot list the folder: {e}"),
            });
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, found, problems);
        } else if has_image_extension(&path) {
            found.push(path);
        } else {
            problems.push(CellProblem {
                place: path.display().to_string(),
                message: "not a photo (extension); left out".to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder with a 40x30 PNG `a.png` and a text file.
    fn photos() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        image::RgbImage::from_pixel(40, 30, image::Rgb([200, 180, 190]))
            .save(dir.path().join("a.png"))
            .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a photo").unwrap();
        dir
    }

    fn parse(dir: &Path, text: &str) -> CellTable {
        parse_labels_csv(text.as_bytes(), &dir.join("labels.csv"), dir).unwrap()
    }

    #[test]
    fn csv_keeps_usable_rows_and_reports_the_rest_by_line() {
        let d = photos();
        let t = parse(
            d.path(),
            "\u{feff}File,Class,x_min,y_min,x_max,y_max,group,stain\r\n\
             a.png,neutrophil,1,1,20,20,slide1,x\r\n\
             a.png,Band neutrophil,20,5,39,29,slide1,x\r\n\
             missing.png,MONOCYTE,,,,,,\r\n\
             a.png,,,,,,,\r\n\
             a.png,LYMPHOCYTE,30,20,60,29,,\r\n\
             a.png,EOSINOPHIL,1,1,20,20,,\r\n\
             a.png,NEUTROPHIL,,,,,s2,\r\n\
             notes.txt,MONOCYTE,,,,,,\r\n",
        );
        assert_eq!(t.cells.len(), 3, "{:?}", t.problems);
        assert_eq!(t.cells[0].class, ClassLabel::Neutrophil);
        assert_eq!(
            t.cells[0].bbox,
            Some(CellBox {
                x_min: 1,
                y_min: 1,
                x_max: 20,
                y_max: 20
            })
        );
        assert_eq!(t.cells[0].group.as_deref(), Some("slide1"));
        assert_eq!(t.cells[1].class.as_str(), "BAND_NEUTROPHIL");
        assert_eq!(t.cells[2].bbox, None);
        assert_eq!(t.cells[2].group.as_deref(), Some("s2"));
        let said: Vec<String> = t
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.place, p.message))
            .collect();
        let has =
            |line: &str, what: &str| said.iter().any(|s| s.contains(line) && s.contains(what));
        assert!(has("line 1", "unknown column \"stain\""), "{said:?}");
        assert!(has("line 4", "missing.png: no such file"), "{said:?}");
        assert!(has("line 5", "empty class"), "{said:?}");
        assert!(has("line 6", "outside the 40x30 photo"), "{said:?}");
        assert!(has("line 7", "label conflict"), "{said:?}");
        assert!(has("line 9", "not a readable image"), "{said:?}");
        assert_eq!(t.problems.len(), 6, "{said:?}");
        let classes: Vec<&str> = t.classes().iter().map(|c| c.as_str()).collect();
        assert_eq!(classes, ["NEUTROPHIL", "BAND_NEUTROPHIL"]);
    }

    #[test]
    fn csv_without_file_or_class_column_is_an_error_naming_the_file() {
        let d = photos();
        let e = parse_labels_csv(b"image,label\na.png,x\n", &d.path().join("l.csv"), d.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("l.csv") && e.contains("file and class"), "{e}");
        let e = parse_labels_csv(b"file,class,x_min\n", &d.path().join("l.csv"), d.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("all four"), "{e}");
    }

    #[test]
    fn class_folders_walk_nested_folders_and_report_other_files() {
        let d = tempfile::tempdir().unwrap();
        let px = image::RgbImage::from_pixel(12, 12, image::Rgb([10, 20, 30]));
        std::fs::create_dir_all(d.path().join("Blast/slide2")).unwrap();
        std::fs::create_dir_all(d.path().join("monocyte")).unwrap();
        px.save(d.path().join("Blast/b1.png")).unwrap();
        px.save(d.path().join("Blast/slide2/b2.bmp")).unwrap();
        px.save(d.path().join("monocyte/m1.png")).unwrap();
        std::fs::write(d.path().join("monocyte/readme.md"), "x").unwrap();
        std::fs::write(d.path().join("monocyte/broken.jpg"), "not a jpeg").unwrap();
        std::fs::write(d.path().join("stray.png"), "x").unwrap();
        let t = read_class_folders(d.path()).unwrap();
        let got: Vec<(String, &str)> = t
            .cells
            .iter()
            .map(|c| (c.file.replace('\\', "/"), c.class.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("Blast/b1.png".to_string(), "BLAST"),
                ("Blast/slide2/b2.bmp".to_string(), "BLAST"),
                ("monocyte/m1.png".to_string(), "MONOCYTE"),
            ]
        );
        assert_eq!(t.problems.len(), 3, "{:?}", t.problems);
        assert_eq!(detect_kind(d.path()), SourceKind::Folders);
    }
}
