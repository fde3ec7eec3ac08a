//! Classification metrics: confusion matrix, accuracy, Cohen's kappa, per-class
//! precision / recall / F1, macro F1.

use crate::data::ClassLabel;
use serde::{Deserialize, Serialize};

/// Counts of (true class, predicted class); rows are the truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    pub counts: Vec<Vec<usize>>,
}

impl ConfusionMatrix {
    /// Builds a `k` x `k` matrix; pairs with an index ≥ k are ignored.
    pub fn new(truth: &[usize], predicted: &[usize], k: usize) -> Self {
        let mut counts = vec![vec![0; k]; k];
        for (&t, &p) in truth.iter().zip(predicted) {
            if t < k && p < k {
                counts[t][p] += 1;
            }
        }
        ConfusionMatrix { counts }
    }

    pub fn k(&self) -> usize {
        self.counts.len()
    }

    pub fn total(&self) -> usize {
        self.counts.iter().flatten().sum()
    }

    fn row_sum(&self, i: usize) -> usize {
        self.counts[i].iter().sum()
    }

    fn col_sum(&self, j: usize) -> usize {
        self.counts.iter().map(|r| r[j]).sum()
    }

    pub fn accuracy(&self) -> f64 {
        let n = self.total();
        if n == 0 {
            return 0.0;
        }
        (0..self.k()).map(|i| self.counts[i][i]).sum::<usize>() as f64 / n as f64
    }

    /// Cohen's kappa: agreement beyond chance, (p_o - p_e) / (1 - p_e). 0 when
    /// chance agreement is already perfect (a single class in truth and prediction).
    pub fn kappa(&self) -> f64 {
        let n = self.total() as f64;
        if n == 0.0 {
            return 0.0;
        }
        let po = self.accuracy();
        let pe: f64 = (0..self.k())
            .map(|i| (self.row_sum(i) as f64 / n) * (self.col_sum(i) as f64 / n))
            .sum();
        if (1.0 - pe).abs() < 1e-12 {
            return 0.0;
        }
        (po - pe) / (1.0 - pe)
    }

    /// Precision, recall, F1 and support of class `i` (0 where undefined).
    pub fn class_scores(&self, i: usize) -> (f64, f64, f64, usize) {
        let tp = self.counts[i][i] as f64;
        let predicted = self.col_sum(i) as f64;
        let support = self.row_sum(i);
        let precision = if predicted > 0.0 { tp / predicted } else { 0.0 };
        let recall = if support > 0 {
            tp / support as f64
        } else {
            0.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        (precision, recall, f1, support)
    }

    /// Unweighted mean of the per-class F1 scores.
    pub fn macro_f1(&self) -> f64 {
        if self.k() == 0 {
            return 0.0;
        }
        (0..self.k()).map(|i| self.class_scores(i).2).sum::<f64>() / self.k() as f64
    }
}

/// Scores of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub class: ClassLabel,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// Everything `leuko evaluate` reports for a set of predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub n: usize,
    pub accuracy: f64,
    pub kappa: f64,
    pub macro_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    /// Rows: true class, columns: predicted class, in `per_class` order.
    pub confusion: ConfusionMatrix,
    /// Share of the cells not flagged for review (`leuko evaluate`; absent in training runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    /// Accuracy on the cells not flagged for review (`None` when every cell is flagged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selective_accuracy: Option<f64>,
    /// Cells flagged for each review reason (a cell may have several).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub flagged_by_reason: std::collections::BTreeMap<String, usize>,
}

