"""One score model for every caller: a network, its σ ladder, and how it answers.

Two kinds of network sit behind the same three questions:

* a ladder network, `net(x, sigma_index)` with int32 [N] (index 0 = largest σ):
  the paper's CIN++ RefineNet, the per-level toy MLP, the U-Net as trained on a
  ladder. It knows the score only at its L levels.
* a continuous network, `net(x, sigma)` with float32 [N] > 0: the VE-equivalent
  noise standard deviation in data units. It returns the score of
  p_σ = p_data * N(0, σ² I) at x (ContinuousScoreMLP, ScoreUNet(continuous=True)).

`ScoreModel` answers, for either kind:

* `score_index(x, sigma_index)`: the score at ladder level i (a continuous
  network is asked at σ = sigmas[i]);
* `score_sigma(x, sigma)`: the score at σ (a ladder network goes through an
  adapter that maps σ to its level: exact on the ladder, within a relative
  `noise.LADDER_RTOL` in σ, and an error naming the σ anywhere else; k-diffusion's
  DiscreteSchedule without its interpolation);
* `score_t(x, t, sde)`: the score of the SDE's marginal p_t. Every SDE in
  ncsn_tf/noise/sde.py perturbs as x_t = α(t) x0 + std(t) z, i.e.
  x_t/α = x0 + (std/α) z: x_t/α is the data plus N(0, σ(t)²) noise with
  σ(t) = sde.sigma_of_t(t). So p_t(x) = α^{-D} p_σ(x/α) and
      ∇_x log p_t(x_t) = score_σ(x_t/α, σ(t)) / α,
  one σ-network for VE (α = 1), VP and sub-VP alike.

Labels (classifier-free guidance): a class-conditional network takes an
optional third argument, labels int32 [N] in [0, C] with C the "no label" ∅
(models/mlp.py `label_or_null`). `with_labels(labels)` returns a ScoreModel
of the same network and ladder whose every call passes those labels; the
model without labels asks the network without them (∅: the unconditional
score that label dropout trains). Samplers see the same three methods, so
the sampler contract does not change (ncsn_tf/sampling/guidance.py).

The EMA-or-not choice is the caller's, made once: pass the EMA copy of the
network to sample or evaluate with averaged weights, the training network to
train. ScoreModel holds no weights of its own and never picks.

It is a plain Python object, not a Keras layer, so it adds no variables and
no tracking, and its methods run inside tf.function. A tf.function that takes
a score function as an argument keys its trace cache on that callable (by
weak reference), and Python makes a new bound-method object at every attribute
access, which would retrace on every call. So the three methods are bound once
in __init__ and stored on the instance: `model.score_sigma is model.score_sigma`.
"""

import numpy as np
import tensorflow as tf

from ncsn_tf import noise
from ncsn_tf.noise import expand_to

_METHODS = ('score_index', 'score_sigma', 'score_t')


class ScoreModel:
  """A score network with its ladder; answers at a level, at a σ, or at an SDE time.

  Args:
    network: a callable (usually a keras.Model). Continuous:
      network(x float32 [N, ...], sigma float32 [N] > 0) -> score [N, ...].
      Ladder: network(x, sigma_index int32 [N] in [0, L)) -> score [N, ...].
      Pass the EMA network for averaged weights (the caller's choice).
    sigmas: the ladder σ_0 > ... > σ_{L−1}, float [L] > 0 (index 0 largest):
      the levels a ladder network was trained on, and the σ values
      `score_index` asks a continuous network at.
    continuous: whether `network` takes σ (True) or a level index (False).
    labels: None, or int32 [N] (a tensor, or a tf.Variable read at every
      call) passed to a class-conditional network as `labels=`; see
      `with_labels`.

  Every method returns float32 scores of x's shape (a mixed-precision network's
  output is cast back to float32).
  """

  def __init__(self, network, sigmas, continuous: bool, labels=None):
    sigmas = np.asarray(sigmas, np.float32).reshape(-1)
    if sigmas.size == 0 or not np.all(sigmas > 0) or not np.all(np.diff(sigmas) < 0):
      raise ValueError(f'sigmas must be a non-empty, strictly decreasing list of positive floats '
                       f'(index 0 largest), got {sigmas.tolist()}')
    self.network = network
    self.sigmas = sigmas
    self._continuous = bool(continuous)
    if labels is not None and not self.num_classes:
      raise ValueError('labels need a class-conditional network (--class_conditional)')
    self.labels = labels
    # One bound-method object per method for the life of the model (module docstring).
    for name in _METHODS:
      setattr(self, name, getattr(self, name))

  @property
  def is_continuous(self) -> bool:
    """Whether the network takes σ (True) or a ladder index (False)."""
    return self._continuous

  @property
  def num_classes(self) -> int:
    """C of a class-conditional network (its label ∅ is C); 0 when it takes no labels."""
    return int(getattr(self.network, 'label_classes', 0) or 0)

  def with_labels(self, labels) -> 'ScoreModel':
    """The same network and ladder answering s(x, σ, y) for labels int32 [N] in [0, C].

    C is the "no label" ∅ (the unconditional score). `labels` may be a
    tensor or a tf.Variable (read at every call, so one traced sampler serves
    new labels assigned between calls). Its N must match the x of each call.
    """
    return ScoreModel(self.network, self.sigmas, self._continuous, labels=labels)

  def _call(self, x, level):
    """The network at x and a level index or σ, with this model's labels if any."""
    if self.labels is None:
      return tf.cast(self.network(x, level), tf.float32)
    labels = tf.cast(tf.convert_to_tensor(self.labels), tf.int32)
    return tf.cast(self.network(x, level, labels=labels), tf.float32)

  @property
  def num_scales(self) -> int:
    """L, the number of ladder levels."""
    return int(self.sigmas.size)

  def sigma_to_index(self, sigma):
    """The ladder level int32 [N] of each σ float32 [N]; an error for a σ off the ladder
    (noise.level_index: within a relative LADDER_RTOL of a level)."""
    return noise.level_index(sigma, self.sigmas)

  def score_index(self, x, sigma_index):
    """The score at ladder level i: x float32 [N, ...], sigma_index int32 [N] in [0, L)."""
    if self._continuous:
      sigma = tf.gather(tf.constant(self.sigmas), tf.cast(sigma_index, tf.int32))
      return self._call(x, sigma)
    return self._call(x, tf.cast(sigma_index, tf.int32))

  def score_sigma(self, x, sigma):
    """∇_x log p_σ(x): x float32 [N, ...], sigma float32 [N] > 0 (data units).

    A ladder network answers only at its levels (`sigma_to_index`).
    """
    sigma = tf.cast(sigma, tf.float32)
    if self._continuous:
      return self._call(x, sigma)
    return self._call(x, self.sigma_to_index(sigma))

  def score_t(self, x, t, sde):
    """∇_x log p_t(x) of `sde`'s marginal: score_σ(x/α(t), σ(t)) / α(t).

    Args:
      x: float32 [N, ...], a state x_t of the SDE.
      t: float32 [N] in (0, T].
      sde: a noise.VESDE / VPSDE / SubVPSDE (sigma_of_t and mean_coeff).
    """
    x = tf.cast(x, tf.float32)
    t = tf.cast(t, tf.float32)
    alpha = expand_to(sde.mean_coeff(t), x)
    return self.score_sigma(x / alpha, sde.sigma_of_t(t)) / alpha
