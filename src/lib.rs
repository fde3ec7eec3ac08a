//! leuko: classify and count leukocytes in stained blood-smear photographs.
//!
//! Data flows one way: files ([`data`]) → near-duplicate audit ([`audit`]) and
//! leakage-free splits ([`split`]) → leukocyte isolation ([`isolate`]) → model →
//! metrics and reports. The `leuko` binary is a thin layer over this library.

pub mod audit;
pub mod augment;
pub mod bench;
pub mod case_study;
pub mod data;
pub mod error;
pub mod fsutil;
pub mod imageio;
pub mod infer;
pub mod isolate;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod predict;
pub mod progress;
pub mod report;
pub mod runtime;
pub mod serve;
pub mod split;
pub mod stain;
pub mod tensors;
pub mod train;

pub use error::{LeukoError, Result};
