//! The BCCD data set: where it is, what its files say, which samples are usable.

pub mod dataset;
pub mod label;
pub mod labels_csv;
pub mod location;
pub mod photos;
pub mod voc;

pub use dataset::{class_counts, Dataset, Excluded, ExclusionReason, Sample};
pub use label::{ClassLabel, ClassSet};
pub use location::DataDir;
