//! The network, its file format and the training step.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Device;
use leuko::data::ClassLabel;
use leuko::model::file::{load_model, model_from_bytes, model_to_bytes, save_model, ModelMeta};
use leuko::model::NetConfig;
use leuko::preprocess::{images_tensor, labels_tensor};
use leuko::train::config::InputConfig;
use rand::{Rng, SeedableRng};

fn meta(net: &NetConfig) -> ModelMeta {
    ModelMeta {
        net: net.clone(),
        classes: ClassLabel::ALL[..4].to_vec(),
        input: InputConfig::Crop {
            size: 32,
            margin: 0.0,
            keep_aspect: false,
            white_balance: false,
            normalise_stain: false,
            mask_context: false,
        },
        isolation: Default::default(),
        experiment: "test".into(),
        seed: 1,
        epoch: 1,
        review_threshold: None,
        class_prior: None,
        parent: None,
        data_source: None,
        familiarity: None,
    }
}

fn random_batch(n: usize, size: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x = (0..n * 3 * size * size)
        .map(|_| rng.random::<f32>())
        .collect();
    let y = (0..n).map(|i| i % 4).collect();
    (x, y)
}

/// Smooth images (like micrographs) whose class shows in their colour balance.
fn coloured_batch(n: usize, size: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let y: Vec<usize> = (0..n).map(|i| i % 4).collect();
    let mut x = vec![0f32; n * 3 * size * size];
    for (i, &c) in y.iter().enumerate() {
        for ch in 0..3 {
            let base = 0.5 + 0.1 * ((c + ch) % 4) as f32;
            for p in 0..size * size {
                x[(i * 3 + ch) * size * size + p] = base + 0.02 * rng.random::<f32>();
            }
        }
    }
    (x, y)
}

#[test]
fn reference_nets_have_the_keras_parameter_counts() {
    let final_net = NetConfig::new(vec![16, 32, 48, 64], 4);
    let baseline = NetConfig::new(vec![16, 32], 4);
    assert_eq!(final_net.keras_param_count(), 122_180);
    assert_eq!(baseline.keras_param_count(), 17_588);
    // burn counts trainable parameters; Keras adds 2 running statistics per BN channel.
    let device = Device::flex();
    let m = final_net.init(&device);
    assert_eq!(
        m.num_params(),
        122_180,
        "burn counts running statistics too"
    );
    let m = baseline.init(&device);
    assert_eq!(m.num_params(), 17_588);
    assert!((final_net.forward_flops(128, 128) / 1e6 - 317.0).abs() < 3.0);
}

#[test]
fn output_shape_is_batch_by_classes() {
    let device = Device::flex();
    let net = NetConfig::new(vec![16, 32], 4).init(&device);
    let (x, _) = random_batch(3, 48, 1);
    let logits = net.valid().forward(images_tensor(x, 3, 48, 48, &device));
    assert_eq!(logits.dims(), [3, 4]);
    // Non-square inputs (whole photos) work too.
    let (x, _) = random_batch(2, 32, 2);
    let logits = net.valid().forward(images_tensor(
        x[..2 * 3 * 16 * 64].to_vec(),
        2,
        64,
        16,
        &device,
    ));
    assert_eq!(logits.dims(), [2, 4]);
}

