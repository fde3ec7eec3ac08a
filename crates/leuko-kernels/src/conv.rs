//! Fast 2-D convolution (forward and backward) for the pure-Rust `flex` CPU backend.
//!
//! Training the leukocyte CNN on CPU spends most of its time in 3x3 and 1x1 convolutions; burn-flex
//! reaches 11-15 % of this machine's fp32 peak on them. This module replaces exactly that hot path
//! and nothing else: modules, autodiff, optimizers and every other op stay burn's own.
//!
//! # How it plugs into burn
//!
//! [`conv2d`] has the signature and semantics of `burn::tensor::module::conv2d` restricted to
//! stride 1, dilation 1, one group and square kernels of size 1 (padding 0) or 3 (padding 1).
//! On the `flex` device and on `flex().autodiff()` it routes through a backend extension trait,
//! [`KernelBackend`], implemented for `Flex` (the kernels below) and for `Autodiff<Flex, C>`
//! (a custom [`Backward`] step whose gradients are computed by the same kernels). Everywhere else
//! (another backend, another dtype, another kernel geometry, a CPU without AVX2+FMA) it calls
//! burn's stock `conv2d`, so callers never depend on this module being the one that runs.
//!
//! # The kernels
//!
//! Two algorithms, both in `kernels`:
//!
//! * **Winograd F(2x2, 3x3)** (`kernels::winograd`, the default for 3x3 layers with at least 8
//!   input and output channels, i.e. every 3x3 layer of the network but the first): each 2x2
//!   output tile from its 4x4 input tile with 16 multiply-adds per channel pair instead of 36,
//!   for the output and both gradients. The channel sums after the transforms run on the direct
//!   kernels' 1x1 register block and dot-product block. Results differ from the direct kernels in
//!   the last bits (both are held to burn's convolution by the same tests); [`with_algorithm`]
//!   selects the direct kernels instead, e.g. to compare speed (`leuko bench train --conv
//!   direct`).
//! * **Direct convolution** over a *flattened band*: a few image rows, all channels, copied into
//!   a thread-local buffer with one zero column per row and zero halo rows. In that layout a 3x3
//!   "same" convolution becomes a 1-D convolution with nine fixed offsets, so the inner loops are
//!   plain unit-stride SIMD loads without any boundary test:
//!   * forward / input gradient: a 4 output channels x 24 positions register block (12 AVX
//!     accumulators), each step one broadcast weight times three input vectors. The input
//!     gradient of a "same" convolution is the same convolution of the output gradient with the
//!     transposed, spatially flipped kernel.
//!   * weight gradient: a 4 output channels x 3 taps block of dot products over band positions,
//!     summed over bands and images in a fixed order (results do not depend on thread count or
//!     scheduling).
//!
//!   1x1 convolutions (the shortcuts) need no padding, so `kernels::pointwise` runs the same
//!   blocks on the tensors' own layout, without the band copies (same bits).
//!
//! [`conv2d_relu_dropout`] is the blocks' first convolution with its ReLU and dropout: the
//! forward drivers apply them to each task's output rows while those are still in cache (an
//! epilogue, `kernels::Epilogue`), and one backward step takes their gradient before the
//! convolution's. Same values as the two separate steps, one pass over the output fewer each way.
//!
//! The register blocks are inline assembly (AVX2 + FMA, see `kernels::avx` for why). Work is
//! split into (image, band) tasks on rayon's pool; bands are sized to keep a task's buffers in
//! the per-core L2 cache, and the buffers are reused per thread so steady-state calls allocate
//! only their result tensors (advised onto transparent huge pages: see
//! `kernels::output_buffer`).
//!
//! `cargo bench -p leuko-kernels` times forward plus backward of every convolution of the
//! classifier against burn-flex's own (docs/performance.md has the figures).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Dispatch, DispatchDevice, Flex, TensorMetadata};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Tensor};

use crate::backend::KernelBackend;
use crate::flex::{contiguous, f32s, from_vec, FlexTensor};
use crate::ops::ReluDropout;

