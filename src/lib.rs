//! leuko: classify and count leukocytes in stained blood-smear photographs.
//!
//! Data flows one way, and no module imports from a later stage:
//!
//! 1. files and data sets: [`data`] (photos, labels, annotations), [`imageio`], [`audit`]
//!    (near-duplicate photos), [`split`] (leakage-free splits);
//! 2. preprocess: [`isolate`] (finding leukocytes), [`stain`] (colour balance),
//!    [`preprocess`] (photo to network input), [`augment`], [`familiar`] (what photos look
//!    like, and whether a photo looks like a model's training photos);
//! 3. model and training: [`model`] (the network and its file; kernels in the
//!    `leuko-kernels` crate), [`train`], [`metrics`], [`case_study`];
//! 4. inference: [`infer`] (views, prior, probabilities, review threshold), [`predict`]
//!    (photos to classified cells);
//! 5. outputs: [`wire`] (the one JSON shape of predictions), [`report`], [`serve`], [`plot`].
//!
//! The `leuko` binary is a thin layer over this library.

pub mod audit;
pub mod augment;
pub mod bench;
pub mod case_study;
pub mod data;
pub mod error;
pub mod familiar;
pub mod fsutil;
pub mod imageio;
pub mod infer;
pub mod isolate;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod predict;
pub mod preprocess;
pub mod progress;
pub mod report;
pub mod runtime;
pub mod serve;
pub mod split;
pub mod stain;
pub mod train;
pub mod wire;

pub use error::{LeukoError, Result};
