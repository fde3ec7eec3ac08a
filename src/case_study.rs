//! The four-step case study this design comes from: baseline on whole photos →
//! balanced → isolated cells → augmented final model, on the same grouped split
//! (or on each of K grouped folds), with the comparison table and a chart.

use crate::data::Dataset;
use crate::error::{LeukoError, Result};
use crate::metrics::Metrics;
use crate::split::Split;
use crate::train::config::ExperimentConfig;
use crate::train::{train, RunDir, RunMetrics, TrainObserver, TrainOptions};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// The stage configs, compiled in so the study runs from any directory.
pub const STAGES: [(&str, &str); 4] = [
    (
        "a baseline: whole photo, imbalanced",
        include_str!("../experiments/baseline.toml"),
    ),
    (
        "b balanced: + oversampling",
        include_str!("../experiments/balanced.toml"),
    ),
    (
        "c isolated: + 128x128 leukocyte crop",
        include_str!("../experiments/isolated.toml"),
    ),
    (
        "d final: + augmentation, white balance, bigger net, longer",
        include_str!("../experiments/final.toml"),
    ),
];

/// One stage trained on one split.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StageResult {
    pub stage: String,
    pub experiment: String,
    pub parameters: usize,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub train_seconds: f64,
    pub kappa: f64,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// The same network's test scores without the class prior (`--prior
    /// flat`): kappa, accuracy, macro F1. `None` for stages without oversampling.
    #[serde(default)]
    pub flat: Option<[f64; 3]>,
}

/// The parsed stage configs.
pub fn stage_configs() -> Result<Vec<(String, ExperimentConfig)>> {
    STAGES
        .iter()
        .map(|(label, text)| {
            ExperimentConfig::parse(text)
                .map(|c| (label.to_string(), c))
                .map_err(|e| LeukoError::Config(format!("built-in stage {label}: {e}")))
        })
        .collect()
}

/// The experiment names of the stages, in order.
pub fn stage_names() -> Vec<String> {
    STAGES
        .iter()
        .filter_map(|(_, text)| ExperimentConfig::parse(text).ok().map(|c| c.name))
        .collect()
}

/// What an earlier run of a stage left in its run directory.
#[derive(Debug, Clone, PartialEq)]
pub enum EarlierRun {
    /// Nothing: train from the start.
    None,
    /// Started with the same config and split, not finished: resume it.
    Unfinished,
    /// Finished with the same config and split: its results stand.
    Finished(StageResult),
}

/// Looks at a stage's run directory for `--resume`. A directory that holds a
/// run of another config or split is an error, not something to overwrite.
pub fn earlier_run(
    dir: &RunDir,
    label: &str,
    cfg: &ExperimentConfig,
    split: &Split,
) -> Result<EarlierRun> {
    let Some((earlier, earlier_split)) = crate::train::started_with(dir)? else {
        return Ok(EarlierRun::None);
    };
    let same_config = &earlier == cfg;
    let same_split = earlier_split.is_some_and(|t| t == split.to_json());
    if !same_config || !same_split {
        return Err(LeukoError::Config(format!(
            "{} holds a run of another {}; choose another --out, or leave out --resume to train it again",
            dir.root().display(),
            if same_config { "split" } else { "config" }
        )));
    }
    let Some(m) = RunMetrics::read(dir)? else {
        return Ok(EarlierRun::Unfinished);
    };
    let scores = |m: &Metrics| [m.kappa, m.accuracy, m.macro_f1];
    let test = scores(m.test.as_ref().ok_or_else(|| LeukoError::Json {
        path: dir.metrics(),
        message: "the run has no test metrics".to_string(),
    })?);
    Ok(EarlierRun::Finished(StageResult {
        stage: label.to_string(),
        experiment: cfg.name.clone(),
        parameters: m.parameters_keras_count,
        epochs_run: m.epochs_run,
        best_epoch: m.best_epoch,
        train_seconds: m.train_seconds,
        kappa: test[0],
        accuracy: test[1],
        macro_f1: test[2],
        flat: m.test_flat_prior.as_ref().map(scores),
    }))
}

/// Trains the chosen stages (by experiment name; empty = all four) on every
/// split with one seed; `results[split][stage]`. With `resume`, stages an
/// earlier invocation finished are read back, and an interrupted one continues.
/// How [`run`] runs the study.
pub struct StudyOptions<'a> {
    /// Stage names to run (empty: all four).
    pub stages: &'a [String],
    pub seed: u64,
    /// The study's folder (one run directory per split and stage below it).
    pub out: &'a Path,
    pub resume: bool,
    pub quiet: bool,
}