#[test]
fn training_steps_lower_the_loss_on_a_fixed_batch() {
    let device = Device::flex().autodiff();
    device.seed(3);
    let mut model = NetConfig::new(vec![8, 16], 4).init(&device);
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let (x, y) = coloured_batch(8, 24, 3);
    let loss_at = |m: &leuko::model::LeukoNet| {
        let l = loss_fn.forward(
            m.forward(images_tensor(x.clone(), 8, 24, 24, &device)),
            labels_tensor(&y, &device),
        );
        l.into_data().iter::<f32>().next().unwrap()
    };
    let first = loss_at(&model);
    for _ in 0..15 {
        let loss = loss_fn.forward(
            model.forward(images_tensor(x.clone(), 8, 24, 24, &device)),
            labels_tensor(&y, &device),
        );
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    let last = loss_at(&model);
    assert!(last < first - 0.2, "loss {first} -> {last}");
}

#[test]
fn saved_model_reloads_with_identical_predictions() {
    let device = Device::flex();
    let net = NetConfig::new(vec![8, 16], 4);
    let model = net.init(&device);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.leuko");
    save_model(&path, &model, &meta(&net)).unwrap();
    let (loaded, m) = load_model(&path, &device).unwrap();
    assert_eq!(m, meta(&net));
    let (x, _) = random_batch(2, 32, 4);
    let a = model
        .valid()
        .forward(images_tensor(x.clone(), 2, 32, 32, &device))
        .into_data();
    let b = loaded
        .valid()
        .forward(images_tensor(x, 2, 32, 32, &device))
        .into_data();
    assert_eq!(a, b);
}

#[test]
fn corrupt_truncated_and_incompatible_model_files_are_clear_errors() {
    let device = Device::flex();
    let net = NetConfig::new(vec![8, 16], 4);
    let bytes = model_to_bytes(&net.init(&device), &meta(&net)).unwrap();
    let err = |b: &[u8]| {
        model_from_bytes(b, "m.leuko", &device)
            .unwrap_err()
            .to_string()
    };
    assert!(err(b"hello").contains("not a leuko model"));
    assert!(err(&bytes[..30]).contains("m.leuko"));
    let e = err(&bytes[..bytes.len() - 100]);
    assert!(e.contains("checksum"), "{e}");
    // A file of the first format version (no checksum), truncated: its weights do not decode.
    let mut v1 = bytes[..bytes.len() - 8].to_vec();
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    assert!(model_from_bytes(&v1, "m.leuko", &device).is_ok());
    let e = err(&v1[..v1.len() - 100]);
    assert!(e.contains("weights"), "{e}");
    // A header that describes another network than the weights hold (with a valid checksum).
    let with_checksum = |mut body: Vec<u8>| {
        let sum = leuko::model::file::fnv1a64(&body);
        body.extend_from_slice(&sum.to_le_bytes());
        body
    };
    let other = NetConfig::new(vec![8, 32], 4);
    let swapped = model_to_bytes(&other.init(&device), &meta(&other)).unwrap();
    let good_header_len = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
    let other_header_len = u64::from_le_bytes(swapped[12..20].try_into().unwrap()) as usize;
    let mut franken = bytes[..20 + good_header_len].to_vec();
    franken.extend_from_slice(&swapped[20 + other_header_len..swapped.len() - 8]);
    let e = err(&with_checksum(franken));
    assert!(e.contains("incompatible"), "{e}");
    // A class prior that does not fit the classes, or is not a frequency.
    for prior in [vec![0.5, 0.5], vec![0.5, 0.5, -0.1, 0.1], vec![0.0; 4]] {
        let m = ModelMeta {
            class_prior: Some(prior),
            ..meta(&net)
        };
        let e = err(&model_to_bytes(&net.init(&device), &m).unwrap());
        assert!(e.contains("m.leuko") && e.contains("class_prior"), "{e}");
    }
    let m = ModelMeta {
        class_prior: Some(vec![0.6, 0.25, 0.1, 0.05]),
        ..meta(&net)
    };
    let (_, back) = model_from_bytes(
        &model_to_bytes(&net.init(&device), &m).unwrap(),
        "m",
        &device,
    )
    .unwrap();
    assert_eq!(back, m);
}

#[test]
fn eval_mode_agrees_with_train_mode_after_training() {
    // With few optimizer steps, batch-norm running statistics lag behind the batch
    // statistics and eval-mode predictions can collapse to one class; training
    // therefore recalibrates them after each epoch (`train::recalibrate`).
    let device = Device::flex().autodiff();
    device.seed(5);
    // Dropout off, so that train mode differs from eval mode only in batch norm.
    let mut cfg = NetConfig::new(vec![8, 16], 4);
    cfg.dropout = 0.0;
    let mut model = cfg.init(&device);
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let (n, size) = (32u32, 24u32);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let labels: Vec<usize> = (0..n as usize).map(|i| i % 4).collect();
    let images: Vec<image::RgbImage> = labels
        .iter()
        .map(|&c| {
            image::RgbImage::from_fn(size, size, |_, _| {
                image::Rgb(
                    [0, 1, 2].map(|ch| (120 + 25 * ((c + ch) % 4) + rng.random_range(0..6)) as u8),
                )
            })
        })
        .collect();
    let refs: Vec<&image::RgbImage> = images.iter().collect();
    let x = leuko::preprocess::plain_batch(&refs);
    for _ in 0..40 {
        let loss = loss_fn.forward(
            model.forward(images_tensor(x.clone(), n as usize, size, size, &device)),
            labels_tensor(&labels, &device),
        );
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    let set = leuko::preprocess::InputSet {
        ids: (0..n).collect(),
        labels: labels.clone(),
        images: images.clone(),
        not_found: vec![],
        frames: vec![None; n as usize],
        looks: vec![Vec::new(); n as usize],
    };
    let order: Vec<usize> = (0..n as usize).collect();
    let model = leuko::train::recalibrate(model, &set, &order, 16, 2, &device);
    let argmax = |v: &[f32]| -> usize {
        v.iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
            .0
    };
    let train_logits: Vec<f32> = model
        .forward(images_tensor(x, n as usize, size, size, &device))
        .into_data()
        .iter::<f32>()
        .collect();
    let train_mode: Vec<usize> = train_logits.chunks(4).map(argmax).collect();
    let eval_mode: Vec<usize> =
        leuko::infer::predict_probs(&model, &refs, 8, leuko::infer::Views::Single)
            .unwrap()
            .iter()
            .map(|p| argmax(p))
            .collect();
    let agree = train_mode
        .iter()
        .zip(&eval_mode)
        .filter(|(a, b)| a == b)
        .count();
    assert!(
        agree >= n as usize * 9 / 10,
        "train {train_mode:?}\neval  {eval_mode:?}"
    );
}

#[test]
fn running_statistics_with_momentum_one_reproduce_train_mode() {
    let device = Device::flex().autodiff();
    device.seed(6);
    let mut cfg = NetConfig::new(vec![8, 16], 4);
    cfg.dropout = 0.0;
    cfg.bn_momentum = 1.0;
    let model = cfg.init(&device);
    let (x, _) = random_batch(16, 24, 8);
    let train_logits: Vec<f32> = model
        .forward(images_tensor(x.clone(), 16, 24, 24, &device))
        .into_data()
        .iter::<f32>()
        .collect();
    let eval_logits: Vec<f32> = model
        .valid()
        .forward(images_tensor(x, 16, 24, 24, &Device::flex()))
        .into_data()
        .iter::<f32>()
        .collect();
    let max_diff = train_logits
        .iter()
        .zip(&eval_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        max_diff < 1e-3,
        "max diff {max_diff}\n{train_logits:?}\n{eval_logits:?}"
    );
}

#[test]
fn dihedral_views_average_the_eight_flips_and_rotations() {
    use image::imageops::{flip_horizontal, flip_vertical, rotate90};
    let device = Device::flex();
    let net = NetConfig::new(vec![4, 8], 4);
    let model = net.init(&device);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let img = image::RgbImage::from_fn(16, 16, |_, _| image::Rgb(rng.random::<[u8; 3]>()));
    // The 8 symmetries of the square, as separate single-view inputs.
    let t = rotate90(&flip_horizontal(&img));
    let views = [
        img.clone(),
        flip_horizontal(&img),
        flip_vertical(&img),
        flip_vertical(&flip_horizontal(&img)),
        t.clone(),
        flip_horizontal(&t),
        flip_vertical(&t),
        flip_vertical(&flip_horizontal(&t)),
    ];
    let refs: Vec<&image::RgbImage> = views.iter().collect();
    let single =
        leuko::infer::predict_probs(&model, &refs, 8, leuko::infer::Views::Single).unwrap();
    let mean: Vec<f32> = (0..4)
        .map(|k| single.iter().map(|p| p[k]).sum::<f32>() / 8.0)
        .collect();
    let tta =
        leuko::infer::predict_probs(&model, &[&img], 8, leuko::infer::Views::Dihedral).unwrap();
    assert_eq!(tta.len(), 1);
    for (a, b) in tta[0].iter().zip(&mean) {
        assert!(
            (a - b).abs() < 1e-5,
            "dihedral {:?} vs mean of views {mean:?}",
            tta[0]
        );
    }
    // A random network is not symmetric: the views really differ.
    assert!(single.iter().any(|p| (p[0] - single[0][0]).abs() > 1e-6));
    assert!((tta[0].iter().sum::<f32>() - 1.0).abs() < 1e-5);
}

/// A model file records its isolation settings; a header without them (files written before
/// the field existed, like the embedded model's) loads with the defaults it was trained with.
#[test]
fn isolation_settings_round_trip_and_default_for_old_files() {
    let device = Device::flex();
    let net = NetConfig::new(vec![4, 8], 4);
    let mut m = meta(&net);
    m.isolation.merge_gap_fraction *= 2.0;
    let bytes = model_to_bytes(&net.init(&device), &m).unwrap();
    let (_, back) = model_from_bytes(&bytes, "m", &device).unwrap();
    assert_eq!(back.isolation, m.isolation);
    let (old, _) = leuko::model::file::read_meta(leuko::predict::EMBEDDED_MODEL).unwrap();
    assert_eq!(old.isolation, leuko::isolate::IsolationConfig::default());
}

/// The photo profile round-trips, and a header without one (as files written before it existed)
/// still loads, with no profile.
#[test]
fn photo_profile_round_trips_and_old_files_load_without_one() {
    let device = Device::flex();
    let net = NetConfig::new(vec![4, 8], 4);
    let m = meta(&net);
    assert!(m.familiarity.is_none());
    let old_bytes = model_to_bytes(&net.init(&device), &m).unwrap();
    let header = String::from_utf8_lossy(&old_bytes[20..200]).into_owned();
    assert!(!header.contains("familiarity"), "{header}");
    let (_, back) = model_from_bytes(&old_bytes, "old", &device).unwrap();
    assert!(back.familiarity.is_none());
    let (embedded, _) = leuko::model::file::read_meta(leuko::predict::EMBEDDED_MODEL).unwrap();
    let fam = embedded
        .familiarity
        .expect("the default model records its photos");
    assert_eq!(fam.look.names.len(), leuko::familiar::LOOK_NAMES.len());
    let m2 = leuko::model::file::ModelMeta {
        familiarity: Some(fam.clone()),
        ..m
    };
    let (_, back) = model_from_bytes(
        &model_to_bytes(&net.init(&device), &m2).unwrap(),
        "m",
        &device,
    )
    .unwrap();
    assert_eq!(back.familiarity, Some(fam));
}

/// A bit flipped anywhere in a model file (header, weights or checksum) is caught on load,
/// with an error naming the file.
#[test]
fn bit_flips_anywhere_in_a_model_file_are_detected() {
    let device = Device::flex();
    let bytes = leuko::predict::EMBEDDED_MODEL;
    assert!(model_from_bytes(bytes, "default.leuko", &device).is_ok());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for _ in 0..200 {
        let mut damaged = bytes.to_vec();
        let at = rng.random_range(0..damaged.len());
        damaged[at] ^= 1 << rng.random_range(0..8u32);
        let e = match model_from_bytes(&damaged, "default.leuko", &device) {
            Ok(_) => panic!("a flipped bit at byte {at} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("default.leuko"), "{e}");
    }
    // Cut short: no checksum to match.
    let e = model_from_bytes(&bytes[..bytes.len() - 100], "m", &device).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
}

/// Header values out of range are refused on load, naming the field, before anything runs.
#[test]
fn header_values_out_of_range_are_refused() {
    let device = Device::flex();
    let net = NetConfig::new(vec![4, 8], 4);
    let crop = |size: u32, margin: f64| InputConfig::Crop {
        size,
        margin,
        keep_aspect: false,
        white_balance: false,
        normalise_stain: false,
        mask_context: false,
    };
    let cases: Vec<(ModelMeta, &str)> = vec![
        (
            ModelMeta {
                input: crop(20000, 0.0),
                ..meta(&net)
            },
            "input size",
        ),
        (
            ModelMeta {
                input: crop(0, 0.0),
                ..meta(&net)
            },
            "input size",
        ),
        (
            ModelMeta {
                input: crop(32, -0.5),
                ..meta(&net)
            },
            "margin",
        ),
        (
            ModelMeta {
                review_threshold: Some(5.0),
                ..meta(&net)
            },
            "review_threshold",
        ),
        (
            ModelMeta {
                classes: vec![
                    ClassLabel::Neutrophil,
                    ClassLabel::Neutrophil,
                    ClassLabel::Lymphocyte,
                    ClassLabel::Monocyte,
                ],
                ..meta(&net)
            },
            "twice",
        ),
    ];
    for (m, field) in cases {
        let bytes = model_to_bytes(&net.init(&device), &m).unwrap();
        let e = model_from_bytes(&bytes, "m.leuko", &device)
            .err()
            .unwrap_or_else(|| panic!("{field}: loaded"))
            .to_string();
        assert!(e.contains("m.leuko") && e.contains(field), "{field}: {e}");
    }
}
