"""Noise-conditional classifiers p(y | x, σ) for classifier guidance.

Classifier guidance (Song et al. 2021, section 5; Dhariwal & Nichol 2021)
needs ∇_x log p_σ(y | x) at every noise level the sampler visits, so the
classifier is trained on perturbed data x̃ = x + σ z and told σ, as the
continuous score networks are (models/mlp.py ContinuousScoreMLP,
models/unet.py ScoreUNet(continuous=True)):

* σ enters as Gaussian Fourier features of log σ (fixed frequencies drawn
  from a seeded numpy generator, not weights), mapped by a learned dense
  layer and SiLU to an embedding, from which every block adds a learned bias
  per channel (the U-Net's `level_bias`);
* the input is scaled to unit size at every σ: c_in(σ) = 1/sqrt(1 + (2σ)²)
  on the [-1, 1] image (models/unet.py `input_scale`), 1/sqrt(1 + σ²) on
  flat data, so that at σ = 50 the network does not see inputs of std 100.

Two networks, one contract, `classifier(x, sigma) -> logits`:

* `NoiseConditionalClassifier` for images [N, H, W, C]: conv blocks
  (conv 3x3 + level bias -> SiLU -> conv 3x3 -> SiLU -> 2x2 average pool)
  halving the resolution down to 4x4, then global average pooling and a
  dense layer to the logits;
* `NoiseConditionalMLPClassifier` for flat data [N, D]: dense layers, each
  plus a level bias, SiLU, then the logits.

σ is the VE-equivalent noise level in the data's units: for VP/sub-VP the
sampler passes x_t/α(t) and σ(t) = std(t)/α(t) (ScoreModel.score_t's
convention; ncsn_tf/sampling/guidance.py), so one classifier serves every SDE.
Both are smooth in x (SiLU, average pooling), so ∇_x log p(y | x, σ) exists
everywhere. Logits are float32 [N, num_classes] under any precision policy.
"""

import keras
import numpy as np
from keras import ops

from ncsn_tf.models import unet

_PACKAGE = 'ncsn_tf'
#: Fourier features of log σ: this many frequencies, std 1 cycle per unit of log σ
#: (ContinuousScoreMLP's defaults: smooth over neighbouring σ, distinct over the range).
_FOURIER_FEATURES = 16
_FOURIER_SCALE = 1.0
#: The image classifier halves its resolution down to this size before pooling.
_SMALLEST_RESOLUTION = 4
#: Channel multipliers of successive image blocks (the last repeats).
_WIDTH_MULTS = (1, 2, 2, 4)


def fourier_frequencies(seed: int, count: int = _FOURIER_FEATURES,
                        scale: float = _FOURIER_SCALE) -> np.ndarray:
  """Angular frequencies float32 [count] (radians per unit of log σ), fixed by `seed`."""
  return (2.0 * np.pi * scale * np.random.default_rng(seed).standard_normal(count)).astype(np.float32)


def noise_features(sigma, frequencies):
  """[sin, cos](ω log σ): float32 [N, 2F] for σ float32 [N] > 0."""
  phase = ops.log(ops.reshape(ops.cast(sigma, 'float32'), (-1, 1))) * ops.convert_to_tensor(
      frequencies)[None, :]
  return ops.concatenate([ops.sin(phase), ops.cos(phase)], axis=-1)


