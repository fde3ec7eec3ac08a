//! Fused CPU kernels for the non-convolution layers of a block: ReLU + dropout, batch norm
//! with batch statistics, and residual add + ReLU + 2x2 max-pool; in training, batch norm and
//! the add + ReLU + pool are one step ([`batch_norm_add_relu_pool_train`]), whose batch norm
//! output never reaches memory.
//!
//! With [`crate::conv`] making the convolutions fast, burn-flex's generic versions of these
//! layers took most of a training step (measured with `perf`): batch norm's statistics go
//! through channel transposes (`swap_dims` + copy), dropout draws its mask from a general
//! random generator one element at a time, and add / ReLU / pool are separate passes, each with
//! its own autodiff node. Here each is one pass forward and one pass backward over `NCHW` data,
//! through the same backend-extension route as [`crate::conv`] (flex and `flex().autodiff()`; other
//! devices run burn's stock ops, with the same semantics).
//!
//! Dropout masks come from a counter-based hash of `(seed, element index)`, so a training step
//! is reproducible from its seed alone, independent of thread count, and needs no generator
//! state.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Dispatch, DispatchDevice, Flex, TensorMetadata};
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::Arc;

mod pool;
use pool::NONE;

/// Elements per parallel task of the elementwise passes (large enough to amortise scheduling,
/// small enough to balance two to a few cores).
const CHUNK: usize = 1 << 16;

/// Whether the fused kernels run on `device` (flex, with or without autodiff).
pub fn is_fast_path(device: &Device) -> bool {
    #[allow(unreachable_patterns)] // Which variants exist depends on burn's enabled backends.
    match device.as_dispatch() {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(inner) => matches!(**inner, DispatchDevice::Flex(_)),
        _ => false,
    }
}

fn fast<const D: usize>(t: &Tensor<D>) -> bool {
    is_fast_path(&t.device()) && t.dtype() == DType::F32
}

/// `dropout(relu(x))` with drop probability `p`: each element is kept with probability `1 - p`
/// (scaled by `1 / (1 - p)`) according to a hash of `(seed, index)`. `p = 0` is plain ReLU.
pub fn relu_dropout(x: Tensor<4>, p: f64, seed: u64) -> Tensor<4> {
    if !(0.0..1.0).contains(&p) {
        // p = 1 (or nonsense) drops everything; NaN is treated the same way.
        return x.zeros_like();
    }
    if !fast(&x) {
        let y = burn::tensor::activation::relu(x);
        if p == 0.0 {
            return y;
        }
        let data = y.to_data().convert::<f32>();
        let dims = y.dims();
        let mask = DropoutMask::new(p, seed);
        let keep: Vec<f32> = (0..data.num_elements())
            .map(|i| mask.keep_scale(i))
            .collect();
        let mask = Tensor::<4>::from_data(TensorData::new(keep, dims), &y.device());
        return y * mask;
    }
    Tensor::from_dispatch(<Dispatch as KernelBackend>::fast_relu_dropout(
        x.into_dispatch(),
        p,
        seed,
    ))
}

/// `max_pool2d(relu(y + skip), 2x2, stride 2)`; odd trailing rows/columns are dropped, as
/// burn's pool does.
pub fn add_relu_pool(y: Tensor<4>, skip: Tensor<4>) -> Tensor<4> {
    if !(fast(&y) && fast(&skip)) || y.dims() != skip.dims() {
        let pooled = burn::nn::pool::MaxPool2dConfig::new([2, 2])
            .with_strides([2, 2])
            .init()
            .forward(burn::tensor::activation::relu(y + skip));
        return pooled;
    }
    Tensor::from_dispatch(<Dispatch as KernelBackend>::fast_add_relu_pool(
        y.into_dispatch(),
        skip.into_dispatch(),
    ))
}

/// Batch norm of `x` (`[N, C, H, W]`) with the batch's own statistics, differentiable with
/// respect to `x`, `gamma` and `beta`. Returns the output and the batch mean and biased
/// variance per channel (detached), for the running statistics.
pub fn batch_norm_train(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    if !(fast(&x) && fast(&gamma) && fast(&beta)) {
        let r = burn::tensor::module::batch_norm_train(x, gamma, beta, epsilon);
        return (r.output, r.mean.detach(), r.variance.detach());
    }
    let c = x.dims()[1];
    let stats = Tensor::<1>::from_dispatch(<Dispatch as KernelBackend>::fast_batch_stats(
        x.clone().detach().into_dispatch(),
    ));
    let mean = stats.clone().narrow(0, 0, c);
    let var = stats.clone().narrow(0, c, c);
    let stats_all = stats;
    let out = Tensor::from_dispatch(<Dispatch as KernelBackend>::fast_bn_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        stats_all.into_dispatch(),
        epsilon,
    ));
    (out, mean, var)
}