/// Applies a 2-D convolution: stride 1, dilation 1, one group, square kernel, symmetric zero
/// padding `padding`.
///
/// Semantically identical to
/// `burn::tensor::module::conv2d(x, weight, bias, ConvOptions::new([1, 1], [padding, padding], [1, 1], 1))`
/// for every input, including its gradients on an autodiff device. Shapes are `x: [N, C_in, H, W]`,
/// `weight: [C_out, C_in, K, K]`, `bias: [C_out]`, output `[N, C_out, H + 2p - K + 1, W + 2p - K + 1]`.
///
/// The fast kernels run when [`is_fast_path`] holds for the device, the tensors are `f32` and the
/// geometry is a 1x1 kernel without padding or a 3x3 kernel with padding 1; every other call is
/// forwarded to burn's own `conv2d` (which also reports shape errors).
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    padding: usize,
) -> Tensor<4> {
    let fast = is_fast_path(&x.device())
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.as_ref().is_none_or(|b| b.dtype() == DType::F32)
        && ConvShape::from_dims(
            x.dims(),
            weight.dims(),
            bias.as_ref().map(|b| b.dims()[0]),
            padding,
        )
        .is_some();
    if !fast {
        return burn::tensor::module::conv2d(x, weight, bias, options(padding));
    }
    let (x, weight) = (x.into_dispatch(), weight.into_dispatch());
    let out = match bias {
        Some(b) => <Dispatch as KernelBackend>::fast_conv2d(x, weight, b.into_dispatch(), padding),
        None => <Dispatch as KernelBackend>::fast_conv2d_unbiased(x, weight, padding),
    };
    Tensor::from_dispatch(out)
}

/// `crate::ops::relu_dropout(conv2d(x, weight, Some(bias), padding), p, seed)`: the same values
/// and gradients, in one step. The fast kernels apply the ReLU and dropout to each task's output
/// rows while they are still in cache, instead of a separate pass that re-reads and re-writes
/// the whole output (on the first block of a batch of 32, 64 MiB of memory traffic each way).
pub fn conv2d_relu_dropout(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    padding: usize,
    p: f64,
    seed: u64,
) -> Tensor<4> {
    let fast = is_fast_path(&x.device())
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.dtype() == DType::F32
        && ReluDropout::new(p, seed).is_some()
        && ConvShape::from_dims(x.dims(), weight.dims(), Some(bias.dims()[0]), padding).is_some();
    if !fast {
        return crate::ops::relu_dropout(conv2d(x, weight, Some(bias), padding), p, seed);
    }
    Tensor::from_dispatch(<Dispatch as KernelBackend>::fast_conv2d_relu_dropout(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        padding,
        p,
        seed,
    ))
}

/// How the kernels compute the 3x3 convolutions with at least 8 input and output channels.
///
/// Both give the same convolution up to rounding (the tests hold both to burn's within the same
/// tolerance), but not bit-identical results, so a training run repeats exactly only under the
/// same algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// Winograd F(2x2, 3x3): 2.25x fewer multiply-adds for the transforms' extra additions.
    #[default]
    Winograd,
    /// Direct convolution (every layer with fewer channels uses it anyway).
    Direct,
}

thread_local! {
    static ALGORITHM: std::cell::Cell<Algorithm> = const { std::cell::Cell::new(Algorithm::Winograd) };
}

/// Runs `f` with the convolutions it starts on this thread computed by `algorithm` (the choice is
/// made on the calling thread, before work is split over rayon's pool; autodiff's backward pass
/// runs on the thread that calls `backward`). Restores the previous choice afterwards, also if
/// `f` panics.
pub fn with_algorithm<R>(algorithm: Algorithm, f: impl FnOnce() -> R) -> R {
    struct Restore(Algorithm);
    impl Drop for Restore {
        fn drop(&mut self) {
            ALGORITHM.with(|a| a.set(self.0));
        }
    }
    let _restore = Restore(ALGORITHM.with(|a| a.replace(algorithm)));
    f()
}

/// The algorithm convolutions started on this thread use now (see [`with_algorithm`]).
pub fn algorithm() -> Algorithm {
    ALGORITHM.with(|a| a.get())
}

/// Whether [`conv2d`] runs this module's kernels on `device` (for supported geometries and
/// `f32` tensors): true for `Device::flex()` and `Device::flex().autodiff()` on an x86-64 CPU with
/// AVX2 and FMA, false otherwise (burn's stock convolution runs instead).
pub fn is_fast_path(device: &Device) -> bool {
    kernels::available() && is_flex(device.as_dispatch())
}

