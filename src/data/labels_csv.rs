//! Parsing of the Kaggle `labels.csv` (header `,Image,Category`).

use super::label::ClassLabel;
use crate::error::{LeukoError, Result};
use std::path::Path;

/// What `labels.csv` says about one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Category {
    /// Empty category: nobody labelled the image.
    Unlabelled,
    Single(ClassLabel),
    /// A quoted list such as `"NEUTROPHIL, EOSINOPHIL"`: the photo shows several
    /// leukocytes and the row does not say which is which.
    Multi(Vec<ClassLabel>),
}

/// One parsed row of `labels.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRow {
    /// 1-based line number in the file, for messages.
    pub line: u64,
    pub image_id: u32,
    pub category: Category,
}

/// A row that could not be parsed; the rest of the file is still used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    pub line: u64,
    pub message: String,
}

/// All rows of a labels file: the parsed ones and the malformed ones.
#[derive(Debug, Clone, Default)]
pub struct LabelsFile {
    pub rows: Vec<LabelRow>,
    pub problems: Vec<RowProblem>,
}

/// Reads `labels.csv`. A missing or headerless file is an error; a malformed row
/// is recorded in `problems` (with its line) and skipped.
pub fn read_labels(path: &Path) -> Result<LabelsFile> {
    let bytes = std::fs::read(path).map_err(|e| LeukoError::io(path, e))?;
    parse_labels(&bytes, path)
}

/// Parses labels from bytes; `path` is used only in messages.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<LabelsFile> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(bytes);
    let headers = reader.headers().map_err(|e| LeukoError::Csv {
        path: path.to_path_buf(),
        message: format!("cannot read header: {e}"),
    })?;
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(image_col), Some(cat_col)) = (col("Image"), col("Category")) else {
        return Err(LeukoError::Csv {
            path: path.to_path_buf(),
            message: format!(
                "header must name the columns Image and Category (Kaggle format `,Image,Category`), found {:?}",
                headers.iter().collect::<Vec<_>>()
            ),
        });
    };

    let mut out = LabelsFile::default();
    let mut seen = std::collections::HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                out.problems.push(RowProblem {
                    line,
                    message: e.to_string(),
                });
                continue;
            }
        };
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let Some(id_field) = record.get(image_col) else {
            out.problems.push(RowProblem {
                line,
                message: format!("missing Image column (row has {} fields)", record.len()),
            });
            continue;
        };
        let image_id = match id_field.trim().parse::<u32>() {
            Ok(id) => id,
            Err(_) => {
                out.problems.push(RowProblem {
                    line,
                    message: format!("Image {id_field:?} is not a non-negative integer"),
                });
                continue;
            }
        };
        if let Some(first) = seen.insert(image_id, line) {
            out.problems.push(RowProblem {
                line,
                message: format!("image {image_id} is labelled again (first on line {first}); this row is ignored"),
            });
            continue;
        }
        let raw = record.get(cat_col).unwrap_or("");
        match parse_category(raw) {
            Ok(category) => out.rows.push(LabelRow {
                line,
                image_id,
                category,
            }),
            Err(message) => out.problems.push(RowProblem { line, message }),
        }
    }
    Ok(out)
}

fn parse_category(raw: &str) -> std::result::Result<Category, String> {
    let parts: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let labels = parts
        .iter()
        .map(|p| ClassLabel::standard(p).map_err(|e| format!("Category: {e}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(match labels.len() {
        0 => Category::Unlabelled,
        1 => Category::Single(labels[0]),
        _ => Category::Multi(labels),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> LabelsFile {
        parse_labels(s.as_bytes(), Path::new("labels.csv")).unwrap()
    }

    #[test]
    fn reads_single_multi_and_empty() {
        let f = parse(
            ",Image,Category\n,0,NEUTROPHIL\n,1,\"NEUTROPHIL, EOSINOPHIL\"\n,2,\n,3,monocyte\n",
        );
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        let cats: Vec<_> = f.rows.iter().map(|r| r.category.clone()).collect();
        assert_eq!(
            cats,
            vec![
                Category::Single(ClassLabel::Neutrophil),
                Category::Multi(vec![ClassLabel::Neutrophil, ClassLabel::Eosinophil]),
                Category::Unlabelled,
                Category::Single(ClassLabel::Monocyte),
            ]
        );
        assert_eq!(f.rows[0].line, 2);
    }

    #[test]
    fn malformed_rows_are_reported_with_their_line_and_skipped() {
        let f = parse(",Image,Category\n,x7,NEUTROPHIL\n,8,PLATELET\n,9,LYMPHOCYTE\n,9,MONOCYTE\n");
        assert_eq!(f.rows.len(), 1);
        assert_eq!(f.rows[0].image_id, 9);
        let lines: Vec<u64> = f.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![2, 3, 5]);
        assert!(f.problems[1].message.contains("PLATELET"));
        assert!(f.problems[2].message.contains("first on line 4"));
    }

    #[test]
    fn bad_header_is_an_error_naming_the_file() {
        let err = parse_labels(b"id;label\n1;X\n", Path::new("/d/labels.csv")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/d/labels.csv") && msg.contains("Category"),
            "{msg}"
        );
    }
}
