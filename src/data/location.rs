//! Where the BCCD data set lives: `--data DIR`, else `LEUKO_DATA`, else
//! `../shared/data/bccd` relative to the current directory.

use crate::error::{LeukoError, Result};
use std::path::{Path, PathBuf};

/// Environment variable that names the data directory.
pub const DATA_ENV: &str = "LEUKO_DATA";
/// Fallback location, relative to the current directory.
pub const DEFAULT_DATA_DIR: &str = "../shared/data/bccd";

/// A directory laid out like BCCD's `dataset-master`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Resolves the data location from the command line value and the environment.
    pub fn resolve(cli: Option<&Path>) -> Result<DataDir> {
        let env = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty());
        let (root, origin) = match (cli, env) {
            (Some(p), _) => (p.to_path_buf(), "--data"),
            (None, Some(v)) => (PathBuf::from(v), DATA_ENV),
            (None, None) => (PathBuf::from(DEFAULT_DATA_DIR), "the default location"),
        };
        DataDir::open(&root).map_err(|why| {
            LeukoError::DataNotFound(format!(
                "no BCCD data set at {} (from {origin}): {why}.\n\
                 leuko needs the public BCCD data set and downloads nothing itself:\n\
                 \x20 1. images and VOC annotations: the BCCD_Dataset repository (Shenggan/BCCD_Dataset on GitHub),\n\
                 \x20    folders BCCD/JPEGImages and BCCD/Annotations;\n\
                 \x20 2. labels.csv: the Kaggle \"blood cells\" data set (paultimothymooney/blood-cells), dataset-master/labels.csv.\n\
                 Put them in one folder as JPEGImages/, Annotations/ and labels.csv, then pass it with --data DIR\n\
                 or set {DATA_ENV}=DIR (default: {DEFAULT_DATA_DIR}).",
                root.display()
            ))
        })
    }

    /// Opens `root` if it has `labels.csv` and `JPEGImages/`; says what is missing otherwise.
    pub fn open(root: &Path) -> std::result::Result<DataDir, String> {
        if !root.is_dir() {
            return Err("the folder does not exist".to_string());
        }
        let missing: Vec<&str> = ["labels.csv", "JPEGImages"]
            .into_iter()
            .filter(|n| !root.join(n).exists())
            .collect();
        if !missing.is_empty() {
            return Err(format!("it lacks {}", missing.join(" and ")));
        }
        Ok(DataDir {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn labels_csv(&self) -> PathBuf {
        self.root.join("labels.csv")
    }

    pub fn image_path(&self, image_id: u32) -> PathBuf {
        self.root
            .join("JPEGImages")
            .join(format!("BloodImage_{image_id:05}.jpg"))
    }

    pub fn annotation_path(&self, image_id: u32) -> PathBuf {
        self.root
            .join("Annotations")
            .join(format!("BloodImage_{image_id:05}.xml"))
    }

    /// Ids of every `BloodImage_NNNNN.jpg` in `JPEGImages/`, sorted.
    pub fn image_ids_on_disk(&self) -> Result<Vec<u32>> {
        let dir = self.root.join("JPEGImages");
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| LeukoError::io(&dir, e))? {
            let entry = entry.map_err(|e| LeukoError::io(&dir, e))?;
            if let Some(id) = parse_image_id(&entry.file_name().to_string_lossy()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }
}

/// `BloodImage_00042.jpg` → 42.
pub fn parse_image_id(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix("BloodImage_")?;
    let digits = rest.strip_suffix(".jpg")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_image_file_names() {
        assert_eq!(parse_image_id("BloodImage_00042.jpg"), Some(42));
        assert_eq!(parse_image_id("BloodImage_00042.png"), None);
        assert_eq!(parse_image_id("BloodImage_.jpg"), None);
    }

    #[test]
    fn missing_folder_explains_how_to_get_the_data() {
        let msg = DataDir::resolve(Some(Path::new("/nonexistent/bccd")))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("/nonexistent/bccd"), "{msg}");
        assert!(
            msg.contains("BCCD_Dataset") && msg.contains("labels.csv"),
            "{msg}"
        );
    }
}