/// `max_pool2d(relu(batch_norm(x) + skip), 2x2, stride 2)` with the batch's own statistics, as
/// [`batch_norm_train`] followed by [`add_relu_pool`] (the same values to the last bit), but
/// without writing batch norm's output: it is computed a few rows at a time into a buffer that
/// stays in cache and pooled from there. Returns the pooled output and the batch mean and biased
/// variance (detached), for the running statistics.
pub fn batch_norm_add_relu_pool_train(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    skip: Tensor<4>,
) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    if !(fast(&x) && fast(&gamma) && fast(&beta) && fast(&skip)) || x.dims() != skip.dims() {
        let (y, mean, var) = batch_norm_train(x, gamma, beta, epsilon);
        return (add_relu_pool(y, skip), mean, var);
    }
    let c = x.dims()[1];
    let stats = Tensor::<1>::from_dispatch(<Dispatch as KernelBackend>::fast_batch_stats(
        x.clone().detach().into_dispatch(),
    ));
    let mean = stats.clone().narrow(0, 0, c);
    let var = stats.clone().narrow(0, c, c);
    let out = Tensor::from_dispatch(<Dispatch as KernelBackend>::fast_bn_add_relu_pool(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        stats.into_dispatch(),
        epsilon,
        skip.into_dispatch(),
    ));
    (out, mean, var)
}

/// Batch norm of `x` (`[N, C, H, W]`) with given statistics (inference).
pub fn batch_norm_eval(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
    epsilon: f64,
) -> Tensor<4> {
    if !(fast(&x) && fast(&gamma) && fast(&beta) && fast(&mean) && fast(&var)) {
        return burn::tensor::module::batch_norm(x, gamma, beta, mean, var, epsilon);
    }
    Tensor::from_dispatch(<Dispatch as KernelBackend>::fast_bn_eval(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        mean.into_dispatch(),
        var.into_dispatch(),
        epsilon,
    ))
}

use crate::backend::KernelBackend;
use crate::flex::{contiguous, f32s, from_vec, output_buffer, FlexTensor};
type AdTensor<C> = FloatTensor<Autodiff<Flex, C>>;

/// The flex (forward) side of the fused ops of [`KernelBackend`].
pub(crate) struct FlexOps;

impl FlexOps {
    pub(crate) fn fast_relu_dropout(x: FlexTensor, p: f64, seed: u64) -> FlexTensor {
        relu_dropout_fwd(&contiguous(x), p, seed)
    }

    pub(crate) fn fast_add_relu_pool(y: FlexTensor, skip: FlexTensor) -> FlexTensor {
        pool_fwd(&contiguous(y), &contiguous(skip), false).0
    }

    pub(crate) fn fast_batch_stats(x: FlexTensor) -> FlexTensor {
        let x = contiguous(x);
        let (mean, var) = batch_stats(f32s(&x), &dims4(&x));
        let mut v = mean;
        v.extend(var);
        let n = v.len();
        from_vec(v, vec![n])
    }

    pub(crate) fn fast_bn_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stats: FlexTensor,
        epsilon: f64,
    ) -> FlexTensor {
        bn_fwd(
            &contiguous(x),
            &contiguous(gamma),
            &contiguous(beta),
            &contiguous(stats),
            epsilon,
        )
        .0
    }

    pub(crate) fn fast_bn_add_relu_pool(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stats: FlexTensor,
        epsilon: f64,
        skip: FlexTensor,
    ) -> FlexTensor {
        let x = contiguous(x);
        let (mean, inv_std) = bn_coefficients(&contiguous(stats), dims4(&x)[1], epsilon);
        let (gamma, beta) = (contiguous(gamma), contiguous(beta));
        let bn = BnAffine {
            gamma: f32s(&gamma),
            beta: f32s(&beta),
            mean: &mean,
            inv_std: &inv_std,
        };
        bn_pool_fwd(&x, bn, &contiguous(skip), false).0
    }

    pub(crate) fn fast_bn_eval(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        mean: FlexTensor,
        var: FlexTensor,
        epsilon: f64,
    ) -> FlexTensor {
        let x = contiguous(x);
        let (gamma, beta, mean, var) = (
            contiguous(gamma),
            contiguous(beta),
            contiguous(mean),
            contiguous(var),
        );
        let inv_std: Vec<f32> = f32s(&var)
            .iter()
            .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
            .collect();
        normalise(&x, f32s(&gamma), f32s(&beta), f32s(&mean), &inv_std)
    }
}

/// The autodiff side of the fused ops of [`KernelBackend`].
pub(crate) struct AutodiffOps<C>(std::marker::PhantomData<C>);

impl<C: CheckpointStrategy> AutodiffOps<C> {
    pub(crate) fn fast_bn_eval(
        x: AdTensor<C>,
        gamma: AdTensor<C>,
        beta: AdTensor<C>,
        mean: AdTensor<C>,
        var: AdTensor<C>,
        epsilon: f64,
    ) -> AdTensor<C> {
        // Differentiable through burn's own composition (only inference calls this path).
        <Autodiff<Flex, C> as burn::backend::ops::ModuleOps<Autodiff<Flex, C>>>::batch_norm(
            x, gamma, beta, mean, var, epsilon,
        )
    }

    pub(crate) fn fast_bn_add_relu_pool(
        x: AdTensor<C>,
        gamma: AdTensor<C>,
        beta: AdTensor<C>,
        stats: AdTensor<C>,
        epsilon: f64,
        skip: AdTensor<C>,
    ) -> AdTensor<C> {
        // Detached statistics, as in `fast_bn_train`.
        let stats = contiguous(stats.into_primitive());
        let c = stats.shape().dims::<1>()[0] / 2;
        let (mean, inv_std) = bn_coefficients(&stats, c, epsilon);
        match BnAddReluPoolStep
            .prepare::<C>([x.node(), gamma.node(), beta.node(), skip.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let g_id = prep.checkpoint(&gamma);
                let in_dims = dims4(x.primitive());
                let (out, idx) =
                    bn_pool_primitives::<C>(x, gamma, beta, skip, (&mean, &inv_std), true);
                let state = BnPoolState {
                    x: x_id,
                    gamma: g_id,
                    stats: Arc::new((mean, inv_std)),
                    winners: Arc::new(idx),
                    dims: in_dims,
                };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                let stats = (&mean[..], &inv_std[..]);
                prep.finish(bn_pool_primitives::<C>(x, gamma, beta, skip, stats, false).0)
            }
        }
    }

