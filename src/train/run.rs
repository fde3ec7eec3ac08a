//! One training run, in named steps: [`prepare`] the inputs, set up or [`Run::resume`] the
//! network and optimizer, [`Run::epoch`] after epoch (each [`Run::validate`]d and
//! [`Run::checkpoint`]ed), then [`Run::finish`] (averaged weights, review threshold, test
//! metrics, `metrics.json` and plots). Progress reaches the caller as [`TrainEvent`]s.

use super::config::ExperimentConfig;
use super::{average, plots, recalibrate, write_history, EpochRecord, RunDir, TrainOptions};
use super::{ResumeState, TrainOutcome};
use crate::data::{ClassSet, Dataset};
use crate::error::{LeukoError, Result};
use crate::infer::{
    argmax, choose_review_threshold, evaluate_set, label_frequencies, tensor_to_vec, Prior, Views,
    MIN_REVIEW_THRESHOLD, REVIEW_MAX_FLAGGED, REVIEW_TARGET_ACCURACY,
};
use crate::metrics::Metrics;
use crate::model::file::{model_from_bytes, model_to_bytes, ModelMeta};
use crate::model::{LeukoNet, NetConfig};
use crate::preprocess::{images_tensor, labels_tensor, prepare as prepare_set, InputSet};
use crate::split::{oversample, rng_for, Split};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::lr_scheduler::exponential::ExponentialLrSchedulerConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use image::RgbImage;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// What a run tells its caller while it goes.
#[derive(Debug, Clone, Copy)]
pub enum TrainEvent<'a> {
    /// `--resume` found a checkpoint and continues after it.
    Resuming {
        epochs_done: usize,
        steps_done: usize,
    },
    /// `--resume` found nothing to continue in the run directory.
    NothingToResume { dir: &'a Path },
    /// `--resume` skipped a newer checkpoint that was incomplete or damaged (the run was
    /// stopped while writing it) and continues from an older one.
    SkippedCheckpoint { path: &'a Path, why: &'a str },
    /// An epoch ended; `improved`: its validation loss is the best so far.
    Epoch {
        record: &'a EpochRecord,
        improved: bool,
    },
    /// Training stopped early: no better validation loss for `patience` epochs.
    EarlyStop { patience: usize },
    /// The model kept is the mean of the weights of epochs `first..=last`.
    Averaged { first: usize, last: usize },
}

/// Receives a run's [`TrainEvent`]s (the command line prints them; tests and `--quiet`
/// ignore them).
pub trait TrainObserver {
    fn event(&mut self, event: TrainEvent<'_>);
}

/// An observer that ignores every event.
pub struct Silent;

impl TrainObserver for Silent {
    fn event(&mut self, _: TrainEvent<'_>) {}
}

/// `metrics.json` of a run directory (written with its keys sorted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    pub experiment: String,
    pub seed: u64,
    pub best_epoch: usize,
    pub epochs_run: usize,
    /// Epochs whose weights were averaged into the model (0: the best epoch's weights).
    pub averaged_epochs: usize,
    pub train_seconds: f64,
    pub parameters_keras_count: usize,
    pub review_threshold: Option<f32>,
    pub class_prior: Option<Vec<f32>>,
    /// `None` when the split has no validation part.
    pub val: Option<Metrics>,
    /// With the class prior, as `predict` classifies; `None` when the split has no test part.
    pub test: Option<Metrics>,
    /// Without it, when the model has one.
    pub test_flat_prior: Option<Metrics>,
    /// Ids of test photos in which the isolation found no leukocyte.
    pub test_photos_without_leukocyte: Vec<u32>,
}

impl RunMetrics {
    /// Reads a run directory's `metrics.json`; `None` when the run has not finished.
    pub fn read(rd: &RunDir) -> Result<Option<RunMetrics>> {
        let path = rd.metrics();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LeukoError::io(&path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LeukoError::Json {
                path,
                message: format!("not the metrics of a finished run: {e}"),
            })
    }

