//! Training a classifier: Adam with exponential learning-rate decay, shuffled and
//! optionally oversampled / augmented batches, early stopping on validation loss
//! with the best weights restored, checkpoints written atomically, `--resume`.

pub mod average;
pub mod config;
pub mod plots;
pub mod run_dir;

use crate::data::{ClassLabel, Dataset};
use crate::error::{LeukoError, Result};
use crate::infer::{
    argmax, choose_review_threshold, evaluate_set, label_frequencies, tensor_to_vec, Prior, Views,
    MIN_REVIEW_THRESHOLD, REVIEW_MAX_FLAGGED, REVIEW_TARGET_ACCURACY,
};
use crate::metrics::Metrics;
use crate::model::file::{model_from_bytes, model_to_bytes, ModelMeta};
use crate::model::LeukoNet;
use crate::preprocess::{images_tensor, labels_tensor, plain_batch, prepare, InputSet};
use crate::split::{oversample, rng_for, Split};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Device;
use config::ExperimentConfig;
use image::RgbImage;
use rand::seq::SliceRandom;
use rayon::prelude::*;
pub use run_dir::RunDir;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// One row of `history.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub train_kappa: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_kappa: f64,
    pub learning_rate: f64,
    pub seconds: f64,
}

/// How a training run is carried out (not what is trained: that is the config).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub run_dir: RunDir,
    /// Continue an interrupted run in `run_dir`.
    pub resume: bool,
    /// No progress bars or per-epoch lines.
    pub quiet: bool,
    /// Batch size for evaluation passes.
    pub eval_batch: usize,
}

/// The result of a finished run.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub model: LeukoNet,
    pub meta: ModelMeta,
    pub history: Vec<EpochRecord>,
    pub best_epoch: usize,
    /// Wall time of the training epochs (not counting input preparation).
    pub train_seconds: f64,
    /// Test metrics with the model's class prior applied (as `predict` classifies).
    pub test: Metrics,
    /// Test metrics of the raw balanced outputs, when a prior was recorded.
    pub test_flat: Option<Metrics>,
    pub param_count: usize,
}

/// State saved after every epoch so that `--resume` can continue.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ResumeState {
    epochs_done: usize,
    steps_done: usize,
    best_epoch: usize,
    best_val_loss: f64,
    since_best: usize,
    train_seconds: f64,
    history: Vec<EpochRecord>,
    /// Epochs in the weight window (`[train] average_epochs`).
    #[serde(default)]
    averaged: usize,
}

/// The CPU training device (flex backend with autodiff).
pub fn training_device() -> Device {
    Device::flex().autodiff()
}

/// Replaces the batch-norm running statistics by their exact average over
/// `batches` training batches under the current weights ("precise BN").
///
/// With 10-15 optimizer steps per epoch the exponential running averages mix
/// statistics of weights that no longer exist, and eval-mode predictions can
/// collapse to one class (the Keras twin's finding). Averaging fresh batch
/// statistics (momentum 1/k for the k-th batch) removes that lag; the weights are
/// untouched and the usual momentum is restored afterwards.
pub fn recalibrate(
    model: LeukoNet,
    set: &InputSet,
    order: &[usize],
    batch: usize,
    batches: usize,
    device: &Device,
) -> LeukoNet {
    if batches == 0 || order.is_empty() {
        return model;
    }
    let momentum = model.bn_momentum();
    let mut model = model;
    let (w, h) = (set.images[0].width(), set.images[0].height());
    for (k, chunk) in order.chunks(batch.max(1)).take(batches).enumerate() {
        model = model.with_bn_momentum(1.0 / (k as f64 + 1.0));
        let imgs: Vec<&RgbImage> = chunk.iter().map(|&i| &set.images[i]).collect();
        let x = images_tensor(plain_batch(&imgs), imgs.len(), w, h, device);
        // Train-mode forward updates the running statistics; the output (and its graph) is dropped.
        drop(model.forward(x));
    }
    model.with_bn_momentum(momentum)
}

/// A run may be resumed only with the config and split it was started with:
/// anything else would mix two experiments in one history. The epoch budget
/// and patience are the exceptions, so that a finished run can be extended.
pub fn check_resumable(rd: &RunDir, cfg: &ExperimentConfig, split: &Split) -> Result<()> {
    let path = rd.config();
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(()); // nothing there yet: a fresh start
    };
    let earlier = ExperimentConfig::parse(&text)
        .map_err(|e| LeukoError::Config(format!("{}: {e}", path.display())))?;
    let mut now = cfg.clone();
    now.train.epochs = earlier.train.epochs;
    now.train.patience = earlier.train.patience;
    if now != earlier {
        return Err(LeukoError::Config(format!(
            "{}: this run was started with another config; --resume continues only the same \
             experiment (more epochs or patience allowed): choose another --out or remove the folder",
            path.display()
        )));
    }
    if let Ok(text) = std::fs::read_to_string(rd.split()) {
        if text != split.to_json() {
            return Err(LeukoError::Config(format!(
                "{}: this run was started on another split; --resume continues only the same split",
                rd.split().display()
            )));
        }
    }
    Ok(())
}