    pub(crate) fn fast_relu_dropout(x: AdTensor<C>, p: f64, seed: u64) -> AdTensor<C> {
        match ReluDropoutStep
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = relu_dropout_fwd(&contiguous(x.into_primitive()), p, seed);
                prep.finish((out.clone(), scale(p)), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(relu_dropout_fwd(&contiguous(x.into_primitive()), p, seed))
            }
        }
    }

    pub(crate) fn fast_add_relu_pool(y: AdTensor<C>, skip: AdTensor<C>) -> AdTensor<C> {
        match AddReluPoolStep
            .prepare::<C>([y.node(), skip.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (yv, sv) = (
                    contiguous(y.into_primitive()),
                    contiguous(skip.into_primitive()),
                );
                let in_dims = dims4(&yv);
                let (out, idx) = pool_fwd(&yv, &sv, true);
                prep.finish((Arc::new(idx), in_dims), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(
                pool_fwd(
                    &contiguous(y.into_primitive()),
                    &contiguous(skip.into_primitive()),
                    false,
                )
                .0,
            ),
        }
    }

    pub(crate) fn fast_batch_stats(x: AdTensor<C>) -> AdTensor<C> {
        AdTensor::<C>::new(<Flex as KernelBackend>::fast_batch_stats(
            x.into_primitive(),
        ))
    }

    pub(crate) fn fast_bn_train(
        x: AdTensor<C>,
        gamma: AdTensor<C>,
        beta: AdTensor<C>,
        stats: AdTensor<C>,
        epsilon: f64,
    ) -> AdTensor<C> {
        // Detached statistics: the gradient through them is in `BnTrainStep`'s formula.
        let stats = contiguous(stats.into_primitive());
        match BnTrainStep
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let g_id = prep.checkpoint(&gamma);
                let (out, mean, inv_std) = bn_fwd(
                    &contiguous(x.into_primitive()),
                    &contiguous(gamma.into_primitive()),
                    &contiguous(beta.into_primitive()),
                    &stats,
                    epsilon,
                );
                prep.finish((x_id, g_id, Arc::new((mean, inv_std))), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(
                bn_fwd(
                    &contiguous(x.into_primitive()),
                    &contiguous(gamma.into_primitive()),
                    &contiguous(beta.into_primitive()),
                    &stats,
                    epsilon,
                )
                .0,
            ),
        }
    }
}

/// [`bn_pool_fwd`] on the autodiff tensors' primitives, with the batch's `(mean, inv_std)`.
fn bn_pool_primitives<C: CheckpointStrategy>(
    x: AdTensor<C>,
    gamma: AdTensor<C>,
    beta: AdTensor<C>,
    skip: AdTensor<C>,
    (mean, inv_std): (&[f32], &[f32]),
    want_idx: bool,
) -> (FlexTensor, Vec<u8>) {
    let xv = contiguous(x.into_primitive());
    let (gv, bv) = (
        contiguous(gamma.into_primitive()),
        contiguous(beta.into_primitive()),
    );
    let bn = BnAffine {
        gamma: f32s(&gv),
        beta: f32s(&bv),
        mean,
        inv_std,
    };
    bn_pool_fwd(&xv, bn, &contiguous(skip.into_primitive()), want_idx)
}

#[derive(Debug)]
struct ReluDropoutStep;

impl Backward<Flex, 1> for ReluDropoutStep {
    /// The forward output (positive exactly where the gradient passes) and the keep scale.
    type State = (FlexTensor, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(node) = parent {
            let (out, s) = ops.state;
            grads.register::<Flex>(node.id, relu_dropout_backward(out, grad, s));
        }
    }
}

/// The input gradient of [`relu_dropout`] from its output `out` (positive exactly where the
/// gradient passes), the output gradient and the keep scale `s` (see [`ReluDropout::scale`]).
pub(crate) fn relu_dropout_backward(out: FlexTensor, grad: FlexTensor, s: f32) -> FlexTensor {
    let (out, grad) = (contiguous(out), contiguous(grad));
    let (o, g) = (f32s(&out), f32s(&grad));
    let dx = par_fill(o.len(), CHUNK, |ci, d| {
        let base = ci * CHUNK;
        let n = d.len();
        relu_dropout_grad_fast(&o[base..base + n], &g[base..base + n], s, d);
    });
    from_vec(dx, out.shape().to_vec())
}

#[derive(Debug)]
struct AddReluPoolStep;

impl Backward<Flex, 2> for AddReluPoolStep {
    /// Winner of each pooling window (0-3, or `NONE` when the window's max was not positive)
    /// and the input dims.
    type State = (Arc<Vec<u8>>, [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_y, node_skip] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let (idx, dims) = ops.state;
        let dx = pool_grad(&grad, &idx, dims);
        match (node_y, node_skip) {
            (Some(a), Some(b)) => {
                grads.register::<Flex>(a.id, dx.clone());
                grads.register::<Flex>(b.id, dx);
            }
            (Some(a), None) | (None, Some(a)) => grads.register::<Flex>(a.id, dx),
            (None, None) => {}
        }
    }
}

#[derive(Debug)]
struct BnTrainStep;

impl Backward<Flex, 3> for BnTrainStep {
    /// Checkpointed `x` and `gamma`, and the batch mean and inverse standard deviation.
    type State = (NodeId, NodeId, Arc<(Vec<f32>, Vec<f32>)>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x, node_g, node_b] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let (x_id, g_id, stats) = ops.state;
        let x = contiguous(ckpt.retrieve_node_output::<FlexTensor>(x_id));
        let gamma = contiguous(ckpt.retrieve_node_output::<FlexTensor>(g_id));
        let nodes = [node_x, node_g, node_b].map(|n| n.map(|n| n.id));
        bn_backward(grads, &x, &gamma, &grad, &stats, nodes);
    }
}

