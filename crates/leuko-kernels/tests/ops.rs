//! `leuko_kernels::ops` against burn's stock layers: forward values and gradients on the
//! autodiff device, and the dropout mask's statistics and reproducibility.

use burn::tensor::{Device, Tensor, TensorData};
use leuko_kernels::ops::{
    add_relu_pool, batch_norm_add_relu_pool_train, batch_norm_eval, batch_norm_train, is_fast_path,
    relu_dropout,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random<const D: usize>(dims: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = dims.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_data(TensorData::new(values, dims), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-4 * scale, "{what}: max abs diff {worst}");
}

#[test]
fn fused_path_is_taken_on_flex() {
    assert!(is_fast_path(&Device::flex()));
    assert!(is_fast_path(&Device::flex().autodiff()));
}

#[test]
fn relu_without_dropout_matches_stock_relu_and_its_gradient() {
    let device = Device::flex().autodiff();
    let x = random([2, 3, 5, 7], 1, &device).require_grad();
    let w = random([2, 3, 5, 7], 2, &device);
    let got = relu_dropout(x.clone(), 0.0, 9);
    let g1 = (got.clone() * w.clone()).sum().backward();
    let gx = values(x.grad(&g1).unwrap());

    let x2 = Tensor::from_data(x.to_data(), &device).require_grad();
    let want = burn::tensor::activation::relu(x2.clone());
    let g2 = (want.clone() * w).sum().backward();
    assert_close(&values(got), &values(want), "relu forward");
    assert_close(&gx, &values(x2.grad(&g2).unwrap()), "relu gradient");
}

#[test]
fn dropout_keeps_the_right_share_scaled_and_is_reproducible() {
    let device = Device::flex().autodiff();
    // All positive, so ReLU passes everything and only dropout zeroes.
    let x = (random([4, 8, 32, 32], 3, &device).abs() + 0.5).require_grad();
    let p = 0.2;
    let y = relu_dropout(x.clone(), p, 77);
    let (xs, ys) = (values(x.clone()), values(y.clone()));
    let kept = ys.iter().filter(|v| **v != 0.0).count() as f64 / ys.len() as f64;
    assert!((kept - 0.8).abs() < 0.01, "kept share {kept}");
    for (a, b) in xs.iter().zip(&ys) {
        assert!(*b == 0.0 || (b - a / 0.8).abs() < 1e-5);
    }
    // Same seed, same mask; another seed, another mask.
    assert_eq!(values(relu_dropout(x.clone(), p, 77)), ys);
    assert_ne!(values(relu_dropout(x.clone(), p, 78)), ys);
    // Gradient: 1/(1-p) where kept, 0 where dropped.
    let g = y.sum().backward();
    let gx = values(x.grad(&g).unwrap());
    for (gv, yv) in gx.iter().zip(&ys) {
        let want = if *yv != 0.0 { 1.0 / 0.8 } else { 0.0 };
        assert!((gv - want).abs() < 1e-5);
    }
}

#[test]
fn add_relu_pool_matches_stock_layers_and_gradients() {
    for dims in [[2, 3, 8, 6], [1, 2, 7, 5], [3, 4, 16, 16]] {
        let device = Device::flex().autodiff();
        let y = random(dims, 4, &device).require_grad();
        let s = random(dims, 5, &device).require_grad();
        let out = add_relu_pool(y.clone(), s.clone());
        let wd = out.dims();
        let w = random(wd, 6, &device);
        let g = (out.clone() * w.clone()).sum().backward();
        let (gy, gs) = (values(y.grad(&g).unwrap()), values(s.grad(&g).unwrap()));

        let y2 = Tensor::from_data(y.to_data(), &device).require_grad();
        let s2 = Tensor::from_data(s.to_data(), &device).require_grad();
        let want = burn::nn::pool::MaxPool2dConfig::new([2, 2])
            .with_strides([2, 2])
            .init()
            .forward(burn::tensor::activation::relu(y2.clone() + s2.clone()));
        assert_eq!(want.dims(), wd);
        let g2 = (want.clone() * w).sum().backward();
        assert_close(&values(out), &values(want), "pool forward");
        assert_close(&gy, &values(y2.grad(&g2).unwrap()), "pool gradient (y)");
        assert_close(&gs, &values(s2.grad(&g2).unwrap()), "pool gradient (skip)");
    }
}

#[test]
fn batch_norm_matches_stock_batch_norm_train_and_gradients() {
    // Channel counts below, at and past the kernels' groups of four channels.
    for (c, seed) in [(3, 7), (4, 17), (6, 27), (9, 37)] {
        batch_norm_matches_stock(c, seed);
    }
}

fn batch_norm_matches_stock(c: usize, seed: u64) {
    let device = Device::flex().autodiff();
    let dims = [4, c, 6, 5];
    let x = (random(dims, seed, &device) * 3.0 + 1.0).require_grad();
    let gamma = (random([c], seed + 1, &device) + 1.5).require_grad();
    let beta = random([c], seed + 2, &device).require_grad();
    let (out, mean, var) = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-3);
    let w = random(dims, seed + 3, &device);
    let g = (out.clone() * w.clone()).sum().backward();

    let x2 = Tensor::from_data(x.to_data(), &device).require_grad();
    let g2t = Tensor::from_data(gamma.to_data(), &device).require_grad();
    let b2 = Tensor::from_data(beta.to_data(), &device).require_grad();
    let r = burn::tensor::module::batch_norm_train(x2.clone(), g2t.clone(), b2.clone(), 1e-3);
    let g2 = (r.output.clone() * w).sum().backward();
    let what = |part: &str| format!("bn {part}, {c} channels");
    assert_close(&values(out), &values(r.output), &what("forward"));
    assert_close(&values(mean), &values(r.mean), &what("mean"));
    assert_close(&values(var), &values(r.variance), &what("variance"));
    assert_close(
        &values(x.grad(&g).unwrap()),
        &values(x2.grad(&g2).unwrap()),
        &what("gradient (x)"),
    );
    assert_close(
        &values(gamma.grad(&g).unwrap()),
        &values(g2t.grad(&g2).unwrap()),
        &what("gradient (gamma)"),
    );
    assert_close(
        &values(beta.grad(&g).unwrap()),
        &values(b2.grad(&g2).unwrap()),
        &what("gradient (beta)"),
    );
}

