"""A noise-conditional MLP score network s_θ(x, i) for low-dimensional data.

Each hidden layer is Dense -> per-σ affine (γ_i, β_i, the conditional analogue
of CIN++ for vectors) -> softplus. Two choices make one small network cover
σ from 20 down to 0.1 in the toy runs (docs/toy.md, "The toy network"):

* the input is preconditioned by 1/sqrt(1 + σ_i²), so the network sees inputs
  of similar size at every level;
* with `scale_by_sigma` the output is divided by σ_i (NCSNv2, Song & Ermon
  2020, technique 3), because ‖∇ log p_σ‖ ∝ 1/σ.
"""

import keras
from keras import ops


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