class _Base(keras.Model):
  """What both classifiers share: the class count, the σ embedding, float32 logits."""

  def __init__(self, num_classes: int, embed_dim: int, fourier_seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = int(num_classes)
    if self.num_classes < 2:
      raise ValueError(f'a classifier needs num_classes >= 2, got {num_classes}')
    self.fourier_seed = int(fourier_seed)
    self._frequencies = fourier_frequencies(self.fourier_seed)
    self.embed = keras.layers.Dense(int(embed_dim), name='embed')
    self.head = keras.layers.Dense(self.num_classes, name='head')

  def _embedding(self, sigma):
    return ops.silu(self.embed(noise_features(sigma, self._frequencies)))

  def log_probs(self, x, sigma):
    """log p(y | x, σ) for every class: float32 [N, num_classes]."""
    return ops.log_softmax(self(x, sigma), axis=-1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NoiseConditionalClassifier(_Base):
  """Logits of p(y | x, σ) for images: x [N, S, S, C], σ [N] -> float32 [N, num_classes].

  Args:
    num_classes: the number of classes (>= 2).
    image_size: S; a multiple of 4 (>= 4) so that the blocks reach 4x4.
    channels: C.
    ngf: the first block's width; later blocks are 2x, 2x, 4x wider.
    logit_transform: inputs are logits; otherwise x in [0, 1] is mapped to 2x − 1.
    fourier_seed: seed of the noise features' frequencies.

  Call: x float32 [N, S, S, C] (data plus N(0, σ²) noise, in the data's units),
  sigma float32 [N] > 0.
  """

  def __init__(self, num_classes: int, image_size: int, channels: int, ngf: int = 16,
               logit_transform: bool = False, fourier_seed: int = 0, **kwargs):
    super().__init__(num_classes, 4 * int(ngf), fourier_seed, **kwargs)
    self.image_size = int(image_size)
    self.channels = int(channels)
    self.ngf = int(ngf)
    self.logit_transform = bool(logit_transform)
    if self.image_size < _SMALLEST_RESOLUTION or self.image_size % _SMALLEST_RESOLUTION:
      raise ValueError(f'image_size must be a multiple of {_SMALLEST_RESOLUTION}, got {image_size}')
    num_blocks = max(1, int(np.log2(self.image_size // _SMALLEST_RESOLUTION)))
    self.stem = keras.layers.Conv2D(self.ngf, 3, padding='same', name='stem')
    self.convs1, self.convs2, self.level_biases = [], [], []
    for b in range(num_blocks):
      width = self.ngf * _WIDTH_MULTS[min(b, len(_WIDTH_MULTS) - 1)]
      self.convs1.append(keras.layers.Conv2D(width, 3, padding='same', name=f'block{b}_conv1'))
      self.level_biases.append(keras.layers.Dense(width, name=f'block{b}_level_bias'))
      self.convs2.append(keras.layers.Conv2D(width, 3, padding='same', name=f'block{b}_conv2'))
    self.pool = keras.layers.AveragePooling2D(2, name='pool')

  def call(self, x, sigma):
    sigma = ops.reshape(ops.cast(sigma, 'float32'), (-1,))
    embedding = self._embedding(sigma)
    y = x if self.logit_transform else 2.0 * x - 1.0
    y = y * ops.cast(unet.input_scale(sigma, self.logit_transform), y.dtype)[:, None, None, None]
    h = self.stem(y)
    for conv1, level_bias, conv2 in zip(self.convs1, self.level_biases, self.convs2):
      h = conv1(h)
      h = ops.silu(h + ops.cast(level_bias(embedding), h.dtype)[:, None, None, :])
      h = self.pool(ops.silu(conv2(h)))
    return ops.cast(self.head(ops.mean(h, axis=(1, 2))), 'float32')

  def build_for(self):
    """Creates the variables by one call on zeros at σ = 1; returns self."""
    self(np.zeros((1, self.image_size, self.image_size, self.channels), np.float32),
         np.ones((1,), np.float32))
    return self

  def get_config(self):
    return {**super().get_config(), 'num_classes': self.num_classes,
            'image_size': self.image_size, 'channels': self.channels, 'ngf': self.ngf,
            'logit_transform': self.logit_transform, 'fourier_seed': self.fourier_seed}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NoiseConditionalMLPClassifier(_Base):
  """Logits of p(y | x, σ) for flat data: x [N, D], σ [N] -> float32 [N, num_classes].

  Args:
    num_classes: the number of classes (>= 2).
    data_dim: D.
    hidden_units: width of each hidden layer.
    num_layers: number of hidden layers.
    fourier_seed: seed of the noise features' frequencies.
  """

  def __init__(self, num_classes: int, data_dim: int, hidden_units: int = 64,
               num_layers: int = 2, fourier_seed: int = 0, **kwargs):
    super().__init__(num_classes, int(hidden_units), fourier_seed, **kwargs)
    self.data_dim = int(data_dim)
    self.hidden_units = int(hidden_units)
    self.num_layers = int(num_layers)
    self.hidden = [keras.layers.Dense(self.hidden_units, name=f'dense_{k}')
                   for k in range(self.num_layers)]
    self.level_biases = [keras.layers.Dense(self.hidden_units, name=f'level_bias_{k}')
                         for k in range(self.num_layers)]

  def call(self, x, sigma):
    sigma = ops.reshape(ops.cast(sigma, 'float32'), (-1,))
    embedding = self._embedding(sigma)
    h = ops.cast(x, 'float32') / ops.sqrt(1.0 + sigma[:, None]**2)
    for dense, level_bias in zip(self.hidden, self.level_biases):
      h = ops.silu(dense(h) + level_bias(embedding))
    return ops.cast(self.head(h), 'float32')

  def build_for(self):
    """Creates the variables by one call on zeros at σ = 1; returns self."""
    self(np.zeros((1, self.data_dim), np.float32), np.ones((1,), np.float32))
    return self

  def get_config(self):
    return {**super().get_config(), 'num_classes': self.num_classes, 'data_dim': self.data_dim,
            'hidden_units': self.hidden_units, 'num_layers': self.num_layers,
            'fourier_seed': self.fourier_seed}


# --- from the Config ---------------------------------------------------------

def build_from_config(config, data_shape: tuple, num_classes: int) -> keras.Model:
  """A built noise-conditional classifier of --task=classifier: logits(x, σ) [N, num_classes].

  Images get the convolutional one, of width --ngf; flat data the MLP, of
  --ngf units and --num_layers layers.
  """
  m = config.model
  if len(data_shape) == 1:
    return NoiseConditionalMLPClassifier(
        num_classes, data_dim=data_shape[0], hidden_units=m.ngf, num_layers=m.num_layers,
        name='classifier_mlp').build_for()
  height, _, channels = data_shape
  return NoiseConditionalClassifier(
      num_classes, image_size=height, channels=channels, ngf=m.ngf,
      logit_transform=config.data.logit_transform, name='classifier').build_for()