#[derive(Debug)]
struct BnAddReluPoolStep;

/// What [`BnAddReluPoolStep`] keeps for the backward pass.
#[derive(Clone, Debug)]
struct BnPoolState {
    /// Checkpointed batch norm input and scale.
    x: NodeId,
    gamma: NodeId,
    /// Batch mean and inverse standard deviation per channel.
    stats: Arc<(Vec<f32>, Vec<f32>)>,
    /// Winner of each pooling window, as in [`AddReluPoolStep`].
    winners: Arc<Vec<u8>>,
    dims: [usize; 4],
}

impl Backward<Flex, 4> for BnAddReluPoolStep {
    type State = BnPoolState;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x, node_g, node_b, node_skip] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let st = ops.state;
        // The gradient of the sum `bn(x) + skip`, which both terms receive.
        let dz = pool_grad(&grad, &st.winners, st.dims);
        if let Some(node) = node_skip {
            grads.register::<Flex>(node.id, dz.clone());
        }
        let nodes = [node_x, node_g, node_b].map(|n| n.map(|n| n.id));
        if nodes.iter().any(Option::is_some) {
            let x = contiguous(ckpt.retrieve_node_output::<FlexTensor>(st.x));
            let gamma = contiguous(ckpt.retrieve_node_output::<FlexTensor>(st.gamma));
            bn_backward(grads, &x, &gamma, &dz, &st.stats, nodes);
        }
    }
}

/// The input gradient of the pooling in [`pool_fwd`] / [`bn_pool_fwd`] (input dims `dims`):
/// every input element written once, its window's gradient if it won, else 0.
fn pool_grad(grad: &FlexTensor, winners: &[u8], [n, c, h, w]: [usize; 4]) -> FlexTensor {
    let (ho, wo) = (h / 2, w / 2);
    let g = f32s(grad);
    let dx = par_fill(n * c * h * w, h * w, |plane, d| {
        let gi = &g[plane * ho * wo..(plane + 1) * ho * wo];
        let ii = &winners[plane * ho * wo..(plane + 1) * ho * wo];
        pool::plane_grad(gi, ii, w, d);
    });
    from_vec(dx, vec![n, c, h, w])
}

/// Batch norm's gradients for `x`, `gamma` and `beta` (registered for the nodes given) from
/// the output gradient `grad`, with the batch statistics `(mean, inv_std)` of the forward pass.
fn bn_backward(
    grads: &mut Gradients,
    x: &FlexTensor,
    gamma: &FlexTensor,
    grad: &FlexTensor,
    stats: &(Vec<f32>, Vec<f32>),
    [node_x, node_g, node_b]: [Option<NodeId>; 3],
) {
    let [n, c, h, w] = dims4(x);
    let hw = h * w;
    let (xs, gs, dys) = (f32s(x), f32s(gamma), f32s(grad));
    let (mean, inv_std) = (&stats.0, &stats.1);
    // Per channel: sum(dy) and sum(dy * xhat).
    let sums: Vec<(f64, f64)> = per_channel_group(c, |ch0, g| match g {
        4 => grad_sums::<4>(xs, dys, mean, inv_std, [n, c, h, w], ch0),
        3 => grad_sums::<3>(xs, dys, mean, inv_std, [n, c, h, w], ch0),
        2 => grad_sums::<2>(xs, dys, mean, inv_std, [n, c, h, w], ch0),
        _ => grad_sums::<1>(xs, dys, mean, inv_std, [n, c, h, w], ch0),
    });
    if let Some(node) = node_x {
        let m = (n * hw) as f64;
        let dx = par_fill(xs.len(), hw, |plane, d| {
            let ch = plane % c;
            let o = plane * hw;
            let coefficients = BnGradCoefficients {
                k: gs[ch] * inv_std[ch],
                mean_dy: (sums[ch].0 / m) as f32,
                mean_dy_xhat: (sums[ch].1 / m) as f32,
                mu: mean[ch],
                inv_std: inv_std[ch],
            };
            let (x, dy) = (&xs[o..o + d.len()], &dys[o..o + d.len()]);
            bn_input_grad_fast(x, dy, coefficients, d);
        });
        grads.register::<Flex>(node, from_vec(dx, vec![n, c, h, w]));
    }
    if let Some(node) = node_g {
        let dg: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
        grads.register::<Flex>(node, from_vec(dg, vec![c]));
    }
    if let Some(node) = node_b {
        let db: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
        grads.register::<Flex>(node, from_vec(db, vec![c]));
    }
}

