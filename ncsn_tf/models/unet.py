"""A small noise-conditional U-Net score network for images (NHWC).

The paper's RefineNet (`refinenet.py`) keeps the full and half resolutions only
and grows its receptive field with dilations. On a 2-core CPU, with minutes of
training, it learned the offline `shapes` images slowly: flat blobs rather than
discs, squares and triangles (docs/images.md, "Where the samples lose their shapes").
This network is the other common design of score models, the U-Net of DDPM
(Ho et al. 2020) and of the score-SDE models (Song et al. 2021, NCSN++), cut
down for a CPU: no attention, no dropout, average pooling down and nearest
upsampling up. It halves the resolution at every level down to 4x4 at 32x32
inputs, so its deepest features see the whole image, and it costs a little less per
step than the RefineNet of the same base width (a batch-16 training step of
shapes at width 16 on the 2-core CPU: 148 against 164 ms, medians of five
alternating fresh processes).

Layout for channel_mults (1, 2, 2, 2) and width F at 32x32:

    stem 3x3 -> F                                          32x32
    down: 2 residual blocks per level, each output kept as a skip;
          2x2 average pool between levels                 32, 16, 8, 4
          widths F, 2F, 2F, 2F
    middle: 2 residual blocks at 2F                        4x4
    up:   3 residual blocks per level, each on [h, skip] (channel concat);
          nearest 2x upsampling + 3x3 conv between levels  4, 8, 16, 32
    GroupNorm -> SiLU -> 3x3 conv -> channels

Each residual block is GroupNorm -> SiLU -> conv 3x3, plus a learned per-channel
bias from the noise-level embedding, then GroupNorm -> SiLU -> conv 3x3, added to
the (1x1-projected when the width changes) input. The noise level enters as
sinusoidal features of log σ_i passed through a two-layer MLP. The last conv of
every block starts at zero, so every block starts as its shortcut, and the output
conv starts at zero, so the untrained network's score is exactly zero.

With `norm='none'` every GroupNorm becomes the identity and the input is scaled to
unit variance at every level instead, c_in(σ) = 1 / sqrt(1 + (2σ)²) on the [-1, 1]
image plus noise of std 2σ (1 / sqrt(1 + σ²) on logits; EDM's c_in, Karras et al.
2022). GroupNorm is what made the network blind to the input's scale (σ_1 = 50
gives inputs of std 100), so without it the input scale has to be set explicitly.
Training stays stable without normalisation because every residual block starts as
its shortcut (SkipInit, De & Smith 2020). On a 2-core CPU the normalisation costs
nearly half of a small U-Net's step: at width 16, 32x32, batch 16 the step takes
145 ms with GroupNorm and 77 ms without, the difference being elementwise passes
over the full-resolution maps.

With `sigma_data` (`--preconditioning=edm`) the whole of EDM's preconditioning
applies (`preconditioning.py`): the input is scaled by c_in = 1/√(σ² + σ_d²), and
the network predicts a mix of the clean image and the noise, weighted by σ, instead
of the noise alone; the untrained network then gives the score of Gaussian data
N(centre, σ_d²) rather than zero.

With `continuous=True` the second call argument is σ itself, float32 [N] > 0 in
the data's units, instead of a level index: the same sinusoidal embedding of
log σ, input scaling and 1/σ (or EDM) output, computed from that σ. Nothing
else changes (same layers, same parameters), so a ladder-trained U-Net's
weights load into the continuous one and give the same scores at its levels;
the geometric frequencies (0.5 to 32 rad per unit of log σ) are smooth
functions of log σ between the levels. `sigmas` then only records the range
the network is meant for (the VE SDE's σ_min .. σ_max).
"""

import keras
import numpy as np
from keras import ops

from ncsn_tf import noise
from ncsn_tf.models import preconditioning
from ncsn_tf.models import registry
from ncsn_tf.models.mlp import label_or_null

_PACKAGE = 'ncsn_tf'
# GroupNorm groups: at most 8, at least 4 channels per group (ngf 16: 4 and 8 groups).
_MAX_GROUPS = 8
_MIN_CHANNELS_PER_GROUP = 4
# The level embedding: sin and cos of log σ at this many frequencies, geometric
# between the two bounds (radians per unit of log σ). Neighbouring levels of a
# 100-level ladder from 50 to 0.01 differ by 0.086 in log σ: 2.7 rad at the top
# frequency; the whole ladder spans 8.5, 4.3 rad at the bottom one (no wrap-around).
_EMBED_FREQUENCIES = 8
_EMBED_MIN_FREQUENCY = 0.5
_EMBED_MAX_FREQUENCY = 32.0
# GroupNorm's epsilon (PyTorch's default, as in the score-SDE models).
_NORM_EPSILON = 1e-5
#: `norm` values: GroupNorm in every block, or no normalisation (unit-scale input).
NORMS = ('group', 'none')