/// True for the flex device, with or without autodiff.
#[allow(unreachable_patterns)] // Which variants exist depends on burn's enabled backends.
fn is_flex(device: &DispatchDevice) -> bool {
    match device {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(inner) => matches!(**inner, DispatchDevice::Flex(_)),
        _ => false,
    }
}

/// Burn's options for the convolutions this module implements.
fn options(padding: usize) -> ConvOptions<2> {
    ConvOptions::new([1, 1], [padding, padding], [1, 1], 1)
}

/// The flex (forward) side of the convolutions of [`KernelBackend`].
pub(crate) struct FlexConv;

impl FlexConv {
    pub(crate) fn fast_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        padding: usize,
    ) -> FlexTensor {
        flex_forward(x, weight, Some(bias), padding, None)
    }

    pub(crate) fn fast_conv2d_unbiased(
        x: FlexTensor,
        weight: FlexTensor,
        padding: usize,
    ) -> FlexTensor {
        flex_forward(x, weight, None, padding, None)
    }

    pub(crate) fn fast_conv2d_relu_dropout(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        padding: usize,
        p: f64,
        seed: u64,
    ) -> FlexTensor {
        match ReluDropout::new(p, seed) {
            Some(act) => flex_forward(x, weight, Some(bias), padding, Some(act)),
            None => <Flex as KernelBackend>::fast_relu_dropout(
                flex_forward(x, weight, Some(bias), padding, None),
                p,
                seed,
            ),
        }
    }
}

/// Forward convolution on flex tensors, followed by `act` if given: the kernels where they
/// apply, burn-flex's otherwise.
fn flex_forward(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    padding: usize,
    act: Option<ReluDropout>,
) -> FlexTensor {
    let Some(shape) = flex_shape(&x, &weight, bias.as_ref(), padding) else {
        let out = Flex::conv2d(x, weight, bias, options(padding));
        let Some(act) = act else {
            return out;
        };
        let out = contiguous(out);
        let dims = out.shape().to_vec();
        let mut values = f32s(&out).to_vec();
        act.apply(&mut values, 0);
        return from_vec(values, dims);
    };
    let x = contiguous(x);
    let weight = contiguous(weight);
    let bias = bias.map(contiguous);
    let apply = act.map(|a| move |run: &mut [f32], base: usize| a.apply(run, base));
    let epilogue: kernels::Epilogue = apply
        .as_ref()
        .map(|f| f as &(dyn Fn(&mut [f32], usize) + Sync));
    let out = kernels::forward(
        f32s(&x),
        f32s(&weight),
        bias.as_ref().map(f32s),
        &shape,
        epilogue,
    );
    from_vec(out, shape.output_dims())
}

/// The autodiff tensor over flex.
type AdTensor<C> = FloatTensor<Autodiff<Flex, C>>;

/// The autodiff side of the convolutions of [`KernelBackend`].
pub(crate) struct AutodiffConv<C>(std::marker::PhantomData<C>);

impl<C: CheckpointStrategy> AutodiffConv<C> {
    pub(crate) fn fast_conv2d(
        x: AdTensor<C>,
        weight: AdTensor<C>,
        bias: AdTensor<C>,
        padding: usize,
    ) -> AdTensor<C> {
        autodiff_forward::<C>(x, weight, Some(bias), padding)
    }

    pub(crate) fn fast_conv2d_unbiased(
        x: AdTensor<C>,
        weight: AdTensor<C>,
        padding: usize,
    ) -> AdTensor<C> {
        autodiff_forward::<C>(x, weight, None, padding)
    }