/// `fn $name(args)`: calls `$kernel(args)`, compiled for AVX2 when this CPU has it.
///
/// The kernels are `#[inline(always)]` elementwise loops; under AVX2 they become 8-wide vector
/// code with blends for their `if`s. Compiled for x86-64's baseline instead, the ReLU gradient
/// and the pooling windows came out as scalar code with a branch per element, mispredicted on
/// about every other ReLU sign: the ReLU + dropout gradient alone took 9% of a training step
/// (perf). AVX2 only, not FMA: every product and sum rounds as written, so results
/// do not depend on the path taken.
macro_rules! avx2_when_available {
    (fn $name:ident = $kernel:ident ($($a:ident: $t:ty),* $(,)?)) => {
        fn $name($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($a: $t),*) {
                    $kernel($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 was detected on this CPU.
                    return unsafe { avx2($($a),*) };
                }
            }
            $kernel($($a),*)
        }
    };
}

avx2_when_available!(fn relu_dropout_grad_fast = relu_dropout_grad(o: &[f32], g: &[f32], s: f32, d: &mut [MaybeUninit<f32>]));
avx2_when_available!(fn relu_fast = relu(x: &[f32], o: &mut [MaybeUninit<f32>]));
avx2_when_available!(fn affine_fast = affine(x: &[f32], k: f32, b: f32, o: &mut [MaybeUninit<f32>]));
avx2_when_available!(fn bn_input_grad_fast = bn_input_grad(x: &[f32], dy: &[f32], c: BnGradCoefficients, d: &mut [MaybeUninit<f32>]));

#[inline(always)]
fn relu(x: &[f32], o: &mut [MaybeUninit<f32>]) {
    for (v, &x) in o.iter_mut().zip(x) {
        v.write(x.max(0.0));
    }
}

/// `x * k + b` elementwise.
#[inline(always)]
fn affine(x: &[f32], k: f32, b: f32, o: &mut [MaybeUninit<f32>]) {
    for (v, &x) in o.iter_mut().zip(x) {
        v.write(x * k + b);
    }
}

/// One channel's constants in batch norm's input gradient
/// `k * (dy - mean(dy) - xhat * mean(dy * xhat))`, `xhat = (x - mu) * inv_std`.
#[derive(Clone, Copy)]
struct BnGradCoefficients {
    k: f32,
    mean_dy: f32,
    mean_dy_xhat: f32,
    mu: f32,
    inv_std: f32,
}

#[inline(always)]
fn bn_input_grad(x: &[f32], dy: &[f32], c: BnGradCoefficients, d: &mut [MaybeUninit<f32>]) {
    for (v, (&x, &dy)) in d.iter_mut().zip(x.iter().zip(dy)) {
        let xhat = (x - c.mu) * c.inv_std;
        v.write(c.k * (dy - c.mean_dy - xhat * c.mean_dy_xhat));
    }
}

/// ReLU + dropout gradient: `g * s` where the forward output `o` was positive (kept and
/// positive), else 0.
#[inline(always)]
fn relu_dropout_grad(o: &[f32], g: &[f32], s: f32, d: &mut [MaybeUninit<f32>]) {
    let n = d.len();
    let (o, g) = (&o[..n], &g[..n]);
    for i in 0..n {
        let v = g[i] * s;
        d[i] = MaybeUninit::new(if o[i] > 0.0 { v } else { 0.0 });
    }
}

fn scale(p: f64) -> f32 {
    (1.0 / (1.0 - p)) as f32
}

/// The dropout mask of one step: which elements are kept, and their scale.
#[derive(Debug, Clone, Copy)]
struct DropoutMask {
    seed: u64,
    /// Elements whose hash (high 32 bits) is below this are dropped: `p * 2^32`.
    threshold: u32,
    /// `1 / (1 - p)`.
    scale: f32,
}

impl DropoutMask {
    fn new(p: f64, seed: u64) -> Self {
        DropoutMask {
            seed,
            threshold: (p * 4_294_967_296.0).min(u32::MAX as f64) as u32,
            scale: scale(p),
        }
    }

    /// `scale` if element `i` is kept, else 0 (splitmix64 of `(seed, i)`).
    #[inline(always)]
    fn keep_scale(&self, i: usize) -> f32 {
        let mut z = self.seed
            ^ (i as u64)
                .wrapping_add(1)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        if ((z >> 32) as u32) >= self.threshold {
            self.scale
        } else {
            0.0
        }
    }
}

fn relu_dropout_fwd(x: &FlexTensor, p: f64, seed: u64) -> FlexTensor {
    let xs = f32s(x);
    let mask = DropoutMask::new(p, seed);
    let out = par_fill(xs.len(), CHUNK, |ci, o| {
        let base = ci * CHUNK;
        let src = &xs[base..base + o.len()];
        if p == 0.0 {
            relu_fast(src, o);
        } else {
            dropout_chunk(src, o, base, mask);
        }
    });
    from_vec(out, x.shape().to_vec())
}

