"""Conditional instance normalization++ (CIN++), Song & Ermon 2019, appendix A.

For feature maps x of one image and noise level i, with μ_k the spatial mean
and s_k² the (biased) spatial variance of channel k:

    z_k = γ[i,k] * ((x_k - μ_k) / sqrt(s_k² + ε)
                    + α[i,k] * (μ_k - m) / sqrt(v + ε)) + β[i,k]

where m and v are the mean and variance of {μ_k} across channels. Plain
instance norm throws the per-channel means away (and with them the colour of
the image); the α term puts their relative size back, conditioned on i.

Matching ermongroup/ncsn `ConditionalInstanceNorm2dPlus`:

* ε = 1e-5 in both square roots (the PyTorch `InstanceNorm2d` default, and the
  constant written in the reference for the channel statistics);
* s_k² is biased (divides by H*W), as in `InstanceNorm2d`;
* v is UNBIASED (divides by C - 1), as `torch.var` defaults to. With a single
  channel the reference divides by zero and yields NaN; here the denominator is
  clamped to 1, so the α term is simply 0 (μ_k - m is 0 anyway).
"""

import keras
from keras import ops

# The epsilon PyTorch's InstanceNorm2d uses, also written in the reference for
# the across-channel statistics of the means.
EPSILON = 1e-5
# Statistics are taken in float32 whatever the compute dtype: a bfloat16 mean
# over a 32x32 map has ~3 significant digits, too few for a normalizer.
_STATS_DTYPE = 'float32'


def _init_near_one():
  # γ and α start at N(1, 0.02), as in the reference's embedding init.
  return keras.initializers.RandomNormal(mean=1.0, stddev=0.02)


@keras.saving.register_keras_serializable(package='ncsn_tf')
class ConditionalInstanceNormPlusPlus(keras.layers.Layer):
  """CIN++ with one (γ, α, β) row per noise level.

  Args:
    num_classes: number of noise levels L (rows of γ, α, β).
    bias: whether to add β (the reference always does inside NCSN).

  Call:
    x: float [N, H, W, C], any float dtype (bfloat16 under mixed precision).
    sigma_index: int [N], values in [0, num_classes).

  Returns:
    float [N, H, W, C] with the dtype of `x`; statistics are computed in
    float32 and the parameters are read in float32 (no autocast).
  """

  def __init__(self, num_classes: int, bias: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = int(num_classes)
    self.bias = bool(bias)

  def build(self, input_shape):
    channels = input_shape[-1]
    shape = (self.num_classes, channels)
    # autocast=False: under mixed_bfloat16 the parameters stay float32, so
    # γ ≈ 1 ± 0.02 is not rounded to bfloat16's 8-bit mantissa.
    self.gamma = self.add_weight(name='gamma', shape=shape, initializer=_init_near_one(),
                                 autocast=False)
    self.alpha = self.add_weight(name='alpha', shape=shape, initializer=_init_near_one(),
                                 autocast=False)
    self.beta = None
    if self.bias:
      self.beta = self.add_weight(name='beta', shape=shape, initializer='zeros',
                                  autocast=False)

  def _class_parameters(self, sigma_index):
    """Rows of γ, α, β for each example's noise level, each float32 [N, 1, 1, C]
    ([1, 1, 1, C] when there is a single row).

    A one-hot matmul rather than a gather: it is cheap for L ~ 10-1000 rows,
    traces into few ops, and gives dense gradients (no IndexedSlices to
    all-reduce across replicas).
    """
    tables = [self.gamma, self.alpha] + ([self.beta] if self.bias else [])
    if self.num_classes == 1:
      # One shared row (an unconditional network): no lookup at all; [1, 1, 1, C]
      # broadcasts over the batch, and the graph is 8 ops smaller per layer.
      return [ops.reshape(table, (1, 1, 1, -1)) for table in tables]
    one_hot = ops.one_hot(sigma_index, self.num_classes, dtype=_STATS_DTYPE)
    rows = ops.matmul(one_hot, ops.concatenate(tables, axis=1))  # [N, k*C]
    rows = ops.split(rows, len(tables), axis=1)
    return [row[:, None, None, :] for row in rows]

  def call(self, x, sigma_index):
    input_dtype = x.dtype
    x = ops.cast(x, _STATS_DTYPE)
    params = self._class_parameters(ops.cast(sigma_index, 'int32'))
    gamma, alpha = params[0], params[1]

    means = ops.mean(x, axis=(1, 2), keepdims=True)  # μ: [N, 1, 1, C]
    centered = x - means
    spatial_var = ops.mean(ops.square(centered), axis=(1, 2), keepdims=True)
    # γ((x-μ)/s + α·m̂) + β folded into one scale and one shift per (image,
    # channel), so the full-size maps see a single multiply-add (forward and
    # backward) instead of four elementwise passes.
    scale = gamma * ops.rsqrt(spatial_var + EPSILON)
    shift = gamma * alpha * _standardize_means(means)
    if self.bias:
      shift = shift + params[2]
    return ops.cast(centered * scale + shift, input_dtype)

  def compute_output_shape(self, x_shape, sigma_index_shape):
    return x_shape

  def get_config(self):
    return {**super().get_config(), 'num_classes': self.num_classes, 'bias': self.bias}


def _standardize_means(means):
  """(μ - mean_c μ) / sqrt(var_c μ + ε) with the unbiased variance over channels.

  Args:
    means: float32 [N, 1, 1, C], the per-channel spatial means.
  Returns:
    float32 [N, 1, 1, C].
  """
  channels = means.shape[-1]
  centered = means - ops.mean(means, axis=-1, keepdims=True)
  # torch.var is unbiased by default; clamp so one channel gives 0, not NaN.
  dof = max(channels - 1, 1)
  var = ops.sum(ops.square(centered), axis=-1, keepdims=True) / dof
  return centered * ops.rsqrt(var + EPSILON)