#[test]
fn fused_batch_norm_add_relu_pool_equals_the_separate_ops_bit_for_bit() {
    // Odd sizes (a trailing row and column the pooling drops), more rows than the fused
    // kernel's scratch holds, widths on and off its eight-window vector step, 1 to 5 channels.
    for (dims, seed) in [
        ([2, 3, 7, 9], 41),
        ([3, 5, 21, 16], 51),
        ([2, 1, 34, 40], 61),
        ([1, 4, 2, 2], 71),
    ] {
        fused_equals_separate(dims, seed);
    }
}

fn fused_equals_separate(dims: [usize; 4], seed: u64) {
    let device = Device::flex().autodiff();
    let c = dims[1];
    let x = (random(dims, seed, &device) * 3.0 + 0.5).require_grad();
    let skip = random(dims, seed + 1, &device).require_grad();
    let gamma = (random([c], seed + 2, &device) + 1.5).require_grad();
    let beta = random([c], seed + 3, &device).require_grad();
    let pooled = [dims[0], c, dims[2] / 2, dims[3] / 2];
    let w = random(pooled, seed + 4, &device);
    let leaf = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &device).require_grad();
    let leaf1 = |t: &Tensor<1>| Tensor::<1>::from_data(t.to_data(), &device).require_grad();
    let (x2, skip2, gamma2, beta2) = (leaf(&x), leaf(&skip), leaf1(&gamma), leaf1(&beta));

    let (out, mean, var) =
        batch_norm_add_relu_pool_train(x.clone(), gamma.clone(), beta.clone(), 1e-3, skip.clone());
    let g = (out.clone() * w.clone()).sum().backward();
    let (y2, mean2, var2) = batch_norm_train(x2.clone(), gamma2.clone(), beta2.clone(), 1e-3);
    let out2 = add_relu_pool(y2, skip2.clone());
    let g2 = (out2.clone() * w).sum().backward();

    let what = |part: &str| format!("{part}, dims {dims:?}");
    assert_eq!(values(out), values(out2), "{}", what("forward"));
    assert_eq!(values(mean), values(mean2), "{}", what("mean"));
    assert_eq!(values(var), values(var2), "{}", what("variance"));
    for (got, want, part) in [
        (x.grad(&g), x2.grad(&g2), "gradient (x)"),
        (skip.grad(&g), skip2.grad(&g2), "gradient (skip)"),
    ] {
        assert_eq!(
            values(got.unwrap()),
            values(want.unwrap()),
            "{}",
            what(part)
        );
    }
    for (got, want, part) in [
        (gamma.grad(&g), gamma2.grad(&g2), "gradient (gamma)"),
        (beta.grad(&g), beta2.grad(&g2), "gradient (beta)"),
    ] {
        assert_eq!(
            values(got.unwrap()),
            values(want.unwrap()),
            "{}",
            what(part)
        );
    }
    // Not a comparison of zeros: some elements win their window and pass gradient, most do not.
    let gs = values(skip.grad(&g).unwrap());
    assert!(
        gs.iter().any(|v| *v != 0.0) && gs.contains(&0.0),
        "{}",
        what("winners")
    );
}

#[test]
fn inference_batch_norm_matches_stock_batch_norm() {
    let device = Device::flex();
    let x = random([3, 4, 5, 6], 11, &device);
    let gamma = random([4], 12, &device) + 1.5;
    let beta = random([4], 13, &device);
    let mean = random([4], 14, &device);
    let var = random([4], 15, &device).abs() + 0.5;
    let got = batch_norm_eval(
        x.clone(),
        gamma.clone(),
        beta.clone(),
        mean.clone(),
        var.clone(),
        1e-3,
    );
    let want = burn::tensor::module::batch_norm(x, gamma, beta, mean, var, 1e-3);
    assert_close(&values(got), &values(want), "bn inference");
}
