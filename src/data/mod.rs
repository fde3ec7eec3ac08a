//! Data sources: the BCCD data set (where it is, what its files say, which samples are usable)
//! and a lab's own labelled cells ([`cells`]); the photos that command-line inputs name.

pub mod cells;
pub mod dataset;
pub mod label;
pub mod labels_csv;
pub mod location;
pub mod photos;
pub mod voc;

pub use dataset::{class_counts, Dataset, Excluded, ExclusionReason, PhotoSource, Sample};
pub use label::{ClassLabel, ClassSet};
pub use location::DataDir;