/// [`relu`] followed by dropout with probability `p` (`0 ≤ p < 1`) and the masks of `seed`, as
/// one elementwise function: what a convolution applies to its output rows as they are written
/// (see `crate::conv::conv2d_relu_dropout`), the same values as [`relu_dropout`] computes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReluDropout {
    p: f64,
    mask: DropoutMask,
}

impl ReluDropout {
    /// `None` for a `p` that [`relu_dropout`] treats specially (1, NaN or out of range).
    pub(crate) fn new(p: f64, seed: u64) -> Option<Self> {
        (0.0..1.0).contains(&p).then(|| ReluDropout {
            p,
            mask: DropoutMask::new(p, seed),
        })
    }

    /// The factor kept elements are scaled by, which the backward pass needs.
    pub(crate) fn scale(&self) -> f32 {
        scale(self.p)
    }

    /// Applies the function in place to `run`, elements `base ..` of the tensor (the index
    /// picks each element's dropout decision).
    pub(crate) fn apply(&self, run: &mut [f32], base: usize) {
        // Through a small copy, because the kernels read and write separate slices; the copy
        // stays in L1.
        const PIECE: usize = 512;
        let mut src = [0f32; PIECE];
        for (i, piece) in run.chunks_mut(PIECE).enumerate() {
            let src = &mut src[..piece.len()];
            src.copy_from_slice(piece);
            // SAFETY: a `&mut [f32]` seen as `&mut [MaybeUninit<f32>]`, written only with
            // initialised values.
            let out = unsafe { &mut *(piece as *mut [f32] as *mut [MaybeUninit<f32>]) };
            if self.p == 0.0 {
                relu_fast(src, out);
            } else {
                dropout_chunk(src, out, base + i * PIECE, self.mask);
            }
        }
    }
}

/// `relu(x) * keep_scale(i)` for the chunk `src` of elements `base ..`.
///
/// The hash is 64-bit integer arithmetic per element; with AVX-512DQ's 64-bit vector multiply
/// the compiler vectorises it, which takes dropout from one of the slowest passes of a step to
/// a memory-bound one. Same function on every path, so masks do not depend on the CPU.
fn dropout_chunk(src: &[f32], out: &mut [MaybeUninit<f32>], base: usize, mask: DropoutMask) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the target features were detected on this CPU.
            return unsafe { dropout_chunk_avx512(src, out, base, mask) };
        }
    }
    dropout_chunk_portable(src, out, base, mask)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl")]
unsafe fn dropout_chunk_avx512(
    src: &[f32],
    out: &mut [MaybeUninit<f32>],
    base: usize,
    mask: DropoutMask,
) {
    dropout_chunk_portable(src, out, base, mask)
}

#[inline(always)]
fn dropout_chunk_portable(
    src: &[f32],
    out: &mut [MaybeUninit<f32>],
    base: usize,
    mask: DropoutMask,
) {
    for (j, (v, &x)) in out.iter_mut().zip(src).enumerate() {
        let k = mask.keep_scale(base + j);
        v.write(if x > 0.0 { x * k } else { 0.0 });
    }
}

/// Pooled `relu(y + skip)` and, when `want_idx`, each window's winner.
fn pool_fwd(y: &FlexTensor, skip: &FlexTensor, want_idx: bool) -> (FlexTensor, Vec<u8>) {
    let [n, c, h, w] = dims4(y);
    let (ho, wo) = (h / 2, w / 2);
    let (ys, ss) = (f32s(y), f32s(skip));
    let mut out = vec![0f32; n * c * ho * wo];
    let mut idx = if want_idx {
        vec![NONE; n * c * ho * wo]
    } else {
        Vec::new()
    };
    let plane_out = ho * wo;
    if plane_out == 0 {
        return (from_vec(out, vec![n, c, ho, wo]), idx);
    }
    let work = |plane: usize, o: &mut [f32], ix: Option<&mut [u8]>| {
        let (y, skip) = (&ys[plane * h * w..], &ss[plane * h * w..]);
        match ix {
            Some(ix) => pool::plane::<true>(y, skip, w, o, ix),
            None => pool::plane::<false>(y, skip, w, o, &mut []),
        }
    };
    if want_idx {
        out.par_chunks_mut(plane_out)
            .zip(idx.par_chunks_mut(plane_out))
            .enumerate()
            .for_each(|(plane, (o, ix))| work(plane, o, Some(ix)));
    } else {
        out.par_chunks_mut(plane_out)
            .enumerate()
            .for_each(|(plane, o)| work(plane, o, None));
    }
    (from_vec(out, vec![n, c, ho, wo]), idx)
}

/// Channels whose sums one task accumulates side by side.
///
/// Each channel's sum is one sequential chain of floating-point adds (its order fixes the
/// result's last bits), so a single chain runs at one add per add-latency. Interleaving the
/// chains of several channels keeps the adder busy without reordering any chain.
const GROUP: usize = 4;

/// `f(first_channel, channels)` over groups of up to [`GROUP`] consecutive channels, in
/// parallel; the results, one per channel, in channel order.
fn per_channel_group<T: Send>(
    c: usize,
    f: impl Fn(usize, usize) -> Vec<T> + Sync + Send,
) -> Vec<T> {
    let groups: Vec<Vec<T>> = (0..c.div_ceil(GROUP))
        .into_par_iter()
        .map(|g| {
            let ch0 = g * GROUP;
            f(ch0, GROUP.min(c - ch0))
        })
        .collect();
    groups.into_iter().flatten().collect()
}

