//! Fused CPU kernels for the non-convolution layers of a block: ReLU + dropout, batch norm
//! with batch statistics, and residual add + ReLU + 2x2 max-pool.
//!
//! With [`super::fastconv`] making the convolutions fast, burn-flex's generic versions of these
//! layers took most of a training step (measured with `perf`): batch norm's statistics go
//! through channel transposes (`swap_dims` + copy), dropout draws its mask from a general
//! random generator one element at a time, and add / ReLU / pool are separate passes, each with
//! its own autodiff node. Here each is one pass forward and one pass backward over `NCHW` data,
//! through the same backend-extension route as `fastconv` (flex and `flex().autodiff()`; other
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
use burn::backend::{
    backend_extension, Autodiff, Backend, Dispatch, DispatchDevice, Flex, TensorMetadata,
};
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;
use std::sync::Arc;

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
        let mask: Vec<f32> = (0..data.num_elements())
            .map(|i| keep_scale(seed, i, threshold(p), scale(p)))
            .collect();
        let mask = Tensor::<4>::from_data(TensorData::new(mask, dims), &y.device());
        return y * mask;
    }
    Tensor::from_dispatch(<Dispatch as FastOpsBackend>::fast_relu_dropout(
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
    Tensor::from_dispatch(<Dispatch as FastOpsBackend>::fast_add_relu_pool(
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
    let stats = Tensor::<1>::from_dispatch(<Dispatch as FastOpsBackend>::fast_batch_stats(
        x.clone().detach().into_dispatch(),
    ));
    let mean = stats.clone().narrow(0, 0, c);
    let var = stats.narrow(0, c, c);
    let out = Tensor::from_dispatch(<Dispatch as FastOpsBackend>::fast_bn_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
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
    Tensor::from_dispatch(<Dispatch as FastOpsBackend>::fast_bn_eval(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        mean.into_dispatch(),
        var.into_dispatch(),
        epsilon,
    ))
}

/// The backend extension through which the functions above reach the kernels; implemented
/// for `Flex` and `Autodiff<Flex, C>` (the generated `Dispatch` implementation panics on other
/// backends, which is why callers check [`is_fast_path`] first).
#[backend_extension(Flex, Autodiff)]
pub trait FastOpsBackend: Backend {
    fn fast_relu_dropout(x: FloatTensor<Self>, p: f64, seed: u64) -> FloatTensor<Self>;
    fn fast_add_relu_pool(y: FloatTensor<Self>, skip: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Per-channel mean (first `C` values) and biased variance (next `C`); not differentiable.
    fn fast_batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;
    fn fast_bn_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
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

use super::fastconv::{contiguous, f32s, from_vec, FlexTensor};
type AdTensor<C> = FloatTensor<Autodiff<Flex, C>>;

impl FastOpsBackend for Flex {
    fn fast_relu_dropout(x: FlexTensor, p: f64, seed: u64) -> FlexTensor {
        relu_dropout_fwd(&contiguous(x), p, seed)
    }

    fn fast_add_relu_pool(y: FlexTensor, skip: FlexTensor) -> FlexTensor {
        pool_fwd(&contiguous(y), &contiguous(skip), false).0
    }

    fn fast_batch_stats(x: FlexTensor) -> FlexTensor {
        let x = contiguous(x);
        let (mean, var) = batch_stats(f32s(&x), &dims4(&x));
        let mut v = mean;
        v.extend(var);
        let n = v.len();
        from_vec(v, vec![n])
    }

    fn fast_bn_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> FlexTensor {
        bn_fwd(
            &contiguous(x),
            &contiguous(gamma),
            &contiguous(beta),
            epsilon,
        )
        .0
    }

    fn fast_bn_eval(
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

impl<C: CheckpointStrategy> FastOpsBackend for Autodiff<Flex, C> {
    fn fast_bn_eval(
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

    fn fast_relu_dropout(x: AdTensor<C>, p: f64, seed: u64) -> AdTensor<C> {
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

    fn fast_add_relu_pool(y: AdTensor<C>, skip: AdTensor<C>) -> AdTensor<C> {
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

    fn fast_batch_stats(x: AdTensor<C>) -> AdTensor<C> {
        AdTensor::<C>::new(<Flex as FastOpsBackend>::fast_batch_stats(
            x.into_primitive(),
        ))
    }

    fn fast_bn_train(
        x: AdTensor<C>,
        gamma: AdTensor<C>,
        beta: AdTensor<C>,
        epsilon: f64,
    ) -> AdTensor<C> {
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
                    epsilon,
                );
                prep.finish((x_id, g_id, Arc::new((mean, inv_std))), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(
                bn_fwd(
                    &contiguous(x.into_primitive()),
                    &contiguous(gamma.into_primitive()),
                    &contiguous(beta.into_primitive()),
                    epsilon,
                )
                .0,
            ),
        }
    }
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
            let (out, grad) = (contiguous(out), contiguous(grad));
            let (o, g) = (f32s(&out), f32s(&grad));
            let mut dx = vec![0f32; o.len()];
            dx.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, d)| {
                let base = ci * CHUNK;
                for (j, v) in d.iter_mut().enumerate() {
                    let i = base + j;
                    *v = if o[i] > 0.0 { g[i] * s } else { 0.0 };
                }
            });
            grads.register::<Flex>(node.id, from_vec(dx, out.shape().to_vec()));
        }
    }
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
        let (idx, [n, c, h, w]) = ops.state;
        let (ho, wo) = (h / 2, w / 2);
        let g = f32s(&grad);
        let mut dx = vec![0f32; n * c * h * w];
        dx.par_chunks_mut(h * w).enumerate().for_each(|(plane, d)| {
            let gi = &g[plane * ho * wo..(plane + 1) * ho * wo];
            let ii = &idx[plane * ho * wo..(plane + 1) * ho * wo];
            for oy in 0..ho {
                for ox in 0..wo {
                    let k = ii[oy * wo + ox];
                    if k != NONE {
                        let (dy, dxo) = ((k >> 1) as usize, (k & 1) as usize);
                        d[(2 * oy + dy) * w + 2 * ox + dxo] = gi[oy * wo + ox];
                    }
                }
            }
        });
        let dx = from_vec(dx, vec![n, c, h, w]);
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
        let [n, c, h, w] = dims4(&x);
        let hw = h * w;
        let (xs, gs, dys) = (f32s(&x), f32s(&gamma), f32s(&grad));
        let (mean, inv_std) = (&stats.0, &stats.1);
        // Per channel: sum(dy) and sum(dy * xhat).
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mut s1, mut s2) = (0f64, 0f64);
                for img in 0..n {
                    let o = (img * c + ch) * hw;
                    let (mut a, mut b) = (0f32, 0f32);
                    for i in o..o + hw {
                        a += dys[i];
                        b += dys[i] * (xs[i] - mean[ch]);
                    }
                    s1 += a as f64;
                    s2 += b as f64 * inv_std[ch] as f64;
                }
                (s1, s2)
            })
            .collect();
        if let Some(node) = node_x {
            let m = (n * hw) as f64;
            let mut dx = vec![0f32; xs.len()];
            dx.par_chunks_mut(hw).enumerate().for_each(|(plane, d)| {
                let ch = plane % c;
                let o = plane * hw;
                let k = gs[ch] * inv_std[ch];
                let mdy = (sums[ch].0 / m) as f32;
                let mdyx = (sums[ch].1 / m) as f32;
                for (j, v) in d.iter_mut().enumerate() {
                    let xhat = (xs[o + j] - mean[ch]) * inv_std[ch];
                    *v = k * (dys[o + j] - mdy - xhat * mdyx);
                }
            });
            grads.register::<Flex>(node.id, from_vec(dx, vec![n, c, h, w]));
        }
        if let Some(node) = node_g {
            let dg: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
            grads.register::<Flex>(node.id, from_vec(dg, vec![c]));
        }
        if let Some(node) = node_b {
            let db: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
            grads.register::<Flex>(node.id, from_vec(db, vec![c]));
        }
    }
}

const NONE: u8 = u8::MAX;

fn threshold(p: f64) -> u32 {
    (p * 4_294_967_296.0).min(u32::MAX as f64) as u32
}

fn scale(p: f64) -> f32 {
    (1.0 / (1.0 - p)) as f32
}

/// `scale` if element `i` is kept under `seed`, else 0 (splitmix64 of the pair).
#[inline(always)]
fn keep_scale(seed: u64, i: usize, threshold: u32, scale: f32) -> f32 {
    let mut z = seed
        ^ (i as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    if ((z >> 32) as u32) >= threshold {
        scale
    } else {
        0.0
    }
}

fn relu_dropout_fwd(x: &FlexTensor, p: f64, seed: u64) -> FlexTensor {
    let xs = f32s(x);
    let (t, s) = (threshold(p), scale(p));
    let mut out = vec![0f32; xs.len()];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, o)| {
        let base = ci * CHUNK;
        if p == 0.0 {
            for (j, v) in o.iter_mut().enumerate() {
                *v = xs[base + j].max(0.0);
            }
        } else {
            for (j, v) in o.iter_mut().enumerate() {
                let xv = xs[base + j];
                *v = if xv > 0.0 {
                    xv * keep_scale(seed, base + j, t, s)
                } else {
                    0.0
                };
            }
        }
    });
    from_vec(out, x.shape().to_vec())
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
        let base = plane * h * w;
        let mut ix = ix;
        for oy in 0..ho {
            for ox in 0..wo {
                let mut best = 0f32;
                let mut k = NONE;
                for (q, (dy, dx)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                    let i = base + (2 * oy + dy) * w + 2 * ox + dx;
                    let v = ys[i] + ss[i];
                    if v > best {
                        best = v;
                        k = q as u8;
                    }
                }
                o[oy * wo + ox] = best;
                if let Some(ix) = ix.as_deref_mut() {
                    ix[oy * wo + ox] = k;
                }
            }
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

/// Per-channel mean and biased variance (two passes, f64 totals).
fn batch_stats(xs: &[f32], &[n, c, h, w]: &[usize; 4]) -> (Vec<f32>, Vec<f32>) {
    let hw = h * w;
    let m = (n * hw).max(1) as f64;
    let r: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut s = 0f64;
            for img in 0..n {
                let o = (img * c + ch) * hw;
                s += xs[o..o + hw].iter().map(|&v| v as f64).sum::<f64>();
            }
            let mean = s / m;
            let mut q = 0f64;
            for img in 0..n {
                let o = (img * c + ch) * hw;
                q += xs[o..o + hw]
                    .iter()
                    .map(|&v| {
                        let d = v as f64 - mean;
                        d * d
                    })
                    .sum::<f64>();
            }
            (mean as f32, (q / m) as f32)
        })
        .collect();
    r.into_iter().unzip()
}

/// Normalised output, batch mean and inverse standard deviation.
fn bn_fwd(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    epsilon: f64,
) -> (FlexTensor, Vec<f32>, Vec<f32>) {
    let d = dims4(x);
    let (mean, var) = batch_stats(f32s(x), &d);
    let inv_std: Vec<f32> = var
        .iter()
        .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
        .collect();
    let out = normalise(x, f32s(gamma), f32s(beta), &mean, &inv_std);
    (out, mean, inv_std)
}

/// `(x - mean) * inv_std * gamma + beta` per channel of an `NCHW` tensor.
fn normalise(x: &FlexTensor, gs: &[f32], bs: &[f32], mean: &[f32], inv_std: &[f32]) -> FlexTensor {
    let d = dims4(x);
    let [_, c, h, w] = d;
    let xs = f32s(x);
    let hw = (h * w).max(1);
    let mut out = vec![0f32; xs.len()];
    out.par_chunks_mut(hw).enumerate().for_each(|(plane, o)| {
        let ch = plane % c;
        let k = gs[ch] * inv_std[ch];
        let b = bs[ch] - mean[ch] * k;
        let src = &xs[plane * hw..(plane + 1) * hw];
        for (v, &s) in o.iter_mut().zip(src) {
            *v = s * k + b;
        }
    });
    from_vec(out, d.to_vec())
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    t.shape().dims::<4>()
}
