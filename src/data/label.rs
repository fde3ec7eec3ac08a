//! Leukocyte classes and the set of classes a run works with.

use crate::error::{LeukoError, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A cell class: one of the five standard leukocyte types or any class a lab's labels name
/// (`BAND_NEUTROPHIL`, `BLAST`, `SMUDGE`, ...). Stored upper case; case-insensitive when parsed.
///
/// Names are interned (a process holds each distinct name once), so a label is a `Copy` handle
/// that compares, hashes and sorts cheaply. The standard types sort first, in the data set's
/// customary order ([`ClassLabel::ALL`]), then other classes alphabetically.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClassLabel(&'static str);

#[allow(non_upper_case_globals)]
impl ClassLabel {
    pub const Neutrophil: ClassLabel = ClassLabel("NEUTROPHIL");
    pub const Eosinophil: ClassLabel = ClassLabel("EOSINOPHIL");
    pub const Lymphocyte: ClassLabel = ClassLabel("LYMPHOCYTE");
    pub const Monocyte: ClassLabel = ClassLabel("MONOCYTE");
    pub const Basophil: ClassLabel = ClassLabel("BASOPHIL");

    /// The five standard types, in the data set's customary order (also the default model's
    /// output order).
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

    /// The class of a name: trimmed, upper case, inner spaces and hyphens as `_`; letters,
    /// digits and `_` only, at most 64 characters.
    pub fn named(name: &str) -> Result<ClassLabel> {
        let t = name.trim();
        if t.is_empty() {
            return Err(LeukoError::Invalid("an empty class name".to_string()));
        }
        let upper: String = t
            .chars()
            .map(|c| match c {
                ' ' | '-' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        if upper.chars().count() > 64
            || !upper.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(LeukoError::Invalid(format!(
                "class name {t:?}: use letters, digits, '_', '-' or spaces (at most 64 characters)"
            )));
        }
        if let Some(&std) = ClassLabel::ALL.iter().find(|c| c.0 == upper) {
            return Ok(std);
        }
        Ok(ClassLabel(intern(upper)))
    }

    /// One of the five standard types (as BCCD's `labels.csv` must name them), case-insensitive.
    pub fn standard(name: &str) -> Result<ClassLabel> {
        let t = name.trim();
        ClassLabel::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| {
                LeukoError::Invalid(format!(
                    "unknown class {t:?} (known: NEUTROPHIL, EOSINOPHIL, LYMPHOCYTE, MONOCYTE, BASOPHIL)"
                ))
            })
    }

    /// Whether this is one of the five standard types.
    pub fn is_standard(self) -> bool {
        ClassLabel::ALL.contains(&self)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// The name as people read it in charts and reports: "Neutrophil", "Band neutrophil".
    pub fn display_name(self) -> String {
        let s = self.lower().replace('_', " ");
        let mut out = s[..1].to_uppercase();
        out.push_str(&s[1..]);
        out
    }

    /// The class's colour in every chart, report and page: the standard types in the
    /// colour-blind-safe Okabe-Ito palette, other classes in further distinct colours.
    pub fn colour(self) -> &'static str {
        match self {
            ClassLabel::Neutrophil => "#0072B2",
            ClassLabel::Lymphocyte => "#E69F00",
            ClassLabel::Monocyte => "#009E73",
            ClassLabel::Eosinophil => "#D55E00",
            ClassLabel::Basophil => "#CC79A7",
            other => {
                const MORE: [&str; 6] = [
                    "#56B4E9", "#F0E442", "#7F3C8D", "#3B7D23", "#8C564B", "#4D4D4D",
                ];
                let h = other
                    .0
                    .bytes()
                    .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
                MORE[h as usize % MORE.len()]
            }
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
            other => intern(other.0.to_ascii_lowercase()),
        }
    }

    /// Sort key: standard types first in [`ClassLabel::ALL`] order, then by name.
    fn rank(self) -> (usize, &'static str) {
        match ClassLabel::ALL.iter().position(|&c| c == self) {
            Some(i) => (i, ""),
            None => (ClassLabel::ALL.len(), self.0),
        }
    }

    /// Sort key of a differential count: the standard types in [`ClassLabel::CLINICAL_ORDER`],
    /// then the others by name.
    pub fn clinical_rank(self) -> (usize, &'static str) {
        match ClassLabel::CLINICAL_ORDER.iter().position(|&c| c == self) {
            Some(i) => (i, ""),
            None => (ClassLabel::CLINICAL_ORDER.len(), self.0),
        }
    }
}

/// The process's copy of `name` (each distinct name is leaked once: a run names a handful of
/// classes).
fn intern(name: String) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(&known) = names.get(name.as_str()) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.insert(leaked);
    leaked
}

impl PartialOrd for ClassLabel {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ClassLabel {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl fmt::Debug for ClassLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
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
        ClassLabel::named(s)
    }
}

impl Serialize for ClassLabel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for ClassLabel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        ClassLabel::named(&name).map_err(serde::de::Error::custom)
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
        let err = ClassLabel::standard("PLATELET").unwrap_err().to_string();
        assert!(err.contains("PLATELET"), "{err}");
        // Any other name is a class of its own, stored upper case.
        let band = "band neutrophil".parse::<ClassLabel>().unwrap();
        assert_eq!(band.as_str(), "BAND_NEUTROPHIL");
        assert_eq!(band, ClassLabel::named("Band-Neutrophil").unwrap());
        assert_eq!(band.lower(), "band_neutrophil");
        assert_eq!(band.display_name(), "Band neutrophil");
        assert!(!band.is_standard() && ClassLabel::Monocyte.is_standard());
        assert!(ClassLabel::named("").is_err());
        assert!(ClassLabel::named("a/b").is_err());
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
    fn standard_types_sort_first_in_their_order_then_others_by_name() {
        let blast = ClassLabel::named("blast").unwrap();
        let atypical = ClassLabel::named("atypical").unwrap();
        let mut v = vec![
            blast,
            ClassLabel::Monocyte,
            atypical,
            ClassLabel::Neutrophil,
        ];
        v.sort();
        assert_eq!(
            v,
            vec![
                ClassLabel::Neutrophil,
                ClassLabel::Monocyte,
                atypical,
                blast
            ]
        );
        let mut c = vec![blast, ClassLabel::Eosinophil, ClassLabel::Lymphocyte];
        c.sort_by_key(|k| k.clinical_rank());
        assert_eq!(
            c,
            vec![ClassLabel::Lymphocyte, ClassLabel::Eosinophil, blast]
        );
    }

    #[test]
    fn serde_uses_upper_case_names() {
        let j = serde_json::to_string(&ClassLabel::Eosinophil).unwrap();
        assert_eq!(j, "\"EOSINOPHIL\"");
    }
}