/// The planes of channels `ch0 .. ch0 + G` in image `img`.
fn planes<const G: usize>(xs: &[f32], img: usize, c: usize, hw: usize, ch0: usize) -> [&[f32]; G] {
    std::array::from_fn(|k| {
        let o = (img * c + ch0 + k) * hw;
        &xs[o..o + hw]
    })
}

/// Per-channel mean and biased variance (two passes, f64 totals).
fn batch_stats(xs: &[f32], &[n, c, h, w]: &[usize; 4]) -> (Vec<f32>, Vec<f32>) {
    let r = per_channel_group(c, |ch0, g| match g {
        4 => channel_stats::<4>(xs, [n, c, h, w], ch0),
        3 => channel_stats::<3>(xs, [n, c, h, w], ch0),
        2 => channel_stats::<2>(xs, [n, c, h, w], ch0),
        _ => channel_stats::<1>(xs, [n, c, h, w], ch0),
    });
    r.into_iter().unzip()
}

/// Mean and biased variance of channels `ch0 .. ch0 + G` (two passes, f64 totals).
fn channel_stats<const G: usize>(
    xs: &[f32],
    [n, c, h, w]: [usize; 4],
    ch0: usize,
) -> Vec<(f32, f32)> {
    let m = (n * h * w).max(1) as f64;
    let dims = [n, c, h, w];
    let mean = chain_sums::<G>(xs, dims, ch0, |_, v| v as f64).map(|s| s / m);
    let q = chain_sums::<G>(xs, dims, ch0, |k, v| {
        let d = v as f64 - mean[k];
        d * d
    });
    (0..G)
        .map(|k| (mean[k] as f32, (q[k] / m) as f32))
        .collect()
}

/// Per channel `ch0 + k` of `G`, the sum over all images of `term(k, value)`: per image a sum
/// from -0.0 (as `Iterator::sum`), added to the channel's total.
// `i` walks the G planes in lockstep; an iterator per plane would hide that from the compiler.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn chain_sums<const G: usize>(
    xs: &[f32],
    [n, c, h, w]: [usize; 4],
    ch0: usize,
    term: impl Fn(usize, f32) -> f64,
) -> [f64; G] {
    let hw = h * w;
    let mut s = [0f64; G];
    for img in 0..n {
        let p = planes::<G>(xs, img, c, hw, ch0);
        let mut t = [-0f64; G];
        for i in 0..hw {
            for k in 0..G {
                t[k] += term(k, p[k][i]);
            }
        }
        for k in 0..G {
            s[k] += t[k];
        }
    }
    s
}

/// Batch norm's per-channel `(sum(dy), sum(dy * xhat))` for channels `ch0 .. ch0 + G`.
fn grad_sums<const G: usize>(
    xs: &[f32],
    dys: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    [n, c, h, w]: [usize; 4],
    ch0: usize,
) -> Vec<(f64, f64)> {
    let hw = h * w;
    let mu: [f32; G] = std::array::from_fn(|k| mean[ch0 + k]);
    let mut s1 = [0f64; G];
    let mut s2 = [0f64; G];
    for img in 0..n {
        let (x, dy) = (
            planes::<G>(xs, img, c, hw, ch0),
            planes::<G>(dys, img, c, hw, ch0),
        );
        let (mut a, mut b) = ([0f32; G], [0f32; G]);
        for i in 0..hw {
            for k in 0..G {
                a[k] += dy[k][i];
                b[k] += dy[k][i] * (x[k][i] - mu[k]);
            }
        }
        for k in 0..G {
            s1[k] += a[k] as f64;
            s2[k] += b[k] as f64 * inv_std[ch0 + k] as f64;
        }
    }
    (0..G).map(|k| (s1[k], s2[k])).collect()
}

/// Normalised output, batch mean and inverse standard deviation, from the batch statistics
/// `stats` (mean, then variance, per channel).
fn bn_fwd(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    stats: &FlexTensor,
    epsilon: f64,
) -> (FlexTensor, Vec<f32>, Vec<f32>) {
    let (mean, inv_std) = bn_coefficients(stats, dims4(x)[1], epsilon);
    let out = normalise(x, f32s(gamma), f32s(beta), &mean, &inv_std);
    (out, mean, inv_std)
}

/// Mean and inverse standard deviation per channel from the statistics of
/// [`KernelBackend::fast_batch_stats`] (`c` means, then `c` variances).
fn bn_coefficients(stats: &FlexTensor, c: usize, epsilon: f64) -> (Vec<f32>, Vec<f32>) {
    let (mean, var) = f32s(stats).split_at(c);
    let inv_std = var
        .iter()
        .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
        .collect();
    (mean.to_vec(), inv_std)
}

/// Batch norm's per-channel parameters and batch statistics, for [`bn_pool_fwd`].
#[derive(Clone, Copy)]
struct BnAffine<'a> {
    gamma: &'a [f32],
    beta: &'a [f32],
    mean: &'a [f32],
    inv_std: &'a [f32],
}

/// Input rows that [`bn_pool_fwd`] normalises before pooling them: a few kilobytes, so that
/// they are still in L1 when the pooling reads them.
const BN_POOL_ROWS: usize = 8;

