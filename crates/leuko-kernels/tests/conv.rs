//! `leuko_kernels::conv::conv2d` against burn's stock `conv2d`: forward values, gradients on
//! the autodiff device, the fallback path, and one optimiser step through it.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::module::conv2d as stock_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use leuko_kernels::conv::{conv2d, is_fast_path, with_algorithm, Algorithm};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A tensor of uniform values in [-1, 1), reproducible from `seed`.
fn random<const D: usize>(dims: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = dims.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_data(TensorData::new(values, dims), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 tensor data")
}

/// Asserts `got ≈ want` elementwise, within `1e-4` of the largest magnitude in `want` (the
/// kernels sum in a different order than burn, so bit equality is not expected).
fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-4 * scale,
        "{what}: max abs diff {worst} exceeds 1e-4 x {scale}"
    );
}

/// One test geometry: batch, input and output channels, height, width, kernel size, bias.
#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    k: usize,
    bias: bool,
}

const fn case(
    n: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    k: usize,
    bias: bool,
) -> Case {
    Case {
        n,
        c_in,
        c_out,
        h,
        w,
        k,
        bias,
    }
}

/// Odd sizes, channel counts that are and are not multiples of the register blocks, batch 1
/// and 3, both kernel sizes, with and without bias.
const CASES: &[Case] = &[
    case(1, 3, 16, 5, 7, 3, true),
    case(3, 5, 6, 7, 5, 3, false),
    case(1, 1, 1, 1, 1, 3, true),
    case(3, 16, 16, 9, 11, 3, true),
    case(1, 7, 3, 4, 13, 3, false),
    case(3, 17, 9, 8, 8, 3, true),
    case(2, 32, 48, 6, 6, 3, true),
    case(1, 3, 16, 5, 7, 1, true),
    case(3, 16, 32, 7, 5, 1, false),
    case(3, 7, 5, 3, 9, 1, true),
    case(1, 2, 1, 1, 1, 1, false),
    case(1, 16, 16, 64, 64, 3, true),
    // Winograd tiles: one tile; whole groups of 8 tiles plus a remainder, odd height and width.
    case(1, 8, 8, 1, 1, 3, true),
    case(2, 8, 12, 5, 37, 3, true),
    // Wide rows: several bands per image and more (image, band) tasks than reduction chunks.
    case(5, 16, 16, 20, 300, 3, true),
    case(2, 16, 8, 9, 700, 1, true),
    // 1x1 on the tensors' own layout, backward too (rows of whole vectors): one band; several
    // bands with more tasks than reduction chunks, a short last column block (16 input
    // channels) and a partial last strip of positions.
    case(2, 12, 8, 33, 24, 1, true),
    case(5, 16, 8, 20, 296, 1, true),
];

impl Case {
    fn padding(&self) -> usize {
        self.k / 2
    }

    fn inputs(&self, seed: u64, device: &Device) -> (Tensor<4>, Tensor<4>, Option<Tensor<1>>) {
        let x = random([self.n, self.c_in, self.h, self.w], seed, device);
        let w = random([self.c_out, self.c_in, self.k, self.k], seed + 1, device);
        let b = self.bias.then(|| random([self.c_out], seed + 2, device));
        (x, w, b)
    }

    fn stock(&self, x: Tensor<4>, w: Tensor<4>, b: Option<Tensor<1>>) -> Tensor<4> {
        let p = self.padding();
        stock_conv2d(x, w, b, ConvOptions::new([1, 1], [p, p], [1, 1], 1))
    }
}

#[test]
fn the_flex_devices_take_the_fast_path_on_avx2_machines() {
    let avx2 = cfg!(target_arch = "x86_64") && {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    };
    assert_eq!(is_fast_path(&Device::flex()), avx2);
    assert_eq!(is_fast_path(&Device::flex().autodiff()), avx2);
}

/// Both algorithms of the 3x3 kernels (every case runs under each).
const ALGORITHMS: [Algorithm; 2] = [Algorithm::Winograd, Algorithm::Direct];

