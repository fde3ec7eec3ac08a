//! The leukocyte classifier: a small ResNet-like CNN.
//!
//! ```text
//! Block(c_in, c):  x ─ conv3x3(c_in→c) ─ ReLU ─ Dropout ─ conv3x3(c→c) ─ BatchNorm ─ (+) ─ ReLU ─ MaxPool2x2
//!                  └──────────── 1x1 conv (c_in≠c) or identity ───────────────────────┘
//! Net:             Block … Block ─ global average pool ─ Linear(c_last → classes)
//! ```
//! Layers are initialised as in the Keras twin (Glorot-uniform kernels, zero biases),
//! so the two can be compared on equal terms.

pub mod file;

use leuko_kernels::{conv as fastconv, ops as fastops};

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Initializer, Linear, LinearConfig,
    PaddingConfig2d,
};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Shape of the network; stored with every model so that a model file describes itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Output channels of each residual block; one block per entry.
    pub blocks: Vec<usize>,
    /// Number of classes (outputs).
    pub num_classes: usize,
    /// Dropout probability between the two convolutions of a block.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Batch-norm momentum in burn's convention (weight of the new batch statistic).
    /// 0.1 = Keras momentum 0.9: with only 10-15 optimizer steps per epoch, Keras's
    /// default 0.99 leaves the running statistics far from the true ones.
    #[serde(default = "default_bn_momentum")]
    pub bn_momentum: f64,
    /// Batch-norm epsilon (Keras default 1e-3).
    #[serde(default = "default_bn_epsilon")]
    pub bn_epsilon: f64,
}

pub(crate) fn default_dropout() -> f64 {
    0.2
}
pub(crate) fn default_bn_momentum() -> f64 {
    0.1
}
pub(crate) fn default_bn_epsilon() -> f64 {
    1e-3
}

impl NetConfig {
    pub fn new(blocks: Vec<usize>, num_classes: usize) -> Self {
        NetConfig {
            blocks,
            num_classes,
            dropout: default_dropout(),
            bn_momentum: default_bn_momentum(),
            bn_epsilon: default_bn_epsilon(),
        }
    }

    /// Checks values a network cannot be built with.
    pub fn validate(&self) -> Result<(), String> {
        if self.blocks.is_empty() {
            return Err("net.blocks must list at least one block".into());
        }
        if self.blocks.contains(&0) {
            return Err("net.blocks: a block needs at least one channel".into());
        }
        if self.num_classes < 2 {
            return Err("the network needs at least two classes".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "net.dropout must be in [0, 1), got {}",
                self.dropout
            ));
        }
        if !(0.0..=1.0).contains(&self.bn_momentum) {
            return Err(format!(
                "net.bn_momentum must be in [0, 1], got {}",
                self.bn_momentum
            ));
        }
        if self.bn_epsilon <= 0.0 {
            return Err(format!(
                "net.bn_epsilon must be positive, got {}",
                self.bn_epsilon
            ));
        }
        Ok(())
    }

    /// Parameters as Keras counts them: trainable weights plus the batch-norm
    /// running mean and variance.
    pub fn keras_param_count(&self) -> usize {
        let mut n = 0;
        let mut c_in = 3;
        for &c in &self.blocks {
            n += c_in * c * 9 + c; // conv1
            n += c * c * 9 + c; // conv2
            n += 4 * c; // batch norm: gamma, beta, running mean, running var
            if c_in != c {
                n += c_in * c + c; // 1x1 shortcut
            }
            c_in = c;
        }
        n + c_in * self.num_classes + self.num_classes
    }

    /// Forward FLOPs (multiply-add = 2) for one image of `height` x `width`.
    pub fn forward_flops(&self, height: usize, width: usize) -> f64 {
        let (mut h, mut w, mut c_in) = (height, width, 3usize);
        let mut f = 0.0;
        for &c in &self.blocks {
            let px = (h * w) as f64;
            f += 2.0 * px * (c_in * c * 9) as f64 + 2.0 * px * (c * c * 9) as f64;
            if c_in != c {
                f += 2.0 * px * (c_in * c) as f64;
            }
            h /= 2;
            w /= 2;
            c_in = c;
        }
        f + 2.0 * (c_in * self.num_classes) as f64
    }

    pub fn init(&self, device: &Device) -> LeukoNet {
        let mut blocks = Vec::with_capacity(self.blocks.len());
        let mut c_in = 3;
        for &c in &self.blocks {
            blocks.push(Block::new(c_in, c, self, device));
            c_in = c;
        }
        let head = LinearConfig::new(c_in, self.num_classes)
            .with_initializer(glorot())
            .init(device);
        LeukoNet { blocks, head }
    }
}

fn glorot() -> Initializer {
    Initializer::XavierUniform { gain: 1.0 }
}

fn conv(c_in: usize, c_out: usize, k: usize, device: &Device) -> Conv2d {
    let padding = if k == 1 {
        PaddingConfig2d::Valid
    } else {
        PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2)
    };
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_padding(padding)
        .with_bias(true)
        .with_initializer(glorot())
        .init(device)
}

