//! Weight averaging over the last epochs of a run (stochastic weight averaging).
//!
//! With some fifty validation photos, the epoch whose validation loss happens to be
//! lowest is a noisy pick: neighbouring epochs differ by a few photos each way. The
//! mean of the weights of the last epochs is a flatter, less lucky point of the same
//! trajectory; its batch-norm statistics no longer belong to any of the averaged
//! networks, so they are recomputed afterwards (`train::recalibrate`).

use crate::error::{LeukoError, Result};
use crate::model::LeukoNet;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};
use std::collections::VecDeque;
use std::path::Path;

/// Every float parameter of `model` (weights, biases, batch-norm scale, shift and
/// running statistics), flattened in the module's visiting order.
pub fn flat_params(model: &LeukoNet) -> Result<Vec<f32>> {
    struct Collect {
        out: Vec<f32>,
        error: Option<String>,
    }
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            match param.val().into_data().try_to_vec::<f32>() {
                Ok(v) => self.out.extend(v),
                Err(e) => self.error = Some(format!("{e:?}")),
            }
        }
    }
    let mut c = Collect {
        out: Vec::new(),
        error: None,
    };
    model.visit(&mut c);
    match c.error {
        Some(e) => Err(LeukoError::Invalid(format!("reading the weights: {e}"))),
        None => Ok(c.out),
    }
}

/// `model` with its float parameters replaced by `flat` (as [`flat_params`] lays them out).
pub fn with_flat_params(model: LeukoNet, flat: &[f32]) -> Result<LeukoNet> {
    struct Assign<'a> {
        flat: &'a [f32],
        pos: usize,
        short: bool,
    }
    impl ModuleMapper for Assign<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| {
                let shape = t.shape();
                let n = shape.num_elements();
                let Some(values) = self.flat.get(self.pos..self.pos + n) else {
                    self.short = true;
                    return t;
                };
                self.pos += n;
                let device = t.device();
                Tensor::from_data(TensorData::new(values.to_vec(), shape), &device)
            })
        }
    }
    let mut a = Assign {
        flat,
        pos: 0,
        short: false,
    };
    let model = model.map(&mut a);
    if a.short || a.pos != flat.len() {
        return Err(LeukoError::Invalid(format!(
            "averaged weights hold {} values, the network {}",
            flat.len(),
            if a.short { a.pos + 1 } else { a.pos }
        )));
    }
    Ok(model)
}

/// The weights of the last epochs run, oldest first, at most `capacity` of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeightWindow {
    capacity: usize,
    snapshots: VecDeque<Vec<f32>>,
}

impl WeightWindow {
    pub fn new(capacity: usize) -> Self {
        WeightWindow {
            capacity,
            snapshots: VecDeque::with_capacity(capacity),
        }
    }

    pub fn len(&self) -> usize {
        self.snapshots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }

    pub fn push(&mut self, flat: Vec<f32>) -> Result<()> {
        if self.capacity == 0 {
            return Ok(());
        }
        if let Some(first) = self.snapshots.front() {
            if first.len() != flat.len() {
                return Err(LeukoError::Invalid(format!(
                    "weight average: {} values, then {}",
                    first.len(),
                    flat.len()
                )));
            }
        }
        if self.snapshots.len() == self.capacity {
            self.snapshots.pop_front();
        }
        self.snapshots.push_back(flat);
        Ok(())
    }

    /// The mean weights (summed in f64, oldest first); `None` when empty.
    pub fn mean(&self) -> Option<Vec<f32>> {
        let first = self.snapshots.front()?;
        let mut sum = vec![0f64; first.len()];
        for snap in &self.snapshots {
            for (s, &v) in sum.iter_mut().zip(snap) {
                *s += v as f64;
            }
        }
        let n = self.snapshots.len() as f64;
        Some(sum.into_iter().map(|s| (s / n) as f32).collect())
    }