pub fn run(
    dataset: &Dataset,
    splits: &[Split],
    opts: &StudyOptions<'_>,
    observer: &mut dyn TrainObserver,
) -> Result<Vec<Vec<StageResult>>> {
    let StudyOptions {
        stages: only,
        seed,
        out,
        resume,
        quiet,
    } = *opts;
    let known = stage_names();
    if let Some(bad) = only.iter().find(|n| !known.contains(n)) {
        return Err(LeukoError::Config(format!(
            "unknown stage '{bad}'; the stages are {}",
            known.join(", ")
        )));
    }
    let stages: Vec<(String, ExperimentConfig)> = stage_configs()?
        .into_iter()
        .filter(|(_, c)| only.is_empty() || only.contains(&c.name))
        .map(|(label, mut c)| {
            c.seed = seed;
            (label, c)
        })
        .collect();
    let mut all = Vec::new();
    for (k, split) in splits.iter().enumerate() {
        let mut row = Vec::new();
        for (label, cfg) in &stages {
            let sub = if splits.len() > 1 {
                out.join(format!("fold{}", k + 1)).join(&cfg.name)
            } else {
                out.join(&cfg.name)
            };
            if !quiet {
                eprintln!(
                    "== {label} (split {} of {}) -> {}",
                    k + 1,
                    splits.len(),
                    sub.display()
                );
            }
            let run_dir = RunDir::new(sub);
            if resume {
                match earlier_run(&run_dir, label, cfg, split)? {
                    EarlierRun::Finished(r) => {
                        if !quiet {
                            eprintln!(
                                "   finished earlier ({} epochs, test kappa {:.3}): not trained again",
                                r.epochs_run, r.kappa
                            );
                        }
                        row.push(r);
                        continue;
                    }
                    EarlierRun::Unfinished | EarlierRun::None => {}
                }
            }
            let opts = TrainOptions {
                run_dir,
                resume,
                quiet,
                eval_batch: 64,
                init: None,
            };
            let o = train(cfg, dataset, split, &opts, observer)?;
            let test = o.test.as_ref().ok_or_else(|| {
                LeukoError::Invalid(format!("{label}: the split has no test part"))
            })?;
            row.push(StageResult {
                stage: label.clone(),
                experiment: cfg.name.clone(),
                parameters: o.param_count,
                epochs_run: o.history.len(),
                best_epoch: o.best_epoch,
                train_seconds: o.train_seconds,
                kappa: test.kappa,
                accuracy: test.accuracy,
                macro_f1: test.macro_f1,
                flat: o
                    .test_flat
                    .as_ref()
                    .map(|m| [m.kappa, m.accuracy, m.macro_f1]),
            });
        }
        all.push(row);
    }
    Ok(all)
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, sd)
}

/// The comparison table in Markdown (mean ± sd over splits when there are several).
pub fn markdown(results: &[Vec<StageResult>], title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(
        s,
        "| stage | parameters | epochs run (best) | training time | test kappa | test accuracy | macro F1 | kappa change vs baseline |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    let n_stages = results.first().map(Vec::len).unwrap_or(0);
    let fmt = |v: &[f64], digits: usize| {
        let (m, sd) = mean_sd(v);
        if v.len() > 1 {
            format!("{m:.digits$} ± {sd:.digits$}")
        } else {
            format!("{m:.digits$}")
        }
    };
    let base: Vec<f64> = results.iter().map(|r| r[0].kappa).collect();
    // The change column needs the baseline among the stages run.
    let has_baseline = results
        .first()
        .and_then(|r| r.first())
        .is_some_and(|r| r.experiment == "baseline");
    for i in 0..n_stages {
        let col =
            |f: fn(&StageResult) -> f64| results.iter().map(|r| f(&r[i])).collect::<Vec<f64>>();
        let first = &results[0][i];
        let epochs = if results.len() > 1 {
            fmt(&col(|r| r.epochs_run as f64), 1)
        } else {
            format!("{} ({})", first.epochs_run, first.best_epoch)
        };
        let kappa = col(|r| r.kappa);
        let change: Vec<f64> = kappa.iter().zip(&base).map(|(k, b)| k - b).collect();
        let change = if i == 0 || !has_baseline {
            "—".to_string()
        } else {
            format!("{:+.3}", mean_sd(&change).0)
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} s | {} | {} | {} | {} |",
            first.stage,
            first.parameters,
            epochs,
            fmt(&col(|r| r.train_seconds), 0),
            fmt(&kappa, 3),
            fmt(&col(|r| r.accuracy), 3),
            fmt(&col(|r| r.macro_f1), 3),
            change
        );
    }
    let _ = writeln!(
        s,
        "\nTest scores are those of `leuko predict`: stages trained on an oversampled (balanced) \
         set weight their outputs by the training part's class frequencies (`--prior data`)."
    );
    let with_flat: Vec<usize> = (0..n_stages)
        .filter(|&i| results.iter().all(|r| r[i].flat.is_some()))
        .collect();
    if !with_flat.is_empty() {
        let _ = writeln!(
            s,
            "\nThe same networks without that prior (`--prior flat`, every type equally likely):\n"
        );
        let _ = writeln!(s, "| stage | test kappa | test accuracy | macro F1 |");
        let _ = writeln!(s, "|---|---|---|---|");
        for &i in &with_flat {
            let col = |j: usize| {
                results
                    .iter()
                    .filter_map(|r| r[i].flat.map(|f| f[j]))
                    .collect::<Vec<f64>>()
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                results[0][i].stage,
                fmt(&col(0), 3),
                fmt(&col(1), 3),
                fmt(&col(2), 3)
            );
        }
    }
    if results.len() > 1 {
        let _ = writeln!(s, "\nPer fold (test part of each):\n");
        let _ = writeln!(
            s,
            "| fold | stage | epochs run (best) | training time | test kappa | test accuracy | macro F1 |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for (k, row) in results.iter().enumerate() {
            for r in row {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} ({}) | {:.0} s | {:.3} | {:.3} | {:.3} |",
                    k + 1,
                    r.experiment,
                    r.epochs_run,
                    r.best_epoch,
                    r.train_seconds,
                    r.kappa,
                    r.accuracy,
                    r.macro_f1
                );
            }
        }
    }
    s
}