    fn write(&self, rd: &RunDir) -> Result<()> {
        // Through a `Value`, whose maps are sorted: the file's keys come in alphabetical order.
        let text = serde_json::to_value(self)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .map_err(|e| LeukoError::Invalid(format!("cannot write metrics.json: {e}")))?;
        crate::fsutil::write_atomic(&rd.metrics(), text.as_bytes())
    }
}

/// The config and split a run directory was started with, if it holds a run.
pub fn started_with(rd: &RunDir) -> Result<Option<(ExperimentConfig, Option<String>)>> {
    let path = rd.config();
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let cfg = ExperimentConfig::parse(&text)
        .map_err(|e| LeukoError::Config(format!("{}: {e}", path.display())))?;
    Ok(Some((cfg, std::fs::read_to_string(rd.split()).ok())))
}

/// A run may be resumed only with the config and split it was started with:
/// anything else would mix two experiments in one history. The epoch budget
/// and patience are the exceptions, so that a finished run can be extended.
pub fn check_resumable(
    rd: &RunDir,
    cfg: &ExperimentConfig,
    split: &Split,
    source: &crate::data::PhotoSource,
) -> Result<()> {
    let Some((earlier, earlier_split)) = started_with(rd)? else {
        return Ok(()); // nothing there yet: a fresh start
    };
    let mut now = cfg.clone();
    now.train.epochs = earlier.train.epochs;
    now.train.patience = earlier.train.patience;
    if now != earlier {
        return Err(LeukoError::Config(format!(
            "{}: this run was started with another config; --resume continues only the same \
             experiment (more epochs or patience allowed): choose another --out or remove the folder",
            rd.config().display()
        )));
    }
    if earlier_split.is_some_and(|t| t != split.to_json_for(source)) {
        return Err(LeukoError::Config(format!(
            "{}: this run was started on another split; --resume continues only the same split",
            rd.split().display()
        )));
    }
    Ok(())
}

/// The network inputs of a split's three parts.
pub struct Prepared {
    pub classes: ClassSet,
    /// Where the photos came from, recorded in the model file.
    pub source: String,
    pub train: InputSet,
    pub val: InputSet,
    pub test: InputSet,
    /// The photos of the training and validation parts (each once), whose look the model
    /// file records ([`crate::familiar`]).
    pub train_photos: Vec<std::path::PathBuf>,
    pub val_photos: Vec<std::path::PathBuf>,
}

/// Writes the run's config and split, and cuts the network inputs of every part.
pub fn prepare(
    cfg: &ExperimentConfig,
    dataset: &Dataset,
    split: &Split,
    opts: &TrainOptions,
) -> Result<Prepared> {
    let classes = split.classes.clone();
    let rd = &opts.run_dir;
    if opts.resume {
        check_resumable(rd, cfg, split, &dataset.source)?;
    }
    rd.create()?;
    crate::fsutil::write_atomic(&rd.config(), cfg.to_toml()?.as_bytes())?;
    split.write_for(&rd.split(), &dataset.source)?;

    let prep_bar = crate::progress::bar(3, "preparing", opts.quiet);
    let train = prepare_set(&dataset.source, &split.train, &classes, &cfg.input)?;
    prep_bar.inc(1);
    let val = prepare_set(&dataset.source, &split.val, &classes, &cfg.input)?;
    prep_bar.inc(1);
    let test = prepare_set(&dataset.source, &split.test, &classes, &cfg.input)?;
    prep_bar.finish_and_clear();
    if train.is_empty() {
        return Err(LeukoError::Invalid(
            "the split's training part is empty: nothing to learn from".into(),
        ));
    }
    Ok(Prepared {
        classes,
        source: dataset.source.origin().display().to_string(),
        train,
        val,
        test,
        train_photos: crate::infer::photos_of(&dataset.source, &split.train),
        val_photos: crate::infer::photos_of(&dataset.source, &split.val),
    })
}

/// The files of a checkpoint ([`RunDir::write_checkpoint`]).
const CKPT_MODEL: &str = "last.leuko";
const CKPT_OPTIM: &str = "last.optim";
const CKPT_BEST: &str = "best.leuko";
const CKPT_AVERAGE: &str = "average.bin";

/// A run in progress: the network, its optimizer and schedule, and what has been done.
pub struct Run<'a> {
    cfg: &'a ExperimentConfig,
    opts: &'a TrainOptions,
    data: &'a Prepared,
    net_cfg: NetConfig,
    device: Device,
    /// Taken out while an optimizer step or a recalibration consumes it.
    model: Option<LeukoNet>,
    optim: ModuleOptimizer,
    scheduler: ModuleLrScheduler,
    /// Per-step decay factor of the learning rate.
    gamma: f64,
    loss_fn: CrossEntropyLoss,
    /// The training part's class frequencies, recorded when training oversamples.
    class_prior: Option<Vec<f32>>,
    state: ResumeState,
    window: average::WeightWindow,
    /// The file bytes of the model kept so far.
    best_bytes: Option<Vec<u8>>,
    /// Indices into the training inputs: oversampled (seeded) once, reshuffled every epoch.
    train_samples: Vec<usize>,
}