/// Trains `cfg` on `split` and evaluates the best epoch on the test part.
pub fn train(
    cfg: &ExperimentConfig,
    dataset: &Dataset,
    split: &Split,
    opts: &TrainOptions,
) -> Result<TrainOutcome> {
    let classes = split.classes.clone();
    let rd = &opts.run_dir;
    if opts.resume {
        check_resumable(rd, cfg, split)?;
    }
    rd.create()?;
    crate::fsutil::write_atomic(&rd.config(), cfg.to_toml()?.as_bytes())?;
    split.write(&rd.split())?;

    let prep_bar = crate::progress::bar(3, "preparing", opts.quiet);
    let train_set = prepare(&dataset.dir, &split.train, &classes, &cfg.input)?;
    prep_bar.inc(1);
    let val_set = prepare(&dataset.dir, &split.val, &classes, &cfg.input)?;
    prep_bar.inc(1);
    let test_set = prepare(&dataset.dir, &split.test, &classes, &cfg.input)?;
    prep_bar.finish_and_clear();
    if val_set.is_empty() {
        return Err(LeukoError::Invalid(
            "the split's validation part is empty: early stopping needs it".into(),
        ));
    }

    let net_cfg = cfg.net_config(classes.len());
    let device = training_device();
    device.seed(cfg.seed);
    let mut model = net_cfg.init(&device);
    let param_count = net_cfg.keras_param_count();
    let mut optim = AdamConfig::new().with_epsilon(1e-7).init();
    let gamma = cfg
        .train
        .lr_decay_rate
        .powf(1.0 / cfg.train.lr_decay_steps as f64);
    let mut scheduler = burn::optim::lr_scheduler::exponential::ExponentialLrSchedulerConfig::new(
        cfg.train.learning_rate,
        gamma,
    )
    .init()
    .map_err(LeukoError::Config)?;
    let loss_fn = CrossEntropyLossConfig::new()
        .with_smoothing(
            (cfg.train.label_smoothing > 0.0).then_some(cfg.train.label_smoothing as f32),
        )
        .init(&device);
    // Oversampling teaches the network that every type is equally common; the
    // model file keeps the real frequencies so that predictions can undo that.
    let class_prior = cfg
        .train
        .oversample
        .then(|| label_frequencies(&train_set.labels, classes.len()));
    let meta_for = |epoch: usize| ModelMeta {
        net: net_cfg.clone(),
        classes: classes.labels().to_vec(),
        input: cfg.input.clone(),
        isolation: crate::preprocess::training_isolation(),
        experiment: cfg.name.clone(),
        seed: cfg.seed,
        epoch,
        review_threshold: None,
        class_prior: class_prior.clone(),
    };

    let mut state = ResumeState {
        epochs_done: 0,
        steps_done: 0,
        best_epoch: 0,
        best_val_loss: f64::INFINITY,
        since_best: 0,
        train_seconds: 0.0,
        history: Vec::new(),
        averaged: 0,
    };
    let mut window = average::WeightWindow::new(cfg.train.average_epochs);
    let mut best_bytes: Option<Vec<u8>> = None;
    if opts.resume {
        if let Some((s, m, o)) = rd.read_resume::<ResumeState>()? {
            let (loaded, _) = model_from_bytes(&m, "checkpoint", &device)?;
            model = loaded;
            optim = optim
                .from_bytes(burn::tensor::Bytes::from_bytes_vec(o))
                .map_err(|e| {
                    LeukoError::Invalid(format!("{}: optimizer state: {e}", rd.root().display()))
                })?;
            for _ in 0..s.steps_done {
                scheduler.step();
            }
            best_bytes = std::fs::read(rd.model()).ok();
            if s.averaged > 0 {
                let path = rd.average_checkpoint();
                let bytes = std::fs::read(&path).map_err(|e| LeukoError::io(&path, e))?;
                window = average::WeightWindow::from_bytes(&bytes, &path)?;
                if window.len() != s.averaged {
                    return Err(LeukoError::Invalid(format!(
                        "{}: holds {} epochs, the checkpoint state {}: start the run afresh",
                        path.display(),
                        window.len(),
                        s.averaged
                    )));
                }
            }
            state = s;
            if !opts.quiet {
                eprintln!(
                    "resuming after epoch {} ({} steps)",
                    state.epochs_done, state.steps_done
                );
            }
        } else if !opts.quiet {
            eprintln!(
                "nothing to resume in {}: starting afresh",
                rd.root().display()
            );
        }
    }

    if state.epochs_done == 0 {
        // A fresh start: test metrics of an earlier run in this folder no longer
        // describe it (and `case-study --resume` takes metrics.json as "finished").
        match std::fs::remove_file(rd.metrics()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(LeukoError::io(rd.metrics(), e))
            }
            _ => {}
        }
    }

    // Training items: oversampled (seeded) once; reshuffled every epoch.
    let train_samples: Vec<usize> = if cfg.train.oversample {
        let s = oversample(&split.train, cfg.seed);
        let pos: std::collections::HashMap<u32, usize> = train_set
            .ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i))
            .collect();
        s.iter().map(|x| pos[&x.image_id]).collect()
    } else {
        (0..train_set.len()).collect()
    };
    let (w, h) = cfg.input.dims();
    let per_image = (3 * w * h) as usize;

    if let Some(aug) = &cfg.augment {
        let mut rng = rng_for(cfg.seed, "augment-grid");
        let picks: Vec<&RgbImage> = train_set.images.iter().take(4).collect();
        let grid = crate::augment::augmented_grid(&picks, aug, 6, &mut rng);
        crate::plot::save_png(&rd.augment_grid(), &grid)?;
    }

    let bs = cfg.train.batch_size;
    for epoch in state.epochs_done + 1..=cfg.train.epochs {
        let start = Instant::now();
        // Per-epoch generators: a resumed run continues exactly as an uninterrupted one.
        let mut rng = rng_for(cfg.seed, &format!("epoch-{epoch}"));
        device.seed(cfg.seed.wrapping_add(epoch as u64 * 7919));
        let mut order = train_samples.clone();
        order.shuffle(&mut rng);
        let batches = order.len().div_ceil(bs);
        let bar = crate::progress::bar(batches as u64, &format!("epoch {epoch}"), opts.quiet);
        let (mut loss_sum, mut truth, mut preds) = (0.0f64, Vec::new(), Vec::new());
        let mut lr = cfg.train.learning_rate;
        for chunk in order.chunks(bs) {
            let mut data = vec![0f32; per_image * chunk.len()];
            match &cfg.augment {
                Some(aug) => {
                    // Draw seeds serially so the result does not depend on thread timing.
                    let seeds: Vec<u64> =
                        chunk.iter().map(|_| rand::Rng::random(&mut rng)).collect();
                    data.par_chunks_mut(per_image)
                        .zip(chunk.par_iter().zip(seeds))
                        .for_each(|(out, (&i, seed))| {
                            let mut r =
                                <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
                            crate::augment::augment_into(&train_set.images[i], aug, &mut r, out);
                        });
                }
                None => {
                    data.par_chunks_mut(per_image)
                        .zip(chunk.par_iter())
                        .for_each(|(out, &i)| {
                            crate::augment::plain_into(&train_set.images[i], out)
                        });
                }
            }
            let labels: Vec<usize> = chunk.iter().map(|&i| train_set.labels[i]).collect();
            // Drawn only when on, so that configs without mixup keep their random stream.
            let mixup = cfg
                .augment
                .as_ref()
                .filter(|a| a.mixup > 0.0)
                .map(|a| crate::augment::Mixup::draw(chunk.len(), a.mixup, &mut rng));
            if let Some(m) = &mixup {
                m.apply(&mut data, per_image);
            }
            let x = images_tensor(data, chunk.len(), w, h, &device);
            let y = labels_tensor(&labels, &device);
            // One dropout seed per optimizer step: a resumed run draws the same masks.
            let dropout_seed =
                cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ state.steps_done as u64;
            let logits = model.forward_train(x, dropout_seed);
            let loss = match &mixup {
                None => loss_fn.forward(logits.clone(), y),
                Some(m) => {
                    let partners: Vec<usize> = m.partner.iter().map(|&j| labels[j]).collect();
                    let y2 = labels_tensor(&partners, &device);
                    loss_fn.forward(logits.clone(), y).mul_scalar(m.weight).add(
                        loss_fn
                            .forward(logits.clone(), y2)
                            .mul_scalar(1.0 - m.weight),
                    )
                }
            };
            let loss_value = tensor_to_vec(loss.clone())?
                .first()
                .copied()
                .unwrap_or(f32::NAN) as f64;
            let logits_v = tensor_to_vec(logits.detach())?;
            let k = classes.len();
            preds.extend(logits_v.chunks(k).map(argmax));
            truth.extend_from_slice(&labels);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let step_lr = scheduler.step();
            lr = cfg.train.learning_rate * gamma.powi(state.steps_done as i32 + 1);
            model = optim.step(step_lr, model, grads);
            state.steps_done += 1;
            loss_sum += loss_value * chunk.len() as f64;
            bar.inc(1);
            bar.set_message(format!(
                "epoch {epoch} loss {:.3}",
                loss_sum / truth.len() as f64
            ));
        }
        bar.finish_and_clear();
        model = recalibrate(
            model,
            &train_set,
            &order,
            bs,
            cfg.train.precise_bn_batches,
            &device,
        );
        let train_m = Metrics::compute(classes.labels(), &truth, &preds);
        let (val_loss, val_preds, _) =
            evaluate_set(&model, &val_set, opts.eval_batch, Views::Single, None)?;
        let val_m = Metrics::compute(classes.labels(), &val_set.labels, &val_preds);
        let seconds = start.elapsed().as_secs_f64();
        state.train_seconds += seconds;
        let rec = EpochRecord {
            epoch,
            train_loss: loss_sum / truth.len().max(1) as f64,
            train_accuracy: train_m.accuracy,
            train_kappa: train_m.kappa,
            val_loss,
            val_accuracy: val_m.accuracy,
            val_kappa: val_m.kappa,
            learning_rate: lr,
            seconds,
        };
        let improved = val_loss < state.best_val_loss;
        if !opts.quiet {
            eprintln!(
                "epoch {epoch:>3}  train loss {:.3} acc {:.3} kappa {:.3} | val loss {:.3} acc {:.3} kappa {:.3} | lr {:.2e} {:.1}s{}",
                rec.train_loss, rec.train_accuracy, rec.train_kappa, rec.val_loss, rec.val_accuracy, rec.val_kappa, lr, seconds,
                if improved { "  *best" } else { "" }
            );
        }
        state.history.push(rec);
        state.epochs_done = epoch;
        if improved {
            state.best_val_loss = val_loss;
            state.best_epoch = epoch;
            state.since_best = 0;
            let bytes = model_to_bytes(&model, &meta_for(epoch))?;
            crate::fsutil::write_atomic(&rd.model(), &bytes)?;
            best_bytes = Some(bytes);
        } else {
            state.since_best += 1;
        }
        if cfg.train.average_epochs > 0 {
            window.push(average::flat_params(&model)?)?;
            crate::fsutil::write_atomic(&rd.average_checkpoint(), &window.to_bytes())?;
            state.averaged = window.len();
        }
        let model_bytes = model_to_bytes(&model, &meta_for(epoch))?;
        let optim_bytes = optim
            .into_bytes()
            .map_err(|e| LeukoError::Invalid(format!("serialising the optimizer: {e}")))?;
        rd.write_resume(&state, &model_bytes, &optim_bytes)?;
        write_history(rd, &state.history)?;
        if state.since_best >= cfg.train.patience {
            if !opts.quiet {
                eprintln!(
                    "early stop: no better validation loss for {} epochs",
                    cfg.train.patience
                );
            }
            break;
        }
    }

    if let Some(mean) = window.mean() {
        let first = state.epochs_done + 1 - window.len();
        let averaged = average::with_flat_params(model, &mean)?;
        let mut order = train_samples.clone();
        order.shuffle(&mut rng_for(cfg.seed, "average-bn"));
        let averaged = recalibrate(averaged, &train_set, &order, bs, usize::MAX, &device);
        best_bytes = Some(model_to_bytes(&averaged, &meta_for(state.epochs_done))?);
        if !opts.quiet {
            eprintln!(
                "model: mean weights of epochs {first}-{} (batch-norm statistics over all training batches)",
                state.epochs_done
            );
        }
    }
    let best = best_bytes.ok_or_else(|| LeukoError::Invalid("no epoch was trained".into()))?;
    let (best_model, mut meta) = model_from_bytes(&best, "best checkpoint", &Device::flex())?;
    // The review threshold is chosen on validation predictions (never on test ones) and
    // recorded in the model file, so that `predict` flags what this model is unsure of.
    let prior = Prior::Data.weights(&meta).map(<[f32]>::to_vec);
    let (_, val_preds, val_probs) = evaluate_set(
        &best_model,
        &val_set,
        opts.eval_batch,
        Views::Single,
        prior.as_deref(),
    )?;
    let conf_correct: Vec<(f32, bool)> = val_probs
        .iter()
        .zip(&val_preds)
        .zip(&val_set.labels)
        .map(|((p, &pred), &truth)| (p[pred], pred == truth))
        .collect();
    meta.review_threshold =
        choose_review_threshold(&conf_correct, REVIEW_TARGET_ACCURACY, REVIEW_MAX_FLAGGED)
            .map(|t| t.max(MIN_REVIEW_THRESHOLD));
    crate::fsutil::write_atomic(&rd.model(), &model_to_bytes(&best_model, &meta)?)?;
    let val = Metrics::compute(classes.labels(), &val_set.labels, &val_preds);
    let (_, test_preds, test_probs) = evaluate_set(
        &best_model,
        &test_set,
        opts.eval_batch,
        Views::Single,
        prior.as_deref(),
    )?;
    let test = Metrics::compute(classes.labels(), &test_set.labels, &test_preds);
    // The same network without the prior, for comparison (as `--prior flat` predicts).
    let test_flat = match prior {
        Some(_) => {
            let (_, p, _) =
                evaluate_set(&best_model, &test_set, opts.eval_batch, Views::Single, None)?;
            Some(Metrics::compute(classes.labels(), &test_set.labels, &p))
        }
        None => None,
    };

    let metrics_json = serde_json::json!({
        "experiment": cfg.name,
        "seed": cfg.seed,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epochs_done,
        "averaged_epochs": window.len(),
        "train_seconds": state.train_seconds,
        "parameters_keras_count": param_count,
        "review_threshold": meta.review_threshold,
        "class_prior": meta.class_prior,
        "val": val,
        "test": test,
        "test_flat_prior": &test_flat,
        "test_photos_without_leukocyte": test_set.not_found,
    });
    crate::fsutil::write_atomic(
        &rd.metrics(),
        serde_json::to_string_pretty(&metrics_json)
            .map_err(|e| LeukoError::Invalid(format!("cannot write metrics.json: {e}")))?
            .as_bytes(),
    )?;
    plots::curves(&rd.curves(), &state.history, state.best_epoch)?;
    plots::confusion(
        &rd.confusion(),
        &test,
        &format!("{}: test confusion matrix", cfg.name),
    )?;
    let errors = plots::error_tiles(&test_set, classes.labels(), &test_preds, |i| {
        test_probs[i][test_preds[i]]
    });
    plots::error_gallery(
        &rd.test_errors(),
        &errors,
        &format!(
            "{}: {} of {} test photos misclassified (true → predicted), most confident first",
            cfg.name,
            errors.len(),
            test_set.len()
        ),
    )?;
    Ok(TrainOutcome {
        model: best_model,
        meta,
        history: state.history,
        best_epoch: state.best_epoch,
        train_seconds: state.train_seconds,
        test,
        test_flat,
        param_count,
    })
}