/// Reads the results a previous run wrote to `out/case-study.json`, and the
/// title of its `case-study.md`, so that the report can be written again.
pub fn read_results(out: &Path) -> Result<(Vec<Vec<StageResult>>, String)> {
    let path = out.join("case-study.json");
    let bytes = std::fs::read(&path).map_err(|e| LeukoError::io(&path, e))?;
    let results: Vec<Vec<StageResult>> = serde_json::from_slice(&bytes)
        .map_err(|e| LeukoError::Invalid(format!("{}: {e}", path.display())))?;
    if results.is_empty()
        || results
            .iter()
            .any(|r| r.len() != results[0].len() || r.is_empty())
    {
        return Err(LeukoError::Invalid(format!(
            "{}: expected one non-empty row of stages per split, all of the same length",
            path.display()
        )));
    }
    let title = std::fs::read_to_string(out.join("case-study.md"))
        .ok()
        .and_then(|md| {
            md.lines()
                .next()
                .and_then(|l| l.strip_prefix("# "))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "Case study".to_string());
    Ok((results, title))
}

/// Writes `case-study.md`, `case-study.json` and `case-study.png` (test kappa per stage).
pub fn write_report(out: &Path, results: &[Vec<StageResult>], title: &str) -> Result<()> {
    crate::fsutil::write_atomic(
        &out.join("case-study.md"),
        markdown(results, title).as_bytes(),
    )?;
    let json =
        serde_json::to_vec_pretty(results).map_err(|e| LeukoError::Invalid(e.to_string()))?;
    crate::fsutil::write_atomic(&out.join("case-study.json"), &json)?;
    let labels: Vec<String> = results[0].iter().map(|r| r.experiment.clone()).collect();
    let values: Vec<f64> = (0..labels.len())
        .map(|i| {
            let v: Vec<f64> = results.iter().map(|r| r[i].kappa).collect();
            (mean_sd(&v).0 * 1000.0).round() / 1000.0
        })
        .collect();
    let img = crate::plot::bar_chart(
        "Case study: test Cohen's kappa per stage",
        &labels,
        &values,
        "kappa",
    )?;
    crate::plot::save_png(&out.join("case-study.png"), &img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_stages_parse() {
        let s = stage_configs().unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[3].1.net.blocks, vec![16, 32, 48, 64]);
        assert!(s[3].1.augment.is_some() && s[2].1.augment.is_none());
        assert!(!s[0].1.train.oversample && s[1].1.train.oversample);
    }

    #[test]
    fn table_shows_mean_and_sd_over_folds() {
        let r = |k: f64| StageResult {
            stage: "x".into(),
            experiment: "x".into(),
            parameters: 1,
            epochs_run: 2,
            best_epoch: 1,
            train_seconds: 3.0,
            kappa: k,
            accuracy: 0.5,
            macro_f1: 0.5,
            flat: Some([k - 0.1, 0.4, 0.4]),
        };
        let base = |k| StageResult {
            experiment: "baseline".into(),
            ..r(k)
        };
        let md = markdown(&[vec![base(0.1), r(0.5)], vec![base(0.3), r(0.7)]], "t");
        assert!(md.contains("0.200 ± 0.141"), "{md}");
        // Scores without the prior: mean ± sd of the flat kappas 0.4 and 0.6.
        assert!(md.contains("| x | 0.500 ± 0.141 | 0.400 ± 0.000 |"), "{md}");
        assert!(md.contains("+0.400"), "{md}");
        // Without the baseline there is nothing to compare with.
        let md = markdown(&[vec![r(0.5)], vec![r(0.7)]], "t");
        assert!(md.contains("0.600 ± 0.141") && !md.contains('+'), "{md}");
        assert!(
            md.contains("| 2 | x | 2 (1) | 3 s | 0.700 | 0.500 | 0.500 |"),
            "{md}"
        );
    }

    #[test]
    fn resume_reads_back_finished_stages_and_refuses_foreign_runs() {
        use crate::data::{ClassLabel, ClassSet, Sample};
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::new(tmp.path().join("final"));
        let (label, cfg) = stage_configs().unwrap().pop().unwrap();
        let s = |id| Sample {
            image_id: id,
            label: ClassLabel::Neutrophil,
        };
        let split = Split {
            seed: 42,
            classes: ClassSet::default_four(),
            train: vec![s(1), s(2)],
            val: vec![s(3)],
            test: vec![s(4)],
        };
        assert_eq!(
            earlier_run(&dir, &label, &cfg, &split).unwrap(),
            EarlierRun::None
        );

        dir.create().unwrap();
        std::fs::write(dir.config(), cfg.to_toml().unwrap()).unwrap();
        split.write(&dir.split()).unwrap();
        assert_eq!(
            earlier_run(&dir, &label, &cfg, &split).unwrap(),
            EarlierRun::Unfinished
        );

        let scored = |kappa, accuracy, macro_f1| Metrics {
            kappa,
            accuracy,
            macro_f1,
            ..Metrics::compute(ClassSet::default_four().labels(), &[0], &[0])
        };
        let metrics = RunMetrics {
            experiment: "final".into(),
            seed: 42,
            best_epoch: 52,
            epochs_run: 60,
            averaged_epochs: 0,
            train_seconds: 616.5,
            parameters_keras_count: 122180,
            review_threshold: None,
            class_prior: None,
            val: Some(scored(0.9, 0.9, 0.9)),
            test: Some(scored(0.865, 0.926, 0.835)),
            test_flat_prior: Some(scored(0.824, 0.897, 0.865)),
            test_photos_without_leukocyte: Vec::new(),
        };
        std::fs::write(dir.metrics(), serde_json::to_string(&metrics).unwrap()).unwrap();
        let EarlierRun::Finished(r) = earlier_run(&dir, &label, &cfg, &split).unwrap() else {
            panic!("a finished run is not recognised");
        };
        assert_eq!((r.epochs_run, r.best_epoch, r.parameters), (60, 52, 122180));
        assert_eq!((r.kappa, r.accuracy, r.macro_f1), (0.865, 0.926, 0.835));
        assert_eq!(r.flat, Some([0.824, 0.897, 0.865]));

        // Another patience is another experiment: never mixed into the table.
        let mut other = cfg.clone();
        other.train.patience = 15;
        let err = earlier_run(&dir, &label, &other, &split)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("another config") && err.contains("final"),
            "{err}"
        );
        let mut moved = split.clone();
        moved.test.push(s(5));
        let err = earlier_run(&dir, &label, &cfg, &moved)
            .unwrap_err()
            .to_string();
        assert!(err.contains("another split"), "{err}");

        std::fs::write(dir.metrics(), "{\"test\": {}}").unwrap();
        let err = earlier_run(&dir, &label, &cfg, &split)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("metrics.json") && err.contains("missing field"),
            "{err}"
        );
    }

    #[test]
    fn report_is_written_again_from_its_json() {
        let dir = std::env::temp_dir().join(format!("leuko-cs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = StageResult {
            stage: "d final".into(),
            experiment: "final".into(),
            parameters: 122180,
            epochs_run: 60,
            best_epoch: 50,
            train_seconds: 500.0,
            kappa: 0.63,
            accuracy: 0.767,
            macro_f1: 0.775,
            flat: None,
        };
        write_report(&dir, &[vec![r]], "Case study on a split").unwrap();
        let (results, title) = read_results(&dir).unwrap();
        assert_eq!(title, "Case study on a split");
        assert_eq!(results[0][0].kappa, 0.63);
        std::fs::write(dir.join("case-study.json"), b"[[]]").unwrap();
        let err = read_results(&dir).unwrap_err().to_string();
        assert!(err.contains("case-study.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