def group_count(channels: int) -> int:
  """GroupNorm groups for `channels` features: min(8, channels // 4), at least 1."""
  return max(1, min(_MAX_GROUPS, channels // _MIN_CHANNELS_PER_GROUP))


def _normalization(norm: str, channels: int, name: str):
  if norm == 'none':
    return keras.layers.Identity(name=name)
  return keras.layers.GroupNormalization(groups=group_count(channels),
                                         epsilon=_NORM_EPSILON, name=name)


def input_scale(sigma, logit_transform: bool = False):
  """c_in(σ): unit scale for a centred input of unit variance plus its noise.

  EDM's c_in (`preconditioning.input_scale`) for data whose centred form y has
  unit variance: 1/sqrt(1 + (2σ)²) for a [0, 1] image (y = 2x − 1 carries noise
  2σ, and σ_d = 0.5), 1/sqrt(1 + σ²) for logits (y = x, σ_d = 1).
  sigma: float [N] in the data's units. Returns float [N].
  """
  unit_sigma_data = 1.0 if logit_transform else 0.5
  return preconditioning.input_scale(sigma, unit_sigma_data, logit_transform)


def _conv(filters: int, kernel_size: int, name: str, zero: bool = False):
  initializer = 'zeros' if zero else 'glorot_uniform'
  return keras.layers.Conv2D(filters, kernel_size, padding='same',
                             kernel_initializer=initializer, name=name)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class EmbeddedResidualBlock(keras.layers.Layer):
  """(GroupNorm -> SiLU -> conv) x 2 with a level-dependent bias, plus a shortcut.

  Args:
    output_dim: output channels C_out.
    norm: 'group' (GroupNorm) or 'none' (identity).

  Call: x float [N, H, W, C_in], embedding float [N, E] -> [N, H, W, C_out].
  """

  def __init__(self, output_dim: int, norm: str = 'group', **kwargs):
    super().__init__(**kwargs)
    self.output_dim = int(output_dim)
    self.norm = norm
    self.norm1 = None  # needs C_in; made in build
    self.conv1 = _conv(self.output_dim, 3, 'conv1')
    self.level_bias = keras.layers.Dense(self.output_dim, name='level_bias')
    self.norm2 = _normalization(norm, self.output_dim, 'norm2')
    self.conv2 = _conv(self.output_dim, 3, 'conv2', zero=True)
    self.shortcut = None

  def build(self, x_shape, embedding_shape):
    # Keras passes each call argument's shape by name (x -> x_shape, ...).
    channels = x_shape[-1]
    self.norm1 = _normalization(self.norm, channels, 'norm1')
    self.norm1.build(x_shape)
    self.conv1.build(x_shape)
    inner_shape = tuple(x_shape[:-1]) + (self.output_dim,)
    self.level_bias.build(embedding_shape)
    self.norm2.build(inner_shape)
    self.conv2.build(inner_shape)
    if channels != self.output_dim:
      self.shortcut = _conv(self.output_dim, 1, 'shortcut')
      self.shortcut.build(x_shape)

  def call(self, x, embedding):
    h = self.conv1(ops.silu(self.norm1(x)))
    h = h + ops.cast(self.level_bias(embedding), h.dtype)[:, None, None, :]
    h = self.conv2(ops.silu(self.norm2(h)))
    return (x if self.shortcut is None else self.shortcut(x)) + h

  def get_config(self):
    return {**super().get_config(), 'output_dim': self.output_dim, 'norm': self.norm}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ScoreUNet(keras.Model):
  """s_θ(x, i): a noise-conditional U-Net.

  Args:
    ngf: base width F (channels at full resolution).
    sigmas: the ladder σ_1 > ... > σ_L (L floats): the level embedding reads
      log σ_i, and with `scale_by_sigma` the output is divided by σ_i.
    image_size: H = W of the inputs; divisible by 2^(len(channel_mults) − 1)
      (8 for the default four levels).
    channels: image channels C.
    channel_mults: width of each resolution level in units of F.
    num_res_blocks: residual blocks per level on the way down (one more up).
    logit_transform: inputs are already in logit space; otherwise x in [0, 1]
      is mapped to 2x − 1 in [-1, 1] first.
    scale_by_sigma: divide the output by σ_i (NCSNv2, Song & Ermon 2020,
      technique 3), so the network produces a unit-scale field at every level.
    norm: 'group' (GroupNorm in every block) or 'none' (no normalisation; the
      input is scaled by `input_scale(σ_i)` instead).
    sigma_data: None, or EDM's preconditioning with this data standard
      deviation σ_d in the data's units (`ncsn_tf.models.preconditioning`):
      the input is scaled by c_in (instead of `input_scale`), the network is
      a denoiser D = c_skip·y + c_out·F(c_in·y), and the score (D − y)/(k·σ_i²)
      is returned. Excludes `scale_by_sigma`; F ≡ 0 (the zero-initialised
      output convolution) gives the exact score of Gaussian data N(centre, σ_d²).
    continuous: call with σ float32 [N] > 0 (data units) as the second
      argument in place of the level index (module docstring).
    label_classes: C > 0 makes the network class-conditional (classifier-free
      guidance, Ho & Salimans 2022): a learned label embedding of C + 1 rows
      (row C = "no label" ∅) is added to the noise-level embedding, as
      ADM adds its class embedding to the time embedding. 0 (the default)
      builds no embedding: an unconditional network, checkpoints unchanged.

  Call:
    x: float32 [N, image_size, image_size, channels], in [0, 1] (or logits).
    sigma_index: int32 [N], values in [0, L); with `continuous`, the noise
      levels σ themselves, float32 [N] > 0.
    labels: with label_classes > 0, optionally int32 [N] in [0, C] (C = ∅);
      None = ∅ for every example, the unconditional score.
  Returns:
    float32 [N, image_size, image_size, channels]: the estimated score
    ∇_x log p_{σ_i}(x). Under a mixed policy the network computes in
    bfloat16/float16 and the output is cast back to float32.
  """

  def __init__(self, ngf: int, sigmas, image_size: int, channels: int,
               channel_mults=(1, 2, 2, 2), num_res_blocks: int = 2,
               logit_transform: bool = False, scale_by_sigma: bool = True,
               norm: str = 'group', sigma_data=None, continuous: bool = False,
               label_classes: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.ngf = int(ngf)
    self.sigmas = [float(s) for s in sigmas]
    self.image_size = int(image_size)
    self.channels = int(channels)
    self.channel_mults = tuple(int(m) for m in channel_mults)
    self.num_res_blocks = int(num_res_blocks)
    self.logit_transform = bool(logit_transform)
    self.scale_by_sigma = bool(scale_by_sigma)
    self.norm = norm
    self.sigma_data = None if sigma_data is None else float(sigma_data)
    self.continuous = bool(continuous)
    self.label_classes = int(label_classes)
    if self.sigma_data is not None and (scale_by_sigma or not self.sigma_data > 0):
      raise ValueError(f'sigma_data={sigma_data} (EDM preconditioning) needs a positive '
                       f'value and scale_by_sigma=False: it scales the output itself')
    if norm not in NORMS:
      raise ValueError(f'norm must be one of {", ".join(NORMS)}, got {norm!r}')
    if not self.sigmas or min(self.sigmas) <= 0:
      raise ValueError(f'sigmas must be a non-empty list of positive floats, got {sigmas}')
    factor = 2 ** (len(self.channel_mults) - 1)
    if self.image_size % factor:
      raise ValueError(f'image_size must be divisible by {factor} ({len(self.channel_mults)} '
                       f'resolution levels), got {self.image_size}')
    self._frequencies = np.geomspace(_EMBED_MIN_FREQUENCY, _EMBED_MAX_FREQUENCY,
                                     _EMBED_FREQUENCIES).astype(np.float32)
    self._build_sublayers()

  def _build_sublayers(self):
    embed_dim = 4 * self.ngf
    self.embed_dense1 = keras.layers.Dense(embed_dim, name='embed_dense1')
    self.embed_dense2 = keras.layers.Dense(embed_dim, name='embed_dense2')
    self.stem = _conv(self.ngf, 3, 'stem')
    last = len(self.channel_mults) - 1
    self.down_blocks, self.up_blocks, self.up_convs = [], [], []
    for level, mult in enumerate(self.channel_mults):
      self.down_blocks.append([self._block(self.ngf * mult, f'down{level}_{b}')
                               for b in range(self.num_res_blocks)])
    width = self.ngf * self.channel_mults[-1]
    self.middle = [self._block(width, f'middle_{b}') for b in range(2)]
    for level in range(last, -1, -1):
      width = self.ngf * self.channel_mults[level]
      self.up_blocks.append([self._block(width, f'up{level}_{b}')
                             for b in range(self.num_res_blocks + 1)])
      if level > 0:
        self.up_convs.append(_conv(width, 3, f'upsample{level}'))
    self.out_norm = _normalization(self.norm, self.ngf * self.channel_mults[0], 'out_norm')
    self.out_conv = _conv(self.channels, 3, 'out_conv', zero=True)
    self.pool = keras.layers.AveragePooling2D(2, name='pool')
    if self.label_classes:
      self.label_embedding = keras.layers.Embedding(self.label_classes + 1, embed_dim,
                                                    name='label_embedding')

  def _block(self, width: int, name: str):
    return EmbeddedResidualBlock(width, norm=self.norm, name=name)

  def _level_sigma(self, sigma_index):
    """σ_i of each example's level, or σ itself when continuous: float32 [N]."""
    if self.continuous:
      return ops.reshape(ops.cast(sigma_index, 'float32'), (-1,))
    return ops.take(ops.convert_to_tensor(self.sigmas, 'float32'), sigma_index)

  def _embedding(self, sigma):
    """The level embedding of σ [N]: [N, 4F] in the compute dtype."""
    phase = ops.log(sigma)[:, None] * ops.convert_to_tensor(self._frequencies)[None, :]
    features = ops.concatenate([ops.sin(phase), ops.cos(phase)], axis=-1)
    return ops.silu(self.embed_dense2(ops.silu(self.embed_dense1(features))))

  def call(self, x, sigma_index, labels=None, training=False):
    del training  # No dropout or batch statistics: train and test are the same.
    sigma = self._level_sigma(sigma_index)
    embedding = self._embedding(sigma)
    if self.label_classes:
      embedding = embedding + ops.cast(
          self.label_embedding(label_or_null(labels, sigma, self.label_classes)), embedding.dtype)
    elif labels is not None:
      raise ValueError('labels given to a network built without label_classes (not class-conditional)')
    if not self.logit_transform:
      x = 2.0 * x - 1.0
    if self.sigma_data is not None:
      y = ops.cast(x, 'float32')
      c_in, out_scale, pull = preconditioning.edm_coefficients(
          ops.reshape(sigma, (-1, 1, 1, 1)), self.sigma_data, self.logit_transform)
      x = c_in * y
    elif self.norm == 'none':  # no GroupNorm to undo the input's scale: set it here
      x = x * ops.cast(input_scale(sigma, self.logit_transform), x.dtype)[:, None, None, None]
    h = self.stem(x)
    skips = [h]
    for level, blocks in enumerate(self.down_blocks):
      for block in blocks:
        h = block(h, embedding)
        skips.append(h)
      if level < len(self.down_blocks) - 1:
        h = self.pool(h)
        skips.append(h)
    for block in self.middle:
      h = block(h, embedding)
    for index, blocks in enumerate(self.up_blocks):
      for block in blocks:
        h = block(ops.concatenate([h, skips.pop()], axis=-1), embedding)
      if index < len(self.up_convs):
        h = self.up_convs[index](ops.repeat(ops.repeat(h, 2, axis=1), 2, axis=2))
    h = ops.cast(self.out_conv(ops.silu(self.out_norm(h))), 'float32')
    if self.sigma_data is not None:
      return out_scale * h - pull * y
    if self.scale_by_sigma:
      h = h / ops.reshape(sigma, (-1, 1, 1, 1))
    return h

  def build_for(self, batch_size: int = 1):
    """Creates all variables by running the network once on zeros; returns self."""
    if not self.built:
      shape = (batch_size, self.image_size, self.image_size, self.channels)
      level = (np.full((batch_size,), self.sigmas[-1], np.float32) if self.continuous
               else np.zeros((batch_size,), np.int32))
      self(np.zeros(shape, np.float32), level)
    return self

  def get_config(self):
    return {**super().get_config(), 'ngf': self.ngf, 'sigmas': self.sigmas,
            'image_size': self.image_size, 'channels': self.channels,
            'channel_mults': self.channel_mults, 'num_res_blocks': self.num_res_blocks,
            'logit_transform': self.logit_transform, 'scale_by_sigma': self.scale_by_sigma,
            'norm': self.norm, 'sigma_data': self.sigma_data, 'continuous': self.continuous,
            'label_classes': self.label_classes}


# --- from the Config ---------------------------------------------------------

def build_from_config(config, data_shape: tuple) -> keras.Model:
  """--model=unet: the small U-Net, on the ladder or on σ (--noise_embedding=fourier)."""
  m = config.model
  height, _, channels = data_shape
  continuous = m.noise_embedding == 'fourier'
  # --class_conditional: s(x, σ, y) with a label embedding (classifier-free guidance).
  label_classes = registry.label_count(config) if m.class_conditional else 0
  sigmas = noise.geometric_sigmas(m.sigma_begin, m.sigma_end, m.num_scales)
  return ScoreUNet(ngf=m.ngf, sigmas=sigmas.tolist(), image_size=height, channels=channels,
                   logit_transform=config.data.logit_transform,
                   scale_by_sigma=m.scale_by_sigma, norm=m.unet_norm,
                   sigma_data=m.sigma_data if m.preconditioning == 'edm' else None,
                   continuous=continuous, label_classes=label_classes,
                   name='score_unet').build_for()


registry.register(registry.NetworkSpec(
    name='unet', build=build_from_config, data='image', continuous=True,
    doc='a small U-Net (NCSNv2 techniques), on the ladder or on σ itself'))