/// Pooled `relu(bn(x) + skip)` (see [`pool_fwd`]), `bn(x)` as [`normalise`] computes it (the
/// same operations, so the same bits), written only to a few rows of scratch at a time: the
/// separate passes wrote and re-read a whole tensor (64 MiB of memory traffic on the first block
/// of a batch of 32).
fn bn_pool_fwd(
    x: &FlexTensor,
    bn: BnAffine,
    skip: &FlexTensor,
    want_idx: bool,
) -> (FlexTensor, Vec<u8>) {
    let [n, c, h, w] = dims4(x);
    let (ho, wo) = (h / 2, w / 2);
    let (xs, ss) = (f32s(x), f32s(skip));
    let plane_out = ho * wo;
    let mut out = vec![0f32; n * c * plane_out];
    let mut idx = if want_idx {
        vec![NONE; n * c * plane_out]
    } else {
        Vec::new()
    };
    if plane_out == 0 {
        return (from_vec(out, vec![n, c, ho, wo]), idx);
    }
    let pairs = BN_POOL_ROWS / 2;
    let work = |scratch: &mut Vec<MaybeUninit<f32>>,
                plane: usize,
                o: &mut [f32],
                mut ix: Option<&mut [u8]>| {
        let ch = plane % c;
        let k = bn.gamma[ch] * bn.inv_std[ch];
        let b = bn.beta[ch] - bn.mean[ch] * k;
        let (xp, sp) = (&xs[plane * h * w..], &ss[plane * h * w..]);
        for oy0 in (0..ho).step_by(pairs) {
            let rows = pairs.min(ho - oy0);
            let (r0, len) = (2 * oy0 * w, 2 * rows * w);
            let y = &mut scratch[..len];
            affine_fast(&xp[r0..r0 + len], k, b, y);
            // SAFETY: `affine_fast` wrote all `len` elements of `y`.
            let y = unsafe { &*(y as *const [MaybeUninit<f32>] as *const [f32]) };
            let (o, s) = (&mut o[oy0 * wo..(oy0 + rows) * wo], &sp[r0..]);
            match ix.as_deref_mut() {
                Some(ix) => pool::plane::<true>(y, s, w, o, &mut ix[oy0 * wo..(oy0 + rows) * wo]),
                None => pool::plane::<false>(y, s, w, o, &mut []),
            }
        }
    };
    let scratch = || vec![MaybeUninit::uninit(); BN_POOL_ROWS * w];
    if want_idx {
        out.par_chunks_mut(plane_out)
            .zip(idx.par_chunks_mut(plane_out))
            .enumerate()
            .for_each_init(scratch, |sc, (plane, (o, ix))| work(sc, plane, o, Some(ix)));
    } else {
        out.par_chunks_mut(plane_out)
            .enumerate()
            .for_each_init(scratch, |sc, (plane, o)| work(sc, plane, o, None));
    }
    (from_vec(out, vec![n, c, ho, wo]), idx)
}

/// `(x - mean) * inv_std * gamma + beta` per channel of an `NCHW` tensor.
fn normalise(x: &FlexTensor, gs: &[f32], bs: &[f32], mean: &[f32], inv_std: &[f32]) -> FlexTensor {
    let d = dims4(x);
    let [_, c, h, w] = d;
    let xs = f32s(x);
    let hw = (h * w).max(1);
    let out = par_fill(xs.len(), hw, |plane, o| {
        let ch = plane % c;
        let k = gs[ch] * inv_std[ch];
        let b = bs[ch] - mean[ch] * k;
        let src = &xs[plane * hw..plane * hw + o.len()];
        affine_fast(src, k, b, o);
    });
    from_vec(out, d.to_vec())
}

/// A new vector of `len` floats, filled in parallel by `fill(chunk_index, chunk)` over chunks of
/// `chunk` elements (the last may be shorter); `fill` must write every element of its chunk.
///
/// Skips the zeroing pass of `vec![0.0; len]`, which on the 128x128 layers cost about as much
/// as the elementwise pass itself (see `output_buffer`).
fn par_fill(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let mut out = output_buffer(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| fill(i, c));
    // SAFETY: the first `len` elements were all written by `fill`.
    unsafe { out.set_len(len) };
    out
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    t.shape().dims::<4>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised dropout must draw exactly the scalar hash's mask, or masks (and trained
    /// weights) would depend on the CPU.
    #[test]
    fn dropout_mask_is_the_same_on_every_cpu_path() {
        let src: Vec<f32> = (0..1003)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let mask = DropoutMask::new(0.2, 9);
        let run = |f: &dyn Fn(&mut [MaybeUninit<f32>])| {
            let mut out = vec![MaybeUninit::new(f32::NAN); src.len()];
            f(&mut out);
            // SAFETY: initialised above and only overwritten.
            out.iter()
                .map(|v| unsafe { v.assume_init() })
                .collect::<Vec<f32>>()
        };
        let base = 123_456;
        let want = run(&|o| dropout_chunk_portable(&src, o, base, mask));
        assert_eq!(run(&|o| dropout_chunk(&src, o, base, mask)), want);
        let kept = want.iter().filter(|v| **v != 0.0).count();
        let positive = src.iter().filter(|v| **v > 0.0).count();
        assert!(
            kept > positive * 7 / 10 && kept < positive * 9 / 10,
            "{kept} of {positive}"
        );
        for (&x, &y) in src.iter().zip(&want) {
            assert!(y == 0.0 || (x > 0.0 && y == x * mask.scale), "{x} -> {y}");
        }
    }
}