/// One residual block (see the module diagram).
#[derive(Module, Debug)]
pub struct Block {
    conv1: Conv2d,
    dropout: Dropout,
    conv2: Conv2d,
    bn: BatchNorm,
    shortcut: Option<Conv2d>,
    pool: MaxPool2d,
}

impl Block {
    fn new(c_in: usize, c: usize, cfg: &NetConfig, device: &Device) -> Self {
        Block {
            conv1: conv(c_in, c, 3, device),
            dropout: DropoutConfig::new(cfg.dropout).init(),
            conv2: conv(c, c, 3, device),
            bn: BatchNormConfig::new(c)
                .with_momentum(cfg.bn_momentum)
                .with_epsilon(cfg.bn_epsilon)
                .init(device),
            shortcut: (c_in != c).then(|| conv(c_in, c, 1, device)),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
        }
    }

    /// `dropout_seed`: `Some` in a training step (dropout active, mask drawn from the seed),
    /// `None` otherwise. Batch norm uses batch statistics on an autodiff device (as burn's
    /// does), running statistics elsewhere.
    fn forward(&self, x: Tensor<4>, dropout_seed: Option<u64>) -> Tensor<4> {
        if stock_ops() {
            return self.forward_stock(x, dropout_seed.is_some());
        }
        let (p, seed) = match dropout_seed {
            Some(seed) => (self.dropout.prob, seed),
            None => (0.0, 0),
        };
        let y = conv_relu_dropout(&self.conv1, x.clone(), 1, p, seed);
        let y = apply_conv(&self.conv2, y, 1);
        let skip = match &self.shortcut {
            Some(c) => apply_conv(c, x, 0),
            None => x,
        };
        self.batch_norm_add_relu_pool(y, skip)
    }

    /// Burn's own layers (`LEUKO_OPS=stock`), to compare speed and results. Dropout then draws
    /// from the device's generator.
    fn forward_stock(&self, x: Tensor<4>, dropout: bool) -> Tensor<4> {
        let y = relu(apply_conv(&self.conv1, x.clone(), 1));
        let y = if dropout { self.dropout.forward(y) } else { y };
        let y = self.bn.forward(apply_conv(&self.conv2, y, 1));
        let skip = match &self.shortcut {
            Some(c) => apply_conv(c, x, 0),
            None => x,
        };
        self.pool.forward(relu(y + skip))
    }

    /// Burn's `BatchNorm::forward`, then the residual add, ReLU and max-pool, with fused
    /// kernels; in training, running statistics are updated exactly as burn does.
    fn batch_norm_add_relu_pool(&self, x: Tensor<4>, skip: Tensor<4>) -> Tensor<4> {
        let bn = &self.bn;
        if !(x.device().is_autodiff() && bn.training.is_enabled()) {
            let device = x.device();
            let y = fastops::batch_norm_eval(
                x,
                bn.gamma.val(),
                bn.beta.val(),
                bn.running_mean.value().to_device(&device),
                bn.running_var.value().to_device(&device),
                bn.epsilon,
            );
            return fastops::add_relu_pool(y, skip);
        }
        let device = x.device();
        let (out, mean, var) = fastops::batch_norm_add_relu_pool_train(
            x,
            bn.gamma.val(),
            bn.beta.val(),
            bn.epsilon,
            skip,
        );
        let m = bn.momentum;
        let running_mean = bn.running_mean.value_sync().to_device(&device);
        let running_var = bn.running_var.value_sync().to_device(&device);
        let running_mean = running_mean.mul_scalar(1.0 - m).add(mean.mul_scalar(m));
        let running_var = running_var.mul_scalar(1.0 - m).add(var.mul_scalar(m));
        bn.running_mean.update(running_mean.detach());
        bn.running_var.update(running_var.detach());
        out
    }
}

/// `LEUKO_OPS=stock` runs burn's own ReLU, dropout, batch norm and pooling instead of
/// [`fastops`], to compare speed and results.
pub fn stock_ops() -> bool {
    static STOCK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STOCK.get_or_init(|| std::env::var("LEUKO_OPS").is_ok_and(|v| v == "stock"))
}

/// `fastops::relu_dropout(apply_conv(c, x, padding), p, seed)`, fused where the kernels run.
fn conv_relu_dropout(c: &Conv2d, x: Tensor<4>, padding: usize, p: f64, seed: u64) -> Tensor<4> {
    match &c.bias {
        Some(bias) if !stock_conv() => {
            // Bias first, as `apply_conv` does: parameters are initialised lazily, on first
            // access, from the device's generator, so the order of first accesses decides which
            // random values each gets.
            let bias = bias.val();
            fastconv::conv2d_relu_dropout(x, c.weight.val(), bias, padding, p, seed)
        }
        _ => fastops::relu_dropout(apply_conv(c, x, padding), p, seed),
    }
}