    /// Little-endian: capacity, count and values per snapshot as u64, then the
    /// snapshots as f32, oldest first.
    pub fn to_bytes(&self) -> Vec<u8> {
        let per = self.snapshots.front().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(24 + 4 * per * self.snapshots.len());
        for n in [self.capacity, self.snapshots.len(), per] {
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
        for snap in &self.snapshots {
            for v in snap {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<WeightWindow> {
        let corrupt = || {
            LeukoError::Invalid(format!(
                "{}: corrupt weight-average checkpoint ({} bytes)",
                path.display(),
                bytes.len()
            ))
        };
        let word = |i: usize| -> Result<usize> {
            let b = bytes.get(8 * i..8 * i + 8).ok_or_else(corrupt)?;
            Ok(u64::from_le_bytes(b.try_into().map_err(|_| corrupt())?) as usize)
        };
        let (capacity, count, per) = (word(0)?, word(1)?, word(2)?);
        let body = &bytes[24..];
        if count > capacity
            || count.checked_mul(per).and_then(|n| n.checked_mul(4)) != Some(body.len())
        {
            return Err(corrupt());
        }
        let values: Vec<f32> = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let snapshots = if per == 0 {
            VecDeque::new()
        } else {
            values.chunks(per).map(<[f32]>::to_vec).collect()
        };
        Ok(WeightWindow {
            capacity,
            snapshots,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NetConfig;
    use burn::tensor::Device;

    #[test]
    fn flat_params_round_trip_and_mean_of_two_networks() {
        let cfg = NetConfig::new(vec![4, 8], 3);
        let device = Device::flex();
        device.seed(1);
        let a = cfg.init(&device);
        device.seed(2);
        let b = cfg.init(&device);
        let (fa, fb) = (flat_params(&a).unwrap(), flat_params(&b).unwrap());
        assert_eq!(fa.len(), fb.len());
        assert_ne!(fa, fb);
        // Replacing a's weights by b's gives b's weights.
        let a_as_b = with_flat_params(a, &fb).unwrap();
        assert_eq!(flat_params(&a_as_b).unwrap(), fb);

        let mut w = WeightWindow::new(2);
        w.push(fa.clone()).unwrap();
        w.push(fb.clone()).unwrap();
        let mean = w.mean().unwrap();
        for ((m, x), y) in mean.iter().zip(&fa).zip(&fb) {
            assert!((m - (x + y) / 2.0).abs() <= 1e-6 * (1.0 + x.abs() + y.abs()));
        }
        // Persisted and read back, the window is the same.
        let back = WeightWindow::from_bytes(&w.to_bytes(), Path::new("x")).unwrap();
        assert_eq!(back, w);
        assert!(w.push(fa[1..].to_vec()).is_err());
    }

    #[test]
    fn the_window_keeps_the_last_snapshots() {
        let mut w = WeightWindow::new(3);
        assert!(w.mean().is_none());
        for v in 1..=5 {
            w.push(vec![v as f32, -(v as f32)]).unwrap();
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.mean().unwrap(), vec![4.0, -4.0]); // epochs 3, 4, 5
        let mut off = WeightWindow::new(0);
        off.push(vec![1.0]).unwrap();
        assert!(off.is_empty());
    }

    #[test]
    fn wrong_sizes_and_corrupt_bytes_are_errors() {
        let cfg = NetConfig::new(vec![4], 2);
        let net = cfg.init(&Device::flex());
        let n = flat_params(&net).unwrap().len();
        assert!(with_flat_params(net.clone(), &vec![0.0; n - 1]).is_err());
        assert!(with_flat_params(net, &vec![0.0; n + 1]).is_err());
        let p = Path::new("x");
        assert!(WeightWindow::from_bytes(&[1, 2, 3], p).is_err());
        let mut w = WeightWindow::new(2);
        w.push(vec![1.0, 2.0]).unwrap();
        let bytes = w.to_bytes();
        assert!(WeightWindow::from_bytes(&bytes[..bytes.len() - 1], p).is_err());
        let empty = WeightWindow::new(4);
        assert_eq!(
            WeightWindow::from_bytes(&empty.to_bytes(), p).unwrap(),
            empty
        );
    }
}
