//! Fast CPU kernels for burn's pure-Rust `flex` backend, plugged in through burn's
//! backend-extension point so that modules, autodiff and optimizers stay burn's own.
//!
//! - [`conv`]: 2-D convolutions, forward and both gradients (3x3 as Winograd F(2x2, 3x3) or
//!   direct register blocks, 1x1 pointwise), and the block's convolution + ReLU + dropout.
//! - [`ops`]: batch norm (training and eval), batch norm + residual add + ReLU + 2x2 max-pool
//!   in one pass, and ReLU + dropout with hashed masks (reproducible from a seed).
//!
//! The register blocks need x86-64 AVX2 + FMA, detected at run time; everywhere else (another
//! CPU, another backend or dtype, an unsupported geometry) every function calls burn's own op,
//! so a caller never depends on which path runs. Each kernel is tested against burn's layers,
//! values and gradients (`tests/`).

pub mod backend;
pub mod conv;
mod flex;
pub mod ops;
pub mod peak;