fn apply_conv(c: &Conv2d, x: Tensor<4>, padding: usize) -> Tensor<4> {
    let bias = c.bias.as_ref().map(Param::val);
    if stock_conv() {
        burn::tensor::module::conv2d(
            x,
            c.weight.val(),
            bias,
            burn::tensor::ops::ConvOptions::new([1, 1], [padding, padding], [1, 1], 1),
        )
    } else {
        fastconv::conv2d(x, c.weight.val(), bias, padding)
    }
}

/// `LEUKO_CONV=stock` runs burn's own convolution instead of [`fastconv`], to
/// compare speed and results.
pub fn stock_conv() -> bool {
    static STOCK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STOCK.get_or_init(|| std::env::var("LEUKO_CONV").is_ok_and(|v| v == "stock"))
}

/// The classifier.
#[derive(Module, Debug)]
pub struct LeukoNet {
    blocks: Vec<Block>,
    head: Linear,
}

impl LeukoNet {
    /// Fine-tuning's starting point: `self` (trained for the classes `from`) with its
    /// classifier re-aimed at the classes `to`. Every layer but the classifier is kept; a class
    /// of `to` that `from` has keeps its classifier column and bias; a new class takes its
    /// column from `fresh` (a network of `to`'s size initialised as for training from scratch,
    /// Glorot-uniform) and a zero bias. `fresh` must have `to.len()` outputs.
    pub fn with_classes(
        mut self,
        from: &[crate::data::ClassLabel],
        to: &[crate::data::ClassLabel],
        fresh: &LeukoNet,
    ) -> LeukoNet {
        let old_w = self.head.weight.val();
        let new_w = fresh.head.weight.val();
        let [d, _] = old_w.dims();
        let old_b = self.head.bias.as_ref().map(|b| b.val());
        let device = old_w.device();
        let mut cols = Vec::with_capacity(to.len());
        let mut bias = Vec::with_capacity(to.len());
        for (j, class) in to.iter().enumerate() {
            match from.iter().position(|c| c == class) {
                Some(i) => {
                    cols.push(old_w.clone().slice([0..d, i..i + 1]));
                    bias.push(old_b.clone().map(|b| b.slice(i..i + 1)));
                }
                None => {
                    cols.push(new_w.clone().slice([0..d, j..j + 1]));
                    bias.push(old_b.as_ref().map(|_| Tensor::<1>::zeros([1], &device)));
                }
            }
        }
        self.head.weight = Param::from_tensor(Tensor::cat(cols, 1).detach());
        if old_b.is_some() {
            let parts: Vec<Tensor<1>> = bias.into_iter().flatten().collect();
            self.head.bias = Some(Param::from_tensor(Tensor::cat(parts, 0).detach()));
        }
        self
    }

    /// The same network with every batch norm's momentum set to `momentum`
    /// (used to recompute exact running statistics, see `train::recalibrate`).
    pub fn with_bn_momentum(mut self, momentum: f64) -> Self {
        for b in &mut self.blocks {
            b.bn.momentum = momentum;
        }
        self
    }

    /// The batch-norm momentum of the first block.
    pub fn bn_momentum(&self) -> f64 {
        self.blocks.first().map(|b| b.bn.momentum).unwrap_or(0.1)
    }

    /// `x`: `[batch, 3, height, width]`, RGB in [0, 1]. Returns logits `[batch, classes]`.
    /// No dropout; batch norm uses batch statistics on an autodiff device (training mode) and
    /// running statistics elsewhere.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_with(x, None)
    }

    /// A training step's forward pass: as [`LeukoNet::forward`], with dropout whose masks are
    /// drawn from `dropout_seed` (one seed per step makes the step reproducible).
    pub fn forward_train(&self, x: Tensor<4>, dropout_seed: u64) -> Tensor<2> {
        self.forward_with(x, Some(dropout_seed))
    }

    /// [`LeukoNet::forward`] (eval mode), also returning the pooled features the classifier
    /// reads (`[batch, channels]`): what the network "sees" in each input, from the same pass.
    pub fn forward_with_features(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let pooled = self.pooled(x, None);
        (self.head.forward(pooled.clone()), pooled)
    }

    fn forward_with(&self, x: Tensor<4>, dropout_seed: Option<u64>) -> Tensor<2> {
        self.head.forward(self.pooled(x, dropout_seed))
    }

    fn pooled(&self, x: Tensor<4>, dropout_seed: Option<u64>) -> Tensor<2> {
        let mut x = x;
        for (i, b) in self.blocks.iter().enumerate() {
            let seed =
                dropout_seed.map(|s| mix(s ^ (i as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407)));
            x = b.forward(x, seed);
        }
        let [n, c, _, _] = x.dims();
        x.mean_dim(3).mean_dim(2).reshape([n, c])
    }
}

/// A 64-bit mixer (splitmix64's finaliser), so nearby seeds give unrelated masks.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