    pub(crate) fn fast_conv2d_relu_dropout(
        x: AdTensor<C>,
        weight: AdTensor<C>,
        bias: AdTensor<C>,
        padding: usize,
        p: f64,
        seed: u64,
    ) -> AdTensor<C> {
        let supported = flex_shape(
            x.primitive(),
            weight.primitive(),
            Some(bias.primitive()),
            padding,
        )
        .is_some();
        let act = ReluDropout::new(p, seed);
        let Some(act) = act.filter(|_| supported) else {
            // Two steps, each with its own gradient (also for shapes the kernels do not cover).
            let y = autodiff_forward::<C>(x, weight, Some(bias), padding);
            return <Autodiff<Flex, C> as KernelBackend>::fast_relu_dropout(y, p, seed);
        };
        match ConvReluDropout
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let conv = (prep.checkpoint(&x), prep.checkpoint(&weight), padding);
                let out = flex_forward(
                    x.into_primitive(),
                    weight.into_primitive(),
                    Some(bias.into_primitive()),
                    padding,
                    Some(act),
                );
                prep.finish((conv, out.clone(), act.scale()), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(flex_forward(
                x.into_primitive(),
                weight.into_primitive(),
                Some(bias.into_primitive()),
                padding,
                Some(act),
            )),
        }
    }
}

/// Forward convolution on autodiff tensors, registering [`ConvWithBias`] / [`ConvNoBias`] as
/// the backward step when any input is tracked. Mirrors burn-autodiff's own `conv2d`.
fn autodiff_forward<C: CheckpointStrategy>(
    x: AdTensor<C>,
    weight: AdTensor<C>,
    bias: Option<AdTensor<C>>,
    padding: usize,
) -> AdTensor<C> {
    let supported = flex_shape(
        x.primitive(),
        weight.primitive(),
        bias.as_ref().map(|b| b.primitive()),
        padding,
    )
    .is_some();
    if !supported {
        // Keep gradients correct for anything the kernels do not cover.
        return <Autodiff<Flex, C> as ModuleOps<Autodiff<Flex, C>>>::conv2d(
            x,
            weight,
            bias,
            options(padding),
        );
    }
    match bias {
        Some(bias) => match ConvWithBias
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&weight), padding);
                let out = flex_forward(
                    x.into_primitive(),
                    weight.into_primitive(),
                    Some(bias.into_primitive()),
                    padding,
                    None,
                );
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(flex_forward(
                x.into_primitive(),
                weight.into_primitive(),
                Some(bias.into_primitive()),
                padding,
                None,
            )),
        },
        None => match ConvNoBias
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&weight), padding);
                let out = flex_forward(
                    x.into_primitive(),
                    weight.into_primitive(),
                    None,
                    padding,
                    None,
                );
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(flex_forward(
                x.into_primitive(),
                weight.into_primitive(),
                None,
                padding,
                None,
            )),
        },
    }
}

/// Backward step of [`KernelBackend::fast_conv2d`]; parents are `[x, weight, bias]`.
#[derive(Debug)]
struct ConvWithBias;

/// Backward step of [`KernelBackend::fast_conv2d_unbiased`]; parents are `[x, weight]`.
#[derive(Debug)]
struct ConvNoBias;

/// What the backward steps keep: checkpointed `x` and `weight` (as burn's own conv2d does, so
/// gradient checkpointing strategies apply unchanged) and the padding.
type ConvState = (NodeId, NodeId, usize);

impl Backward<Flex, 3> for ConvWithBias {
    type State = ConvState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (dx, dw, db) = backward_grads(
            ops.state,
            grad,
            ckpt,
            [node_x.is_some(), node_w.is_some(), node_b.is_some()],
        );
        for (node, g) in [(node_x, dx), (node_w, dw), (node_b, db)] {
            if let (Some(node), Some(g)) = (node, g) {
                grads.register::<Flex>(node.id, g);
            }
        }
    }
}

impl Backward<Flex, 2> for ConvNoBias {
    type State = ConvState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (dx, dw, _) = backward_grads(
            ops.state,
            grad,
            ckpt,
            [node_x.is_some(), node_w.is_some(), false],
        );
        for (node, g) in [(node_x, dx), (node_w, dw)] {
            if let (Some(node), Some(g)) = (node, g) {
                grads.register::<Flex>(node.id, g);
            }
        }
    }
}

/// Backward step of [`KernelBackend::fast_conv2d_relu_dropout`]; parents are `[x, weight,
/// bias]`.
#[derive(Debug)]
struct ConvReluDropout;