#[test]
fn forward_matches_stock_conv2d() {
    let device = Device::flex();
    for algorithm in ALGORITHMS {
        for (i, c) in CASES.iter().enumerate() {
            let (x, w, b) = c.inputs(10 * i as u64, &device);
            let want = values(c.stock(x.clone(), w.clone(), b.clone()));
            let got = with_algorithm(algorithm, || conv2d(x, w, b, c.padding()));
            assert_eq!(got.dims(), [c.n, c.c_out, c.h, c.w], "{c:?}: dims");
            assert_close(&values(got), &want, &format!("{algorithm:?} {c:?}"));
        }
    }
}

#[test]
fn the_algorithm_switch_changes_the_kernels_of_wide_3x3_layers_only() {
    let device = Device::flex();
    let run = |c: Case, algorithm| {
        let (x, w, b) = c.inputs(5, &device);
        values(with_algorithm(algorithm, || conv2d(x, w, b, c.padding())))
    };
    // 16 channels: Winograd and direct round differently (both are held to burn's above).
    let wide = case(2, 16, 16, 12, 12, 3, true);
    assert_ne!(run(wide, Algorithm::Winograd), run(wide, Algorithm::Direct));
    // 3 input channels (the first layer) and 1x1 kernels always run the direct kernels.
    for c in [
        case(2, 3, 16, 12, 12, 3, true),
        case(2, 16, 16, 12, 12, 1, true),
    ] {
        assert_eq!(
            run(c, Algorithm::Winograd),
            run(c, Algorithm::Direct),
            "{c:?}"
        );
    }
    // The choice is scoped: the default is back afterwards.
    assert_eq!(leuko_kernels::conv::algorithm(), Algorithm::Winograd);
}

#[test]
fn forward_reads_non_contiguous_inputs() {
    let device = Device::flex();
    let c = case(2, 4, 8, 6, 9, 3, true);
    let (x, w, b) = c.inputs(7, &device);
    // A transposed view of a [n, c, w, h] tensor: same values, non-contiguous strides.
    let x_t = x.clone().swap_dims(2, 3).into_data();
    let x_view = Tensor::<4>::from_data(x_t, &device).swap_dims(2, 3);
    let w_view =
        Tensor::<4>::from_data(w.clone().swap_dims(0, 1).into_data(), &device).swap_dims(0, 1);
    let want = values(c.stock(x, w, b.clone()));
    assert_close(
        &values(conv2d(x_view, w_view, b, 1)),
        &want,
        "non-contiguous",
    );
}

/// Gradients of `sum(conv(x, w, b) * r)` w.r.t. `x`, `w` and `b` through `f`.
fn grads(
    c: &Case,
    seed: u64,
    f: impl Fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>) -> Tensor<4>,
) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let device = Device::flex().autodiff();
    let (x, w, b) = c.inputs(seed, &device);
    let (x, w, b) = (
        x.require_grad(),
        w.require_grad(),
        b.map(Tensor::require_grad),
    );
    let r = random([c.n, c.c_out, c.h, c.w], seed + 3, &device);
    let loss = (f(x.clone(), w.clone(), b.clone()) * r).sum();
    let g = loss.backward();
    let grad = |t: Option<Tensor<4>>| values(t.expect("gradient registered"));
    (
        grad(x.grad(&g)),
        grad(w.grad(&g)),
        b.map(|b| values(b.grad(&g).expect("bias gradient registered"))),
    )
}

#[test]
fn gradients_match_stock_conv2d() {
    for algorithm in ALGORITHMS {
        for (i, c) in CASES.iter().enumerate() {
            let seed = 100 + 10 * i as u64;
            let (dx, dw, db) = with_algorithm(algorithm, || {
                grads(c, seed, |x, w, b| conv2d(x, w, b, c.padding()))
            });
            let (sx, sw, sb) = grads(c, seed, |x, w, b| c.stock(x, w, b));
            let what = format!("{algorithm:?} {c:?}");
            assert_close(&dx, &sx, &format!("{what} grad x"));
            assert_close(&dw, &sw, &format!("{what} grad weight"));
            match (db, sb) {
                (Some(db), Some(sb)) => assert_close(&db, &sb, &format!("{what} grad bias")),
                (None, None) => {}
                _ => panic!("{what}: bias gradient presence differs"),
            }
        }
    }
}