/// What one epoch's optimizer steps measured.
struct EpochSteps {
    loss_sum: f64,
    truth: Vec<usize>,
    preds: Vec<usize>,
    learning_rate: f64,
    order: Vec<usize>,
}

impl<'a> Run<'a> {
    /// A fresh network and optimizer, seeded by the config.
    pub fn new(
        cfg: &'a ExperimentConfig,
        data: &'a Prepared,
        split: &Split,
        opts: &'a TrainOptions,
    ) -> Result<Run<'a>> {
        let net_cfg = cfg.net_config(data.classes.len());
        let device = super::training_device();
        device.seed(cfg.seed);
        let mut model = net_cfg.init(&device);
        if let Some(init) = &opts.init {
            model = fine_tuning_start(init, model, &net_cfg, cfg, &data.classes, &device)?;
        }
        let optim = AdamConfig::new().with_epsilon(1e-7).init();
        let gamma = cfg
            .train
            .lr_decay_rate
            .powf(1.0 / cfg.train.lr_decay_steps as f64);
        let scheduler = ExponentialLrSchedulerConfig::new(cfg.train.learning_rate, gamma)
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
            .then(|| label_frequencies(&data.train.labels, data.classes.len()));
        let train_samples: Vec<usize> = if cfg.train.oversample {
            let s = oversample(&split.train, cfg.seed);
            let pos: std::collections::HashMap<u32, usize> = data
                .train
                .ids
                .iter()
                .enumerate()
                .map(|(i, &id)| (id, i))
                .collect();
            s.iter().map(|x| pos[&x.image_id]).collect()
        } else {
            (0..data.train.len()).collect()
        };
        Ok(Run {
            cfg,
            opts,
            data,
            net_cfg,
            device,
            model: Some(model),
            optim,
            scheduler,
            gamma,
            loss_fn,
            class_prior,
            state: ResumeState {
                epochs_done: 0,
                steps_done: 0,
                best_epoch: 0,
                best_val_loss: f64::INFINITY,
                since_best: 0,
                train_seconds: 0.0,
                history: Vec::new(),
                averaged: 0,
            },
            window: average::WeightWindow::new(cfg.train.average_epochs),
            best_bytes: None,
            train_samples,
        })
    }

    fn net(&self) -> &LeukoNet {
        self.model
            .as_ref()
            .expect("the network is put back after every step that takes it")
    }

    fn take_net(&mut self) -> LeukoNet {
        self.model
            .take()
            .expect("the network is put back after every step that takes it")
    }

    /// The model file header for the weights of `epoch`.
    fn meta_for(&self, epoch: usize) -> ModelMeta {
        ModelMeta {
            net: self.net_cfg.clone(),
            classes: self.data.classes.labels().to_vec(),
            input: self.cfg.input.clone(),
            isolation: crate::preprocess::training_isolation(),
            experiment: self.cfg.name.clone(),
            seed: self.cfg.seed,
            epoch,
            review_threshold: None,
            class_prior: self.class_prior.clone(),
            parent: self
                .opts
                .init
                .as_ref()
                .map(|i| crate::model::file::ParentModel::of(&i.name, &i.bytes)),
            data_source: Some(self.data.source.clone()),
            familiarity: None,
        }
    }

    /// Continues from the run directory's checkpoint, if it has one.
    pub fn resume(&mut self, observer: &mut dyn TrainObserver) -> Result<()> {
        let rd = &self.opts.run_dir;
        let Some((unit, skipped)) = rd.read_checkpoint::<ResumeState>()? else {
            observer.event(TrainEvent::NothingToResume { dir: rd.root() });
            return Ok(());
        };
        for (path, why) in &skipped {
            observer.event(TrainEvent::SkippedCheckpoint { path, why });
        }
        let file = |name: &str| -> Result<&Vec<u8>> {
            unit.files.get(name).ok_or_else(|| {
                LeukoError::Invalid(format!(
                    "{}: checkpoint of epoch {} has no {name}",
                    rd.root().display(),
                    unit.epoch
                ))
            })
        };
        let s = unit.state;
        let (loaded, _) = model_from_bytes(file(CKPT_MODEL)?, "checkpoint", &self.device)?;
        self.model = Some(loaded);
        self.optim = std::mem::replace(&mut self.optim, AdamConfig::new().init())
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(
                file(CKPT_OPTIM)?.clone(),
            ))
            .map_err(|e| {
                LeukoError::Invalid(format!("{}: optimizer state: {e}", rd.root().display()))
            })?;
        for _ in 0..s.steps_done {
            self.scheduler.step();
        }
        // The best model as of the checkpoint (model.leuko may be an epoch ahead of it).
        self.best_bytes = unit.files.get(CKPT_BEST).cloned();
        if let Some(best) = &self.best_bytes {
            crate::fsutil::write_atomic(&rd.model(), best)?;
        }
        if s.averaged > 0 {
            let bytes = file(CKPT_AVERAGE)?;
            self.window = average::WeightWindow::from_bytes(bytes, &rd.root().join("checkpoint"))?;
            if self.window.len() != s.averaged {
                return Err(LeukoError::Invalid(format!(
                    "{}: the checkpoint's averaged weights hold {} epochs, its state {}: start \
                     the run afresh",
                    rd.root().display(),
                    self.window.len(),
                    s.averaged
                )));
            }
        }
        self.state = s;
        observer.event(TrainEvent::Resuming {
            epochs_done: self.state.epochs_done,
            steps_done: self.state.steps_done,
        });
        Ok(())
    }

    /// Removes what an earlier, finished run left that a fresh start no longer describes, and
    /// draws the augmentation grid.
    fn start(&self) -> Result<()> {
        let rd = &self.opts.run_dir;
        rd.remove_partial_checkpoints()?;
        if self.state.epochs_done == 0 {
            // Test metrics of an earlier run in this folder no longer describe it (and
            // `case-study --resume` takes metrics.json as "finished").
            match std::fs::remove_file(rd.metrics()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(LeukoError::io(rd.metrics(), e))
                }
                _ => {}
            }
        }
        if let Some(aug) = &self.cfg.augment {
            let mut rng = rng_for(self.cfg.seed, "augment-grid");
            let picks: Vec<&RgbImage> = self.data.train.images.iter().take(4).collect();
            let grid = crate::augment::augmented_grid(&picks, aug, 6, &mut rng);
            crate::plot::save_png(&rd.augment_grid(), &grid)?;
        }
        Ok(())
    }

    /// The optimizer steps of one epoch over the shuffled training inputs.
    fn steps(&mut self, epoch: usize) -> Result<EpochSteps> {
        let cfg = self.cfg;
        let train_set = &self.data.train;
        let (w, h) = cfg.input.dims();
        let per_image = (3 * w * h) as usize;
        let bs = cfg.train.batch_size;
        // Per-epoch generators: a resumed run continues exactly as an uninterrupted one.
        let mut rng = rng_for(cfg.seed, &format!("epoch-{epoch}"));
        self.device.seed(cfg.seed.wrapping_add(epoch as u64 * 7919));
        let mut order = self.train_samples.clone();
        order.shuffle(&mut rng);
        let batches = order.len().div_ceil(bs);
        let bar = crate::progress::bar(batches as u64, &format!("epoch {epoch}"), self.opts.quiet);
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
            let x = images_tensor(data, chunk.len(), w, h, &self.device);
            let y = labels_tensor(&labels, &self.device);
            // One dropout seed per optimizer step: a resumed run draws the same masks.
            let dropout_seed =
                cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.state.steps_done as u64;
            let logits = self.net().forward_train(x, dropout_seed);
            let loss = match &mixup {
                None => self.loss_fn.forward(logits.clone(), y),
                Some(m) => {
                    let partners: Vec<usize> = m.partner.iter().map(|&j| labels[j]).collect();
                    let y2 = labels_tensor(&partners, &self.device);
                    self.loss_fn
                        .forward(logits.clone(), y)
                        .mul_scalar(m.weight)
                        .add(
                            self.loss_fn
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
            let k = self.data.classes.len();
            preds.extend(logits_v.chunks(k).map(argmax));
            truth.extend_from_slice(&labels);
            let grads = GradientsParams::from_grads(loss.backward(), self.net());
            let step_lr = self.scheduler.step();
            lr = cfg.train.learning_rate * self.gamma.powi(self.state.steps_done as i32 + 1);
            let model = self.take_net();
            self.model = Some(self.optim.step(step_lr, model, grads));
            self.state.steps_done += 1;
            loss_sum += loss_value * chunk.len() as f64;
            bar.inc(1);
            bar.set_message(format!(
                "epoch {epoch} loss {:.3}",
                loss_sum / truth.len() as f64
            ));
        }
        bar.finish_and_clear();
        Ok(EpochSteps {
            loss_sum,
            truth,
            preds,
            learning_rate: lr,
            order,
        })
    }

    /// Recalibrates batch norm, scores the epoch on the validation part, and records it.
    fn validate(&mut self, epoch: usize, steps: EpochSteps, start: Instant) -> Result<bool> {
        let cfg = self.cfg;
        let classes = &self.data.classes;
        let model = self.take_net();
        self.model = Some(recalibrate(
            model,
            &self.data.train,
            &steps.order,
            cfg.train.batch_size,
            cfg.train.precise_bn_batches,
            &self.device,
        ));
        let train_m = Metrics::compute(classes.labels(), &steps.truth, &steps.preds);
        // Without a validation part every epoch counts as the best so far: the last is kept.
        let (val_loss, val_accuracy, val_kappa) = if self.data.val.is_empty() {
            (f64::NAN, f64::NAN, f64::NAN)
        } else {
            let (loss, preds, _) = evaluate_set(
                self.net(),
                &self.data.val,
                self.opts.eval_batch,
                Views::Single,
                None,
            )?;
            let m = Metrics::compute(classes.labels(), &self.data.val.labels, &preds);
            (loss, m.accuracy, m.kappa)
        };
        let seconds = start.elapsed().as_secs_f64();
        self.state.train_seconds += seconds;
        let rec = EpochRecord {
            epoch,
            train_loss: steps.loss_sum / steps.truth.len().max(1) as f64,
            train_accuracy: train_m.accuracy,
            train_kappa: train_m.kappa,
            val_loss,
            val_accuracy,
            val_kappa,
            learning_rate: steps.learning_rate,
            seconds,
        };
        let improved = self.data.val.is_empty() || val_loss < self.state.best_val_loss;
        self.state.history.push(rec);
        self.state.epochs_done = epoch;
        if improved {
            self.state.best_val_loss = val_loss;
            self.state.best_epoch = epoch;
            self.state.since_best = 0;
        } else {
            self.state.since_best += 1;
        }
        Ok(improved)
    }

    /// Writes the best model (when `improved`), the weight window and the resume checkpoint.
    fn checkpoint(&mut self, epoch: usize, improved: bool) -> Result<()> {
        let rd = &self.opts.run_dir;
        if improved {
            let bytes = model_to_bytes(self.net(), &self.meta_for(epoch))?;
            crate::fsutil::write_atomic(&rd.model(), &bytes)?;
            self.best_bytes = Some(bytes);
        }
        let average = if self.cfg.train.average_epochs > 0 {
            self.window.push(average::flat_params(self.net())?)?;
            self.state.averaged = self.window.len();
            Some(self.window.to_bytes())
        } else {
            None
        };
        let model_bytes = model_to_bytes(self.net(), &self.meta_for(epoch))?;
        let optim_bytes = self
            .optim
            .into_bytes()
            .map_err(|e| LeukoError::Invalid(format!("serialising the optimizer: {e}")))?;
        let mut files: Vec<(&str, &[u8])> =
            vec![(CKPT_MODEL, &model_bytes), (CKPT_OPTIM, &optim_bytes)];
        if let Some(best) = &self.best_bytes {
            files.push((CKPT_BEST, best));
        }
        if let Some(a) = &average {
            files.push((CKPT_AVERAGE, a));
        }
        rd.write_checkpoint(epoch, &self.state, &files)?;
        write_history(rd, &self.state.history)
    }

    /// Trains, validates and checkpoints one epoch; `false` when training should stop early.
    pub fn epoch(&mut self, epoch: usize, observer: &mut dyn TrainObserver) -> Result<bool> {
        let start = Instant::now();
        let steps = self.steps(epoch)?;
        let improved = self.validate(epoch, steps, start)?;
        if let Some(record) = self.state.history.last() {
            observer.event(TrainEvent::Epoch { record, improved });
        }
        self.checkpoint(epoch, improved)?;
        if !self.data.val.is_empty() && self.state.since_best >= self.cfg.train.patience {
            observer.event(TrainEvent::EarlyStop {
                patience: self.cfg.train.patience,
            });
            return Ok(false);
        }
        Ok(true)
    }

    /// The model kept (best epoch, or averaged weights), its review threshold chosen on the
    /// validation part, the test metrics, `metrics.json` and the plots.
    pub fn finish(mut self, observer: &mut dyn TrainObserver) -> Result<TrainOutcome> {
        let cfg = self.cfg;
        let rd = &self.opts.run_dir;
        let classes = self.data.classes.labels();
        let eval_batch = self.opts.eval_batch;
        if let Some(mean) = self.window.mean() {
            let first = self.state.epochs_done + 1 - self.window.len();
            let model = self.take_net();
            let averaged = average::with_flat_params(model, &mean)?;
            let mut order = self.train_samples.clone();
            order.shuffle(&mut rng_for(cfg.seed, "average-bn"));
            let averaged = recalibrate(
                averaged,
                &self.data.train,
                &order,
                cfg.train.batch_size,
                usize::MAX,
                &self.device,
            );
            self.best_bytes = Some(model_to_bytes(
                &averaged,
                &self.meta_for(self.state.epochs_done),
            )?);
            observer.event(TrainEvent::Averaged {
                first,
                last: self.state.epochs_done,
            });
        }
        let best = self
            .best_bytes
            .ok_or_else(|| LeukoError::Invalid("no epoch was trained".into()))?;
        let (best_model, mut meta) = model_from_bytes(&best, "best checkpoint", &Device::flex())?;
        // The review threshold is chosen on validation predictions (never on test ones) and
        // recorded in the model file, so that `predict` flags what this model is unsure of.
        let prior = Prior::Data.weights(&meta).map(<[f32]>::to_vec);
        let (val_set, test_set) = (&self.data.val, &self.data.test);
        let val = if val_set.is_empty() {
            None
        } else {
            let (_, val_preds, val_probs) = evaluate_set(
                &best_model,
                val_set,
                eval_batch,
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
            Some(Metrics::compute(classes, &val_set.labels, &val_preds))
        };
        meta.familiarity = crate::infer::profile(
            &best_model,
            &meta,
            &self.data.train_photos,
            &self.data.val_photos,
            self.opts.quiet,
        )?;
        crate::fsutil::write_atomic(&rd.model(), &model_to_bytes(&best_model, &meta)?)?;
        let mut test = None;
        let mut test_flat = None;
        if !test_set.is_empty() {
            let (_, test_preds, test_probs) = evaluate_set(
                &best_model,
                test_set,
                eval_batch,
                Views::Single,
                prior.as_deref(),
            )?;
            let m = Metrics::compute(classes, &test_set.labels, &test_preds);
            // The same network without the prior, for comparison (as `--prior flat` predicts).
            if prior.is_some() {
                let (_, p, _) =
                    evaluate_set(&best_model, test_set, eval_batch, Views::Single, None)?;
                test_flat = Some(Metrics::compute(classes, &test_set.labels, &p));
            }
            plots::confusion(
                &rd.confusion(),
                &m,
                &format!("{}: test confusion matrix", cfg.name),
            )?;
            let errors = plots::error_tiles(test_set, classes, &test_preds, |i| {
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
            test = Some(m);
        }
        let param_count = self.net_cfg.keras_param_count();
        RunMetrics {
            experiment: cfg.name.clone(),
            seed: cfg.seed,
            best_epoch: self.state.best_epoch,
            epochs_run: self.state.epochs_done,
            averaged_epochs: self.window.len(),
            train_seconds: self.state.train_seconds,
            parameters_keras_count: param_count,
            review_threshold: meta.review_threshold,
            class_prior: meta.class_prior.clone(),
            val,
            test: test.clone(),
            test_flat_prior: test_flat.clone(),
            test_photos_without_leukocyte: test_set.not_found.clone(),
        }
        .write(rd)?;
        plots::curves(&rd.curves(), &self.state.history, self.state.best_epoch)?;
        Ok(TrainOutcome {
            model: best_model,
            meta,
            history: self.state.history,
            best_epoch: self.state.best_epoch,
            train_seconds: self.state.train_seconds,
            test,
            test_flat,
            param_count,
        })
    }
}

/// The network a fine-tuning run starts from: `init`'s weights with its classifier re-aimed at
/// `classes` (see [`LeukoNet::with_classes`]; `fresh` supplies new classes' columns). The
/// config must describe the same network and input as the model.
fn fine_tuning_start(
    init: &super::InitModel,
    fresh: LeukoNet,
    net_cfg: &NetConfig,
    cfg: &ExperimentConfig,
    classes: &ClassSet,
    device: &Device,
) -> Result<LeukoNet> {
    let (parent, meta) = model_from_bytes(&init.bytes, &init.name, device)?;
    if meta.net.blocks != net_cfg.blocks {
        return Err(LeukoError::Config(format!(
            "--init {}: its network has blocks {:?}, the config {:?}: fine-tuning keeps the \
             network (leave out [net] or copy the model's)",
            init.name, meta.net.blocks, net_cfg.blocks
        )));
    }
    if meta.input != cfg.input {
        return Err(LeukoError::Config(format!(
            "--init {}: it was trained on {}, the config asks for {}: fine-tuning keeps the input",
            init.name,
            meta.input.describe(),
            cfg.input.describe()
        )));
    }
    Ok(parent.with_classes(&meta.classes, classes.labels(), &fresh))
}

/// Trains `cfg` on `split` and evaluates the kept model on the test part.
pub fn train(
    cfg: &ExperimentConfig,
    dataset: &Dataset,
    split: &Split,
    opts: &TrainOptions,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome> {
    let data = prepare(cfg, dataset, split, opts)?;
    let mut run = Run::new(cfg, &data, split, opts)?;
    if opts.resume {
        run.resume(observer)?;
    }
    run.start()?;
    let epochs = cfg.train.epochs_for(run.train_samples.len());
    for epoch in run.state.epochs_done + 1..=epochs {
        if !run.epoch(epoch, observer)? {
            break;
        }
    }
    run.finish(observer)
}