impl Metrics {
    pub fn compute(classes: &[ClassLabel], truth: &[usize], predicted: &[usize]) -> Metrics {
        let cm = ConfusionMatrix::new(truth, predicted, classes.len());
        let per_class = classes
            .iter()
            .enumerate()
            .map(|(i, &class)| {
                let (precision, recall, f1, support) = cm.class_scores(i);
                ClassMetrics {
                    class,
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect();
        Metrics {
            n: cm.total(),
            accuracy: cm.accuracy(),
            kappa: cm.kappa(),
            macro_f1: cm.macro_f1(),
            per_class,
            confusion: cm,
            coverage: None,
            selective_accuracy: None,
            flagged_by_reason: Default::default(),
        }
    }

    /// Adds the review figures: `reasons[i]` are the review reasons of cell `i` (none: not
    /// flagged), whose truth and prediction are `truth[i]` and `predicted[i]`.
    pub fn with_review(
        mut self,
        truth: &[usize],
        predicted: &[usize],
        reasons: &[Vec<&str>],
    ) -> Metrics {
        let kept: Vec<bool> = reasons.iter().map(|r| r.is_empty()).collect();
        let n = kept.len();
        let covered = kept.iter().filter(|&&k| k).count();
        let right = kept
            .iter()
            .zip(truth.iter().zip(predicted))
            .filter(|(&k, (t, p))| k && t == p)
            .count();
        self.coverage = (n > 0).then(|| covered as f64 / n as f64);
        self.selective_accuracy = (covered > 0).then(|| right as f64 / covered as f64);
        for r in reasons.iter().flatten() {
            *self.flagged_by_reason.entry(r.to_string()).or_default() += 1;
        }
        self
    }

    /// A plain-text table for terminals.
    pub fn to_table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "n = {}   accuracy {:.3}   Cohen's kappa {:.3}   macro F1 {:.3}\n",
            self.n, self.accuracy, self.kappa, self.macro_f1
        );
        if let Some(c) = self.coverage {
            let sel = self
                .selective_accuracy
                .map_or("-".to_string(), |a| format!("{a:.3}"));
            let reasons: Vec<String> = self
                .flagged_by_reason
                .iter()
                .map(|(r, k)| format!("{r} {k}"))
                .collect();
            let _ = writeln!(
                s,
                "not flagged for review: coverage {c:.3}   selective accuracy {sel}{}\n",
                if reasons.is_empty() {
                    String::new()
                } else {
                    format!("   (flagged: {})", reasons.join(", "))
                }
            );
        }
        let _ = writeln!(
            s,
            "{:<12} {:>9} {:>7} {:>7} {:>8}",
            "class", "precision", "recall", "F1", "support"
        );
        for c in &self.per_class {
            let _ = writeln!(
                s,
                "{:<12} {:>9.3} {:>7.3} {:>7.3} {:>8}",
                c.class.as_str(),
                c.precision,
                c.recall,
                c.f1,
                c.support
            );
        }
        let _ = writeln!(s, "\nconfusion matrix (rows: true, columns: predicted)");
        let _ = write!(s, "{:<12}", "");
        for c in &self.per_class {
            let _ = write!(s, " {:>6}", &c.class.as_str()[..3]);
        }
        let _ = writeln!(s);
        for (c, row) in self.per_class.iter().zip(&self.confusion.counts) {
            let _ = write!(s, "{:<12}", c.class.as_str());
            for v in row {
                let _ = write!(s, " {v:>6}");
            }
            let _ = writeln!(s);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(cm: &[[usize; 2]; 2]) -> (Vec<usize>, Vec<usize>) {
        let (mut t, mut p) = (Vec::new(), Vec::new());
        for (i, row) in cm.iter().enumerate() {
            for (j, &n) in row.iter().enumerate() {
                for _ in 0..n {
                    t.push(i);
                    p.push(j);
                }
            }
        }
        (t, p)
    }

    #[test]
    fn kappa_matches_the_textbook_example() {
        // Wikipedia "Cohen's kappa", simple example: 50 proposals, two readers;
        // both yes 20, A yes / B no 5, A no / B yes 10, both no 15 → p_o = 0.7,
        // p_e = 0.5, kappa = 0.4.
        let (t, p) = expand(&[[20, 5], [10, 15]]);
        let cm = ConfusionMatrix::new(&t, &p, 2);
        assert!((cm.accuracy() - 0.7).abs() < 1e-12);
        assert!((cm.kappa() - 0.4).abs() < 1e-12);
        // Second example there: 45/15/25/15 → p_o 0.6, p_e 0.54, kappa 0.1304.
        let (t, p) = expand(&[[45, 15], [25, 15]]);
        let k = ConfusionMatrix::new(&t, &p, 2).kappa();
        assert!((k - 0.130_434_78).abs() < 1e-6, "{k}");
    }

    #[test]
    fn per_class_scores_by_hand() {
        // truth:     0 0 0 1 1 2
        // predicted: 0 0 1 1 2 2
        let m = Metrics::compute(
            &[
                ClassLabel::Neutrophil,
                ClassLabel::Eosinophil,
                ClassLabel::Lymphocyte,
            ],
            &[0, 0, 0, 1, 1, 2],
            &[0, 0, 1, 1, 2, 2],
        );
        assert!((m.accuracy - 4.0 / 6.0).abs() < 1e-12);
        let c0 = &m.per_class[0];
        assert_eq!((c0.precision, c0.recall, c0.support), (1.0, 2.0 / 3.0, 3));
        assert!((c0.f1 - 0.8).abs() < 1e-12);
        let c1 = &m.per_class[1];
        assert_eq!((c1.precision, c1.recall), (0.5, 0.5));
        let c2 = &m.per_class[2];
        assert_eq!((c2.precision, c2.recall), (0.5, 1.0));
        assert!((m.macro_f1 - (0.8 + 0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        // p_e = (3*2 + 2*2 + 1*2) / 36 = 1/3; kappa = (2/3 - 1/3) / (2/3) = 0.5
        assert!((m.kappa - 0.5).abs() < 1e-12);
        assert_eq!(
            m.confusion.counts,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]
        );
    }

    #[test]
    fn degenerate_cases_do_not_divide_by_zero() {
        let cm = ConfusionMatrix::new(&[0, 0], &[0, 0], 2);
        assert_eq!(cm.kappa(), 0.0);
        assert_eq!(ConfusionMatrix::new(&[], &[], 3).accuracy(), 0.0);
    }
}
