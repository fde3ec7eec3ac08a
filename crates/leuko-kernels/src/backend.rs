//! The one backend extension through which the kernels of [`crate::conv`] and
//! [`crate::ops`] are reached: burn's `#[backend_extension]` generates its `Dispatch`
//! implementation, which forwards to the `Flex` and `Autodiff<Flex, C>` implementations
//! below (and panics on any other backend, which is why every public function checks
//! `is_fast_path` first).

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Flex};

use crate::conv::{AutodiffConv, FlexConv};
use crate::flex::FlexTensor;
use crate::ops::{AutodiffOps, FlexOps};

/// The kernels as backend operations: convolutions (forward kernel on `Flex`, plus a custom
/// backward step on `Autodiff<Flex, C>`) and the fused batch-norm / pool / dropout passes.
///
/// The biased and unbiased convolutions are separate methods because burn 0.22.1's
/// `#[backend_extension]` routes an `Option<FloatTensor<Self>>` argument but does not unwrap it
/// to the selected backend (the generated call fails to type-check).
#[backend_extension(Flex, Autodiff)]
pub trait KernelBackend: Backend {
    /// `conv2d` with bias, stride 1, dilation 1, one group and symmetric padding `padding`.
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: usize,
    ) -> FloatTensor<Self>;

    /// As [`KernelBackend::fast_conv2d`] without bias.
    fn fast_conv2d_unbiased(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        padding: usize,
    ) -> FloatTensor<Self>;

    /// [`KernelBackend::fast_conv2d`], then ReLU and dropout (see [`crate::conv::conv2d_relu_dropout`]).
    fn fast_conv2d_relu_dropout(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: usize,
        p: f64,
        seed: u64,
    ) -> FloatTensor<Self>;

    /// ReLU then dropout with a hashed mask (see [`crate::ops::relu_dropout`]).
    fn fast_relu_dropout(x: FloatTensor<Self>, p: f64, seed: u64) -> FloatTensor<Self>;
    /// Residual add, ReLU and 2x2 max-pool in one pass (see [`crate::ops::add_relu_pool`]).
    fn fast_add_relu_pool(y: FloatTensor<Self>, skip: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Per-channel mean (first `C` values) and biased variance (next `C`); not differentiable.
    fn fast_batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Batch norm with the batch's statistics, given as computed by [`Self::fast_batch_stats`]
    /// (so that they are computed once per layer), differentiable with respect to `x`, `gamma`
    /// and `beta`.
    fn fast_bn_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
    /// [`Self::fast_bn_train`] then [`Self::fast_add_relu_pool`] with `skip`, in one pass;
    /// differentiable with respect to `x`, `gamma`, `beta` and `skip`.
    fn fast_bn_add_relu_pool(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
        skip: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// Batch norm with given statistics (inference): one pass instead of four broadcasts.
    fn fast_bn_eval(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
}

impl KernelBackend for Flex {
    fn fast_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        padding: usize,
    ) -> FlexTensor {
        FlexConv::fast_conv2d(x, weight, bias, padding)
    }

    fn fast_conv2d_unbiased(x: FlexTensor, weight: FlexTensor, padding: usize) -> FlexTensor {
        FlexConv::fast_conv2d_unbiased(x, weight, padding)
    }

    fn fast_conv2d_relu_dropout(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        padding: usize,
        p: f64,
        seed: u64,
    ) -> FlexTensor {
        FlexConv::fast_conv2d_relu_dropout(x, weight, bias, padding, p, seed)
    }

    fn fast_relu_dropout(x: FlexTensor, p: f64, seed: u64) -> FlexTensor {
        FlexOps::fast_relu_dropout(x, p, seed)
    }

    fn fast_add_relu_pool(y: FlexTensor, skip: FlexTensor) -> FlexTensor {
        FlexOps::fast_add_relu_pool(y, skip)
    }

    fn fast_batch_stats(x: FlexTensor) -> FlexTensor {
        FlexOps::fast_batch_stats(x)
    }

    fn fast_bn_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stats: FlexTensor,
        epsilon: f64,
    ) -> FlexTensor {
        FlexOps::fast_bn_train(x, gamma, beta, stats, epsilon)
    }

    fn fast_bn_add_relu_pool(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stats: FlexTensor,
        epsilon: f64,
        skip: FlexTensor,
    ) -> FlexTensor {
        FlexOps::fast_bn_add_relu_pool(x, gamma, beta, stats, epsilon, skip)
    }

    fn fast_bn_eval(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        mean: FlexTensor,
        var: FlexTensor,
        epsilon: f64,
    ) -> FlexTensor {
        FlexOps::fast_bn_eval(x, gamma, beta, mean, var, epsilon)
    }
}

/// The autodiff tensor over flex.
type AdTensor<C> = FloatTensor<Autodiff<Flex, C>>;

impl<C: CheckpointStrategy> KernelBackend for Autodiff<Flex, C> {
    fn fast_conv2d(
        x: AdTensor<C>,
        weight: AdTensor<C>,
        bias: AdTensor<C>,
        padding: usize,
    ) -> AdTensor<C> {
        AutodiffConv::<C>::fast_conv2d(x, weight, bias, padding)
    }

    fn fast_conv2d_unbiased(x: AdTensor<C>, weight: AdTensor<C>, padding: usize) -> AdTensor<C> {
        AutodiffConv::<C>::fast_conv2d_unbiased(x, weight, padding)
    }

    fn fast_conv2d_relu_dropout(
        x: AdTensor<C>,
        weight: AdTensor<C>,
        bias: AdTensor<C>,
        padding: usize,
        p: f64,
        seed: u64,
    ) -> AdTensor<C> {
        AutodiffConv::<C>::fast_conv2d_relu_dropout(x, weight, bias, padding, p, seed)
    }

    fn fast_relu_dropout(x: AdTensor<C>, p: f64, seed: u64) -> AdTensor<C> {
        AutodiffOps::<C>::fast_relu_dropout(x, p, seed)
    }

    fn fast_add_relu_pool(y: AdTensor<C>, skip: AdTensor<C>) -> AdTensor<C> {
        AutodiffOps::<C>::fast_add_relu_pool(y, skip)
    }

    fn fast_batch_stats(x: AdTensor<C>) -> AdTensor<C> {
        AutodiffOps::<C>::fast_batch_stats(x)
    }

    fn fast_bn_train(
        x: AdTensor<C>,
        gamma: AdTensor<C>,
        beta: AdTensor<C>,
        stats: AdTensor<C>,
        epsilon: f64,
    ) -> AdTensor<C> {
        AutodiffOps::<C>::fast_bn_train(x, gamma, beta, stats, epsilon)
    }

    fn fast_bn_add_relu_pool(
        x: AdTensor<C>,
        gamma: AdTensor<C>,
        beta: AdTensor<C>,
        stats: AdTensor<C>,
        epsilon: f64,
        skip: AdTensor<C>,
    ) -> AdTensor<C> {
        AutodiffOps::<C>::fast_bn_add_relu_pool(x, gamma, beta, stats, epsilon, skip)
    }

    fn fast_bn_eval(
        x: AdTensor<C>,
        gamma: AdTensor<C>,
        beta: AdTensor<C>,
        mean: AdTensor<C>,
        var: AdTensor<C>,
        epsilon: f64,
    ) -> AdTensor<C> {
        AutodiffOps::<C>::fast_bn_eval(x, gamma, beta, mean, var, epsilon)
    }
}