#[test]
fn gradients_are_deterministic() {
    // Weight and bias gradients are sums over many parallel tasks; the order must not vary.
    let c = case(5, 16, 16, 20, 300, 3, true);
    for algorithm in ALGORITHMS {
        let run = || with_algorithm(algorithm, || grads(&c, 77, |x, w, b| conv2d(x, w, b, 1)));
        let first = run();
        for _ in 0..3 {
            assert_eq!(run(), first, "{algorithm:?}");
        }
    }
}

#[test]
fn only_requested_gradients_are_computed() {
    // Input without gradient (the network's first layer), weight and bias tracked.
    let device = Device::flex().autodiff();
    let c = case(2, 3, 8, 5, 6, 3, true);
    let (x, w, b) = c.inputs(5, &device);
    let (w, b) = (w.require_grad(), b.map(Tensor::require_grad));
    let r = random([c.n, c.c_out, c.h, c.w], 9, &device);
    let g = (conv2d(x.clone(), w.clone(), b.clone(), 1) * r.clone())
        .sum()
        .backward();
    assert!(x.grad(&g).is_none());
    let dw = values(w.grad(&g).expect("weight gradient"));
    let db = values(b.expect("bias").grad(&g).expect("bias gradient"));

    let (x2, w2, b2) = c.inputs(5, &device);
    let (w2, b2) = (w2.require_grad(), b2.map(Tensor::require_grad));
    let g2 = (c.stock(x2, w2.clone(), b2.clone()) * r).sum().backward();
    assert_close(
        &dw,
        &values(w2.grad(&g2).expect("stock weight gradient")),
        "weight",
    );
    assert_close(
        &db,
        &values(b2.expect("bias").grad(&g2).expect("stock bias gradient")),
        "bias",
    );
}

#[test]
fn weights_off_the_autodiff_device_act_as_constants() {
    // A tracked input with weights living on the plain flex device (e.g. a frozen model).
    let c = case(2, 4, 6, 5, 7, 3, true);
    let (x, _, _) = c.inputs(31, &Device::flex().autodiff());
    let (_, w, b) = c.inputs(31, &Device::flex());
    let r = random([c.n, c.c_out, c.h, c.w], 34, &Device::flex().autodiff());
    let x = x.require_grad();
    let g = (conv2d(x.clone(), w.clone(), b.clone(), 1) * r.clone())
        .sum()
        .backward();
    let dx = values(x.grad(&g).expect("input gradient"));

    let (x2, w2, b2) = c.inputs(31, &Device::flex().autodiff());
    let x2 = x2.require_grad();
    let g2 = (c.stock(x2.clone(), w2, b2) * r).sum().backward();
    assert_close(
        &dx,
        &values(x2.grad(&g2).expect("stock input gradient")),
        "input",
    );
}

#[test]
fn unsupported_geometries_fall_back_to_stock_conv2d() {
    // 3x3 without padding and 5x5 are outside the kernels; results must still be burn's.
    let device = Device::flex();
    for (k, p) in [(3, 0), (5, 2), (1, 1)] {
        let x = random([2, 3, 8, 7], 1, &device);
        let w = random([4, 3, k, k], 2, &device);
        let want = values(stock_conv2d(
            x.clone(),
            w.clone(),
            None,
            ConvOptions::new([1, 1], [p, p], [1, 1], 1),
        ));
        assert_close(
            &values(conv2d(x, w, None, p)),
            &want,
            &format!("k={k} p={p}"),
        );
    }
}

/// Two convolutions, enough to exercise input gradients between layers.
#[derive(Module, Debug)]
struct TinyNet {
    c1: Conv2d,
    c2: Conv2d,
}

