//! Leukocyte classes and the set of classes a run works with.

use crate::error::{LeukoError, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A leukocyte type as labelled in BCCD (`labels.csv` spells them in capitals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ClassLabel {
    Neutrophil,
    Eosinophil,
    Lymphocyte,
    Monocyte,
    Basophil,
}

impl ClassLabel {
    /// Every class, in the data set's customary order (also the model's output order).
    pub const ALL: [ClassLabel; 5] = [
        ClassLabel::Neutrophil,
        ClassLabel::Eosinophil,
        ClassLabel::Lymphocyte,
        ClassLabel::Monocyte,
        ClassLabel::Basophil,
    ];

    /// The order a haematologist reads a differential count in.
    pub const CLINICAL_ORDER: [ClassLabel; 5] = [
        ClassLabel::Neutrophil,
        ClassLabel::Lymphocyte,
        ClassLabel::Monocyte,
        ClassLabel::Eosinophil,
        ClassLabel::Basophil,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClassLabel::Neutrophil => "NEUTROPHIL",
            ClassLabel::Eosinophil => "EOSINOPHIL",
            ClassLabel::Lymphocyte => "LYMPHOCYTE",
            ClassLabel::Monocyte => "MONOCYTE",
            ClassLabel::Basophil => "BASOPHIL",
        }
    }

    /// Lower-case name, as used in CSV column names (`p_neutrophil`).
    pub fn lower(self) -> &'static str {
        match self {
            ClassLabel::Neutrophil => "neutrophil",
            ClassLabel::Eosinophil => "eosinophil",
            ClassLabel::Lymphocyte => "lymphocyte",
            ClassLabel::Monocyte => "monocyte",
            ClassLabel::Basophil => "basophil",
        }
    }
}

impl fmt::Display for ClassLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClassLabel {
    type Err = LeukoError;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        ClassLabel::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| {
                LeukoError::Invalid(format!(
                    "unknown class {t:?} (known: NEUTROPHIL, EOSINOPHIL, LYMPHOCYTE, MONOCYTE, BASOPHIL)"
                ))
            })
    }
}

/// The ordered classes a run distinguishes; a class's position is its model output index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClassSet(Vec<ClassLabel>);

impl ClassSet {
    /// Builds a set from distinct classes; order is kept.
    pub fn new(classes: Vec<ClassLabel>) -> Result<Self> {
        if classes.len() < 2 {
            return Err(LeukoError::Invalid(
                "at least two classes are needed".to_string(),
            ));
        }
        for (i, c) in classes.iter().enumerate() {
            if classes[..i].contains(c) {
                return Err(LeukoError::Invalid(format!("class {c} is listed twice")));
            }
        }
        Ok(ClassSet(classes))
    }

    /// NEUTROPHIL, EOSINOPHIL, LYMPHOCYTE, MONOCYTE: BASOPHIL has only 3 examples in
    /// BCCD, too few to train or test on.
    pub fn default_four() -> Self {
        ClassSet(ClassLabel::ALL[..4].to_vec())
    }

    /// Parses a comma-separated list such as `NEUTROPHIL,EOSINOPHIL,BASOPHIL`.
    pub fn parse_list(s: &str) -> Result<Self> {
        let classes = s
            .split(',')
            .filter(|t| !t.trim().is_empty())
            .map(ClassLabel::from_str)
            .collect::<Result<Vec<_>>>()?;
        ClassSet::new(classes)
    }

    pub fn labels(&self) -> &[ClassLabel] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, c: ClassLabel) -> bool {
        self.0.contains(&c)
    }

    pub fn index_of(&self, c: ClassLabel) -> Option<usize> {
        self.0.iter().position(|&x| x == c)
    }
}

impl Default for ClassSet {
    fn default() -> Self {
        ClassSet::default_four()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_insensitively_and_rejects_unknown() {
        assert_eq!(
            " neutrophil ".parse::<ClassLabel>().unwrap(),
            ClassLabel::Neutrophil
        );
        let err = "PLATELET".parse::<ClassLabel>().unwrap_err().to_string();
        assert!(err.contains("PLATELET"), "{err}");
    }

    #[test]
    fn class_set_rejects_duplicates_and_single_class() {
        assert!(ClassSet::parse_list("NEUTROPHIL,neutrophil").is_err());
        assert!(ClassSet::parse_list("NEUTROPHIL").is_err());
        let s = ClassSet::parse_list("MONOCYTE,BASOPHIL").unwrap();
        assert_eq!(s.index_of(ClassLabel::Basophil), Some(1));
        assert_eq!(s.index_of(ClassLabel::Neutrophil), None);
    }

    #[test]
    fn serde_uses_upper_case_names() {
        let j = serde_json::to_string(&ClassLabel::Eosinophil).unwrap();
        assert_eq!(j, "\"EOSINOPHIL\"");
    }
}