impl Backward<Flex, 3> for ConvReluDropout {
    /// The convolution's state, the output after ReLU and dropout (positive exactly where the
    /// gradient passes) and the dropout's keep scale.
    type State = (ConvState, FlexTensor, f32);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (conv, out, scale) = ops.state;
        let grad = crate::ops::relu_dropout_backward(out, grad, scale);
        let (dx, dw, db) = backward_grads(
            conv,
            grad,
            ckpt,
            [node_x.is_some(), node_w.is_some(), node_b.is_some()],
        );
        for (node, g) in [(node_x, dx), (node_w, dw), (node_b, db)] {
            if let (Some(node), Some(g)) = (node, g) {
                grads.register::<Flex>(node.id, g);
            }
        }
    }
}

/// Gradients w.r.t. `x`, `weight` and bias for the output gradient `grad`; `need` says which of
/// the three the graph asks for, the others come back `None` and cost nothing.
fn backward_grads(
    (x_id, w_id, padding): ConvState,
    grad: FlexTensor,
    ckpt: &mut Checkpointer,
    need: [bool; 3],
) -> (Option<FlexTensor>, Option<FlexTensor>, Option<FlexTensor>) {
    let x = contiguous(ckpt.retrieve_node_output::<FlexTensor>(x_id));
    let weight = contiguous(ckpt.retrieve_node_output::<FlexTensor>(w_id));
    let grad = contiguous(grad);
    let Some(shape) = flex_shape(&x, &weight, None, padding) else {
        // The forward pass only registers this step for shapes `flex_shape` accepted.
        unreachable!("leuko-kernels: backward registered for an unsupported convolution");
    };
    let grads = kernels::backward(
        f32s(&x),
        f32s(&weight),
        f32s(&grad),
        &shape,
        kernels::Needs {
            input: need[0],
            weight: need[1],
            bias: need[2],
        },
    );
    (
        grads.input.map(|v| from_vec(v, shape.input_dims())),
        grads.weight.map(|v| from_vec(v, shape.weight_dims())),
        grads.bias.map(|v| from_vec(v, vec![shape.c_out])),
    )
}

/// The kernels' view of a flex convolution, or `None` when the kernels do not cover it (dtype,
/// geometry, or a CPU without AVX2+FMA) and burn's implementation must run.
fn flex_shape(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    padding: usize,
) -> Option<ConvShape> {
    let all_f32 = x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.is_none_or(|b| b.dtype() == DType::F32);
    if !all_f32 || !kernels::available() {
        return None;
    }
    let bias_len = match bias {
        Some(b) => Some(*b.shape().first()?),
        None => None,
    };
    ConvShape::from_dims(
        x.shape().dims::<4>(),
        weight.shape().dims::<4>(),
        bias_len,
        padding,
    )
}

/// Sizes of a convolution the kernels support: stride 1, dilation 1, one group,
/// `k x k` kernel with `k` = 1 (padding 0) or 3 (padding 1), so the output is `h x w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ConvShape {
    n: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    k: usize,
}

impl ConvShape {
    /// Validates dims and geometry; `None` for anything the kernels do not implement (burn's
    /// convolution then runs and reports invalid shapes in its own words).
    fn from_dims(
        x: [usize; 4],
        weight: [usize; 4],
        bias_len: Option<usize>,
        padding: usize,
    ) -> Option<Self> {
        let [n, c_in, h, w] = x;
        let [c_out, wc_in, kh, kw] = weight;
        let geometry_ok = kh == kw && matches!((kh, padding), (1, 0) | (3, 1));
        let sizes_ok = wc_in == c_in && [n, c_in, c_out, h, w].iter().all(|&d| d > 0);
        let bias_ok = bias_len.is_none_or(|b| b == c_out);
        (geometry_ok && sizes_ok && bias_ok).then_some(Self {
            n,
            c_in,
            c_out,
            h,
            w,
            k: kh,
        })
    }

    fn input_dims(&self) -> Vec<usize> {
        vec![self.n, self.c_in, self.h, self.w]
    }

    fn output_dims(&self) -> Vec<usize> {
        vec![self.n, self.c_out, self.h, self.w]
    }

    fn weight_dims(&self) -> Vec<usize> {
        vec![self.c_out, self.c_in, self.k, self.k]
    }
}

mod kernels;
