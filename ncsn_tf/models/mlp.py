"""Noise-conditional MLP score networks for low-dimensional data.

`NoiseConditionalMLP` is s_θ(x, i) on a ladder of L levels; `ContinuousScoreMLP`
is s_θ(x, σ) for any σ > 0 (the SDE view; see ncsn_tf/models/score_model.py).

Each hidden layer is Dense -> per-σ affine (γ_i, β_i, the conditional analogue
of CIN++ for vectors) -> softplus. Two choices make one small network cover
σ from 20 down to 0.1 in the toy runs (docs/toy.md, "The toy network"):

* the input is preconditioned by 1/sqrt(1 + σ_i²), so the network sees inputs
  of similar size at every level;
* with `scale_by_sigma` the output is divided by σ_i (NCSNv2, Song & Ermon
  2020, technique 3), because ‖∇ log p_σ‖ ∝ 1/σ.

The continuous network keeps both and replaces the per-level table (γ_i, β_i)
by a function of log σ: fixed random Fourier features of log σ, mapped to each
layer's (γ, β) by a learned linear layer (FiLM, Perez et al. 2018).
"""

import keras
import numpy as np
from keras import ops

from ncsn_tf import losses
from ncsn_tf import noise
from ncsn_tf.models import registry


class ConditionalAffine(keras.layers.Layer):
  """Per-class feature-wise affine map: h * γ[i] + β[i].

  Args:
    num_classes: number of noise levels L.
  Inputs: h float [N, F], sigma_index int [N] in [0, L).
  """

  def __init__(self, num_classes: int, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = num_classes

  def build(self, input_shape):
    features = input_shape[-1]
    self.gamma = self.add_weight(name='gamma', shape=(self.num_classes, features),
                                 initializer='ones')
    self.beta = self.add_weight(name='beta', shape=(self.num_classes, features),
                                initializer='zeros')

  def call(self, h, sigma_index):
    gamma = ops.take(self.gamma, sigma_index, axis=0)
    beta = ops.take(self.beta, sigma_index, axis=0)
    return h * ops.cast(gamma, h.dtype) + ops.cast(beta, h.dtype)

  def get_config(self):
    return {**super().get_config(), 'num_classes': self.num_classes}


def label_or_null(labels, sigma, num_classes: int):
  """labels int32 [N] in [0, C], or ∅ = C for every example when `labels` is None.

  sigma [N] gives N. The class-conditional networks' label input: row C of
  their embedding is the "no label" of classifier-free guidance.
  """
  if labels is None:
    return ops.full(ops.shape(sigma)[:1], num_classes, 'int32')
  return ops.cast(ops.reshape(labels, (-1,)), 'int32')


@keras.saving.register_keras_serializable(package='ncsn_tf')
class NoiseConditionalMLP(keras.Model):
  """s_θ(x, i): [N, D] float32, [N] int32 -> [N, D] float32.

  Args:
    data_dim: D, the data dimension.
    sigmas: the noise ladder σ_1 > ... > σ_L as a list of floats (index 0 is
      the largest σ); L = len(sigmas).
    hidden_units: width of each hidden layer.
    num_layers: number of hidden layers.
    scale_by_sigma: divide the output by σ_i.
  """

  def __init__(self, data_dim: int, sigmas, hidden_units: int = 128, num_layers: int = 3,
               scale_by_sigma: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.data_dim = int(data_dim)
    self.sigma_values = [float(s) for s in sigmas]
    self.hidden_units = int(hidden_units)
    self.num_layers = int(num_layers)
    self.scale_by_sigma = bool(scale_by_sigma)
    num_classes = len(self.sigma_values)
    self.hidden = [keras.layers.Dense(hidden_units, name=f'dense_{k}') for k in range(num_layers)]
    self.affines = [ConditionalAffine(num_classes, name=f'cond_affine_{k}')
                    for k in range(num_layers)]
    self.head = keras.layers.Dense(data_dim, name='head')

  def call(self, x, sigma_index):
    sigma = ops.take(ops.convert_to_tensor(self.sigma_values, 'float32'), sigma_index)[:, None]
    h = ops.cast(x, 'float32') / ops.sqrt(1.0 + sigma**2)
    for dense, affine in zip(self.hidden, self.affines):
      h = ops.softplus(affine(dense(h), sigma_index))
    out = ops.cast(self.head(h), 'float32')
    return out / sigma if self.scale_by_sigma else out

  def build_for(self):
    """Creates the variables by one call on zeros; returns self."""
    self(ops.zeros((1, self.data_dim)), ops.zeros((1,), 'int32'))
    return self

  def get_config(self):
    return {**super().get_config(), 'data_dim': self.data_dim, 'sigmas': self.sigma_values,
            'hidden_units': self.hidden_units, 'num_layers': self.num_layers,
            'scale_by_sigma': self.scale_by_sigma}


@keras.saving.register_keras_serializable(package='ncsn_tf')
class ScoreMLP(keras.Model):
  """An unconditional score network s_θ(x): [N, D] -> [N, D], for single-σ objectives.

  Dense -> softplus hidden layers (smooth, so the Jacobian-trace and sliced
  objectives have well-defined second derivatives). `call` takes an optional
  sigma_index and ignores it, so the trainer and the losses treat it exactly
  like the noise-conditional network.

  Args:
    data_dim: D, the data dimension.
    hidden_units: width of each hidden layer.
    num_layers: number of hidden layers.
  """

  def __init__(self, data_dim: int, hidden_units: int = 128, num_layers: int = 3, **kwargs):
    super().__init__(**kwargs)
    self.data_dim = int(data_dim)
    self.hidden_units = int(hidden_units)
    self.num_layers = int(num_layers)
    self.hidden = [keras.layers.Dense(hidden_units, name=f'dense_{k}') for k in range(num_layers)]
    self.head = keras.layers.Dense(data_dim, name='head')

  def call(self, x, sigma_index=None):
    del sigma_index
    h = ops.cast(x, 'float32')
    for dense in self.hidden:
      h = ops.softplus(dense(h))
    return ops.cast(self.head(h), 'float32')

  def build_for(self):
    """Creates the variables by one call on zeros; returns self."""
    self(ops.zeros((1, self.data_dim)), ops.zeros((1,), 'int32'))
    return self

  def get_config(self):
    return {**super().get_config(), 'data_dim': self.data_dim,
            'hidden_units': self.hidden_units, 'num_layers': self.num_layers}


@keras.saving.register_keras_serializable(package='ncsn_tf')
class FourierFiLM(keras.layers.Layer):
  """Feature-wise affine from noise features: h * (1 + A φ) + (B φ + b).

  The continuous analogue of `ConditionalAffine`: (γ, β) are a learned linear
  function of the noise features φ(σ) [N, E] instead of a lookup per level.
  A and B start at zero (γ = 1, β = 0 at every σ, as ConditionalAffine's ones
  and zeros), so the untrained network is the same at every σ up to the
  input and output scalings; the gradient into A, B is φ ⊗ ∂L/∂(γ, β) ≠ 0.

  Inputs: h float [N, F], features float [N, E]. Output [N, F].
  """

  def build(self, h_shape, features_shape):
    units = h_shape[-1]
    self.film = keras.layers.Dense(2 * units, kernel_initializer='zeros', name='film')
    self.film.build(features_shape)

  def call(self, h, features):
    scale, shift = ops.split(ops.cast(self.film(features), h.dtype), 2, axis=-1)
    return h * (1.0 + scale) + shift


@keras.saving.register_keras_serializable(package='ncsn_tf')
class ContinuousScoreMLP(keras.Model):
  """s_θ(x, σ): [N, D] float32, σ [N] float32 > 0 -> [N, D] float32, the score of p_σ.

  Each hidden layer is Dense -> FiLM from φ(log σ) -> softplus; the input is
  x/sqrt(1 + σ²) and the output is divided by σ, as NoiseConditionalMLP does
  per level (module docstring). tf_configs/toy_gmm_sde.cfg trains this recipe on the
  paper's mixture (3x128, 16 features, continuous DSM, batch 256, Adam 1e-3); its
  results are in docs/sde.md.

  The noise features are Gaussian Fourier features of log σ (Tancik et al.
  2020; NCSN++'s GaussianFourierProjection, Song et al. 2021):

      φ(σ) = [sin(2π w log σ), cos(2π w log σ)],  w ~ N(0, fourier_scale²) [F],

  2F features. The frequencies w are not weights: they are drawn in the
  constructor from numpy's generator seeded with `fourier_seed`, so a model
  rebuilt from its config (or a restored checkpoint's twin) has the same w,
  and they stay out of the checkpoint and the trainable set. With the default
  scale 1 the typical period in log σ is ~1 (σ changes by e), and σ from
  0.01 to 20 spans 7.6 in log σ: smooth over neighbouring σ, distinct over
  the range.

  Args:
    data_dim: D, the data dimension.
    hidden_units: width of each hidden layer.
    num_layers: number of hidden layers.
    fourier_features: F, the number of frequencies (2F features).
    fourier_scale: std of the frequencies w, in cycles per unit of log σ.
    fourier_seed: seed of the frequencies' generator.
    label_classes: C > 0 makes the network class-conditional, s_θ(x, σ, y)
      (classifier-free guidance, Ho & Salimans 2022): a learned label
      embedding with C + 1 rows, row C the "no label" ∅, is added to φ(σ).
      0 (the default) builds no embedding: the network and its checkpoint
      are those of an unconditional model.

  Call: x [N, D], sigma [N], and with label_classes > 0 optionally labels
  int32 [N] in [0, C] (C = ∅; None = ∅ for every example: the unconditional
  score, which label dropout trains).
  """

  def __init__(self, data_dim: int, hidden_units: int = 128, num_layers: int = 3,
               fourier_features: int = 16, fourier_scale: float = 1.0, fourier_seed: int = 0,
               label_classes: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.data_dim = int(data_dim)
    self.hidden_units = int(hidden_units)
    self.num_layers = int(num_layers)
    self.fourier_features = int(fourier_features)
    self.fourier_scale = float(fourier_scale)
    self.fourier_seed = int(fourier_seed)
    if self.fourier_features < 1 or not self.fourier_scale > 0:
      raise ValueError(f'fourier_features must be >= 1 and fourier_scale > 0, got '
                       f'{fourier_features} and {fourier_scale}')
    # 2π folded in: angular frequencies, radians per unit of log σ.
    self._frequencies = (2.0 * np.pi * self.fourier_scale * np.random.default_rng(
        self.fourier_seed).standard_normal(self.fourier_features)).astype(np.float32)
    self.hidden = [keras.layers.Dense(hidden_units, name=f'dense_{k}') for k in range(num_layers)]
    self.films = [FourierFiLM(name=f'film_{k}') for k in range(num_layers)]
    self.head = keras.layers.Dense(data_dim, name='head')
    self.label_classes = int(label_classes)
    if self.label_classes:
      self.label_embedding = keras.layers.Embedding(self.label_classes + 1,
                                                    2 * self.fourier_features,
                                                    name='label_embedding')

  def noise_features(self, sigma):
    """φ(σ) float32 [N, 2F] for σ float32 [N] > 0."""
    phase = ops.log(ops.cast(sigma, 'float32'))[:, None] * ops.convert_to_tensor(
        self._frequencies)[None, :]
    return ops.concatenate([ops.sin(phase), ops.cos(phase)], axis=-1)

  def call(self, x, sigma, labels=None):
    sigma = ops.reshape(ops.cast(sigma, 'float32'), (-1,))
    features = self.noise_features(sigma)
    if self.label_classes:
      features = features + ops.cast(
          self.label_embedding(label_or_null(labels, sigma, self.label_classes)), 'float32')
    elif labels is not None:
      raise ValueError('labels given to a network built without label_classes (not class-conditional)')
    h = ops.cast(x, 'float32') / ops.sqrt(1.0 + sigma[:, None]**2)
    for dense, film in zip(self.hidden, self.films):
      h = ops.softplus(film(dense(h), features))
    return ops.cast(self.head(h), 'float32') / sigma[:, None]

  def build_for(self):
    """Creates the variables by one call at σ = 1; returns self."""
    self(ops.zeros((1, self.data_dim)), ops.ones((1,), 'float32'))
    return self

  def get_config(self):
    return {**super().get_config(), 'data_dim': self.data_dim,
            'hidden_units': self.hidden_units, 'num_layers': self.num_layers,
            'fourier_features': self.fourier_features, 'fourier_scale': self.fourier_scale,
            'fourier_seed': self.fourier_seed, 'label_classes': self.label_classes}


# --- from the Config ---------------------------------------------------------

def build_from_config(config, data_shape: tuple) -> keras.Model:
  """--model=mlp: the continuous-σ MLP (--noise_embedding=fourier), an unconditional
  s(x) for the single-σ objectives, or the noise-conditional MLP on the ladder."""
  m = config.model
  if m.noise_embedding == 'fourier':  # s(x, σ) for any σ > 0.
    # --class_conditional: s(x, σ, y) with a label embedding (classifier-free guidance).
    label_classes = registry.label_count(config) if m.class_conditional else 0
    return ContinuousScoreMLP(data_dim=data_shape[0], hidden_units=m.ngf,
                              num_layers=m.num_layers, label_classes=label_classes,
                              name='score_mlp_continuous').build_for()
  if config.train.loss in losses.SINGLE_SIGMA_LOSSES:  # One σ: an unconditional s(x).
    return ScoreMLP(data_dim=data_shape[0], hidden_units=m.ngf, num_layers=m.num_layers,
                    name='score_mlp_unconditional').build_for()
  sigmas = noise.geometric_sigmas(m.sigma_begin, m.sigma_end, m.num_scales)
  return NoiseConditionalMLP(data_dim=data_shape[0], sigmas=sigmas.tolist(), hidden_units=m.ngf,
                             num_layers=m.num_layers, scale_by_sigma=m.scale_by_sigma,
                             name='score_mlp').build_for()


registry.register(registry.NetworkSpec(
    name='mlp', build=build_from_config, data='flat', continuous=True,
    doc='the toy MLP: noise-conditional on the ladder, or on σ through Fourier features'))