impl TinyNet {
    fn new(device: &Device) -> Self {
        Self {
            c1: Conv2dConfig::new([3, 8], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            c2: Conv2dConfig::new([8, 4], [1, 1]).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let conv = |c: &Conv2d, x, p| conv2d(x, c.weight.val(), c.bias.as_ref().map(Param::val), p);
        let y = burn::tensor::activation::relu(conv(&self.c1, x, 1));
        conv(&self.c2, y, 0)
    }
}

#[test]
fn one_adam_step_lowers_the_loss() {
    let device = Device::flex().autodiff();
    let x = random([4, 3, 10, 12], 21, &device);
    let target = random([4, 4, 10, 12], 22, &device);
    let loss = |net: &TinyNet| {
        (net.forward(x.clone()) - target.clone())
            .powf_scalar(2.0)
            .mean()
    };

    let mut net = TinyNet::new(&device);
    let mut optim = AdamConfig::new().init();
    let before = loss(&net);
    let before_value = values(before.clone())[0];
    let grads = GradientsParams::from_grads(before.backward(), &net);
    net = optim.step(1e-2, net, grads);
    let after_value = values(loss(&net))[0];
    assert!(
        after_value < before_value,
        "loss did not fall: {before_value} -> {after_value}"
    );
}

#[test]
fn fused_relu_dropout_equals_the_separate_ops_bit_for_bit() {
    use leuko_kernels::conv::conv2d_relu_dropout;
    use leuko_kernels::ops::relu_dropout;
    // The direct kernels (3 input channels), Winograd (16 in, 16 out) with several bands and an
    // odd size, and a 1x1 convolution (the epilogue as a separate pass); with and without
    // dropout.
    let geometries = [
        ([2, 3, 37, 29], 16, 3),
        ([2, 16, 66, 64], 16, 3),
        ([3, 16, 9, 11], 24, 3),
        ([2, 8, 10, 12], 16, 1),
    ];
    for (i, (dims, c_out, k)) in geometries.into_iter().enumerate() {
        for p in [0.0, 0.2] {
            let device = Device::flex().autodiff();
            let seed = 100 + i as u64;
            let x = random(dims, seed, &device).require_grad();
            let w = random([c_out, dims[1], k, k], seed + 1, &device).require_grad();
            let b = random([c_out], seed + 2, &device).require_grad();
            let leaf4 = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &device).require_grad();
            let (x2, w2) = (leaf4(&x), leaf4(&w));
            let b2 = Tensor::<1>::from_data(b.to_data(), &device).require_grad();
            let pad = k / 2;
            let out = conv2d_relu_dropout(x.clone(), w.clone(), b.clone(), pad, p, 7 + i as u64);
            let out2 = relu_dropout(
                conv2d(x2.clone(), w2.clone(), Some(b2.clone()), pad),
                p,
                7 + i as u64,
            );
            let dims_out = out.dims();
            let m = random(dims_out, seed + 3, &device);
            let g = (out.clone() * m.clone()).sum().backward();
            let g2 = (out2.clone() * m).sum().backward();
            let what = |part: &str| format!("{part}, input {dims:?}, {c_out} out, k {k}, p {p}");
            let (o, o2) = (values(out), values(out2));
            assert_eq!(o, o2, "{}", what("forward"));
            assert!(
                o.contains(&0.0) && o.iter().any(|v| *v > 0.0),
                "{}",
                what("relu")
            );
            assert_eq!(
                values(x.grad(&g).unwrap()),
                values(x2.grad(&g2).unwrap()),
                "{}",
                what("dx")
            );
            assert_eq!(
                values(w.grad(&g).unwrap()),
                values(w2.grad(&g2).unwrap()),
                "{}",
                what("dw")
            );
            assert_eq!(
                values(b.grad(&g).unwrap()),
                values(b2.grad(&g2).unwrap()),
                "{}",
                what("db")
            );
        }
    }
}