fn write_history(rd: &RunDir, history: &[EpochRecord]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in history {
        w.serialize(r)
            .map_err(|e| LeukoError::Invalid(e.to_string()))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| LeukoError::Invalid(e.to_string()))?;
    crate::fsutil::write_atomic(&rd.history(), &bytes)
}

/// The class labels of a model's outputs.
pub fn class_names(classes: &[ClassLabel]) -> Vec<String> {
    classes.iter().map(|c| c.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::apply_prior;

    #[test]
    fn prior_reweights_and_renormalises_by_bayes_rule() {
        // A balanced network unsure between two types (0.5 / 0.5) follows the
        // prior; a 0.2 / 0.8 call against a 0.8 / 0.2 prior becomes a tie
        // (0.16 / 0.16).
        let mut p = vec![vec![0.5, 0.5], vec![0.2, 0.8], vec![1.0, 0.0]];
        apply_prior(&mut p, Some(&[0.8, 0.2]));
        let want = [[0.8, 0.2], [0.5, 0.5], [1.0, 0.0]];
        for (got, want) in p.iter().zip(want) {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
            }
        }
        let mut q = vec![vec![0.3, 0.7]];
        apply_prior(&mut q, None);
        assert_eq!(q, vec![vec![0.3, 0.7]]);
        // All mass on classes the prior rules out: left as it is rather than NaN.
        let mut z = vec![vec![0.0, 1.0]];
        apply_prior(&mut z, Some(&[1.0, 0.0]));
        assert_eq!(z, vec![vec![0.0, 1.0]]);
    }

    #[test]
    fn label_frequencies_count_each_class() {
        assert_eq!(
            label_frequencies(&[0, 0, 1, 3], 4),
            vec![0.5, 0.25, 0.0, 0.25]
        );
        assert_eq!(label_frequencies(&[], 2), vec![0.0, 0.0]);
    }
}
