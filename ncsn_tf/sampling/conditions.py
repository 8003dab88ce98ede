"""Conditions for every sampler: some linear coordinates of x are known (Song et al. 2021, app. I.2).

A `Condition(known, mask, transform)` says: in the coordinates c = T x (T the
identity for pixels, or the orthonormal colour transform of each pixel), the
coordinates where `mask` is 1 equal those of T(known). Inpainting knows some
pixels; colourisation knows the grey axis of every pixel.

How a sampler honours it (the replacement method): whenever the state is at
noise level t, its known coordinates are replaced by the known data perturbed
to that level, the forward kernel x_t = α(t) x_0 + std(t) z,

    T x ← (1 − m) ⊙ T x + m ⊙ (α(t) T known + std(t) z),

so that the network always sees a state whose known part is distributed as
p_t's, and the unknown part is moved by ∇ log p_t(x) at that state, i.e. by
the score of p_t(x_unknown | x_known). For annealed Langevin dynamics, which
runs on the ladder in the VE picture y = x/α, this is known + σ_i z.

- Annealed Langevin and predictor-corrector (stochastic): a fresh z at every
  replacement, before each Langevin move and after each predictor step. For a
  Gaussian the unknown coordinates then see the averaged drift
  −(u − m_σ(known))/V_σ (the conditional mean is linear in the known value),
  so at small steps the chain samples N(m_σ(known), V_σ), the conditional of
  p_σ, which tends to the data's conditional as σ → 0 (tests/test_conditions.py).
- The probability-flow ODE and Heun (deterministic): one z for the whole solve,
  read off the starting point, z = (T x_T − α(T) T known)/std(T) on the known
  coordinates. With a fixed z the known coordinates follow
  x_k(t) = α(t) known + std(t) z, which is exactly the probability-flow path of
  the known value itself (the ODE of a point mass at `known` has these
  trajectories), so the solve stays deterministic in x_T and its drift smooth
  in t; fresh noise would make it neither, and the adaptive solver cannot be
  stopped after each step to replace anything. So the condition enters the
  score instead (`flow_score`): the known coordinates get the point mass's
  score −(T x − α T known)/std², which moves them along that path, and the
  unknown ones the network's score at the state. Heun's steps are exact on
  the path (it is linear in σ); the solver's error is removed at the end by
  setting the known coordinates to the path's end point. For data whose
  unknown coordinates are independent of the known ones this samples the
  exact conditional; for correlated data it is an approximation (the unknown
  coordinates are not driven by the conditional probability flow), measured in
  tests/test_conditions.py.

When a sampler ends noise-free (annealed Langevin or PC with denoise, the ODE
with denoise, Heun at σ = 0) the known coordinates come out as α(t_end) known
(α = 1 for VE and at σ = 0: the known values exactly); otherwise as the known
values plus the last level's noise std(t_end) z.
"""

import typing

import numpy as np
import tensorflow as tf

from ncsn_tf.noise import expand_to

#: The colour transform, one row per output coordinate: the grey axis (1, 1, 1)/√3, then
#: an orthonormal basis of the chroma plane (Gram-Schmidt of the red and then the green
#: axis against grey): (2, −1, −1)/√6 and (0, 1, −1)/√2.
COLOUR_MATRIX = np.array([[1.0, 1.0, 1.0] / np.sqrt(3.0),
                          [2.0, -1.0, -1.0] / np.sqrt(6.0),
                          [0.0, 1.0, -1.0] / np.sqrt(2.0)], np.float32)


class ColourTransform:
  """c = M x per pixel over the last (channel) axis; M is orthonormal, so x = Mᵀ c.

  c[..., 0] = (r + g + b)/√3 is the grey axis: a grey image of value g per
  pixel, (g, g, g), has c = (√3 g, 0, 0).
  """

  channels = 3

  def forward(self, x):
    """RGB float32 [..., 3] -> colour coordinates [..., 3]."""
    return tf.einsum('...i,ji->...j', tf.convert_to_tensor(x, tf.float32), COLOUR_MATRIX)

  def inverse(self, c):
    """Colour coordinates [..., 3] -> RGB [..., 3]."""
    return tf.einsum('...j,ji->...i', tf.convert_to_tensor(c, tf.float32), COLOUR_MATRIX)

  def __repr__(self):
    return 'COLOUR'

  # One transform: equal and hashed alike, so tf.function traces once for it.
  def __eq__(self, other):
    return isinstance(other, ColourTransform)

  def __hash__(self):
    return hash(ColourTransform)


COLOUR = ColourTransform()


def to_colour_space(images):
  """RGB images float32 [..., 3] -> colour coordinates (grey axis first) [..., 3]."""
  return COLOUR.forward(images)


def from_colour_space(coords):
  """Colour coordinates [..., 3] -> RGB images [..., 3]."""
  return COLOUR.inverse(coords)


def _per_example(v, x):
  """A scalar stays a scalar; per-example v [N] broadcasts against x [N, ...]."""
  v = tf.cast(v, tf.float32)
  return v if v.shape.rank == 0 else expand_to(v, x)


class Condition(typing.NamedTuple):
  """Known linear coordinates of the samples.

  A NamedTuple so that it passes through tf.function as a structure of
  tensors (same shapes, same trace) with the transform a static leaf.

  Attributes:
    known: float32 [N, ...], data-space values (x_0) whose known coordinates
      are used; the rest is ignored.
    mask: float32 [N, ...] of 0 and 1, in the transformed space: 1 = known.
    transform: None (pixels: T is the identity) or COLOUR (per pixel, last
      axis of size 3).
  """
  known: typing.Any
  mask: typing.Any
  transform: ColourTransform | None = None

  def to_space(self, x):
    return x if self.transform is None else self.transform.forward(x)

  def from_space(self, c):
    return c if self.transform is None else self.transform.inverse(c)

  def impose(self, x, alpha, std, z):
    """x [N, ...] with its known coordinates set to α T(known) + std z.

    alpha, std: scalars or float32 [N] (the level's α(t) and std(t));
    z: float32 of x's shape (only its known coordinates are used). In the
    pixel space the replacement is exact: the unknown pixels are untouched and
    the known ones are α known + std z to the bit.
    """
    target = _per_example(alpha, x) * self.to_space(self.known) + _per_example(std, x) * z
    # A select, not (1 − m) x + m target: a non-finite value where x is replaced is gone.
    return self.from_space(tf.where(self.mask > 0.5, target, self.to_space(x)))

  def path_noise(self, x, alpha, std):
    """z with x's known coordinates on the path α T(known) + std z: (T x − α T known)/std.

    Only its known coordinates mean anything (elsewhere it is whatever x is).
    """
    return (self.to_space(x) - _per_example(alpha, x) * self.to_space(self.known)) / _per_example(std, x)

  def flow_score(self, score, x, alpha, std):
    """The score the deterministic samplers use: the network's `score` [N, ...] on the
    unknown coordinates, the point mass's −(T x − α T known)/std² on the known ones."""
    point_mass = -self.path_noise(x, alpha, std) / _per_example(std, x)
    return self.from_space(tf.where(self.mask > 0.5, point_mass, self.to_space(score)))


def conditioned_flow_score(score_fn, sde, condition: Condition):
  """score_fn(x, t) -> the condition's `flow_score` at the SDE's α(t), std(t)."""
  def conditioned(x, t):
    return condition.flow_score(score_fn(x, t), x, sde.mean_coeff(t), sde.std(t))
  return conditioned


def _concrete(v):
  return isinstance(v, np.ndarray) or (isinstance(v, tf.Tensor) and hasattr(v, 'numpy')
                                       and tf.executing_eagerly())


def prepare(condition, x) -> Condition | None:
  """`condition` with float32 tensors, checked against the samples x [N, ...]; None stays None.

  Raises a one-line ValueError (before any sampling) when it is not a
  Condition, when `known` or `mask` does not have x's shape, when a colour
  condition's last axis is not 3, or (for concrete values) when the mask is
  not 0/1.
  """
  if condition is None:
    return None
  if not isinstance(condition, Condition):
    raise ValueError(f'condition must be a sampling.conditions.Condition, got {type(condition).__name__}')
  if condition.transform is not None and not isinstance(condition.transform, ColourTransform):
    raise ValueError(f'condition transform must be None or conditions.COLOUR, got {condition.transform!r}')
  shape = tf.TensorShape(x.shape)
  prepared = {}
  for name in ('known', 'mask'):
    value = getattr(condition, name)
    if _concrete(value) and name == 'mask':
      values = np.unique(np.asarray(value))
      if not np.all(np.isin(values, [0.0, 1.0])):
        raise ValueError(f'the condition mask must be 0 (unknown) or 1 (known), got values {values[:5]}')
    value = tf.convert_to_tensor(value, tf.float32)
    if not value.shape.is_compatible_with(shape):
      raise ValueError(f'the condition\'s {name} has shape {value.shape.as_list()}, the samples '
                       f'{shape.as_list()}')
    prepared[name] = value
  if condition.transform is not None and shape[-1] != ColourTransform.channels:
    raise ValueError(f'the colour transform needs samples with 3 channels, got shape {shape.as_list()}')
  return Condition(prepared['known'], prepared['mask'], condition.transform)


def inpainting(images, mask) -> Condition:
  """The pixels of `images` [N, ...] where `mask` (same shape, 1 = known) is 1 are known."""
  images = tf.convert_to_tensor(images, tf.float32)
  mask = tf.convert_to_tensor(mask, tf.float32)
  if not mask.shape.is_compatible_with(images.shape):
    raise ValueError(f'the inpainting mask has shape {mask.shape.as_list()}, the images '
                     f'{images.shape.as_list()}')
  return Condition(images, mask)


def grey_of(images):
  """The grey value per pixel, float32 [N, H, W, 1]: the image itself if it has one
  channel, else the mean of its three (its projection on the grey axis, c_0/√3)."""
  images = tf.convert_to_tensor(images, tf.float32)
  channels = images.shape[-1]
  if channels is not None and channels not in (1, ColourTransform.channels):
    raise ValueError(f'colourisation takes grey [N, H, W, 1] or RGB [N, H, W, 3] images, got '
                     f'{images.shape.as_list()}')
  return tf.reduce_mean(images, axis=-1, keepdims=True)


def colorization(images) -> Condition:
  """The grey axis of every pixel is known: from a grey image [N, H, W, 1] (value g:
  grey coordinate √3 g) or from an RGB image [N, H, W, 3] (its projection on the grey
  axis). The two chroma coordinates are generated."""
  grey = grey_of(images)
  known = tf.tile(grey, [1, 1, 1, ColourTransform.channels])           # (g, g, g) per pixel
  mask = tf.concat([tf.ones_like(grey), tf.zeros_like(grey), tf.zeros_like(grey)], axis=-1)
  return Condition(known, mask, COLOUR)


#: Folded into a sampler's seed for the replacement noise: a stream apart from its own noise.
NOISE_STREAM = 0x636f6e64


def replacement_noise(seed, step, x):
  """Fresh z ~ N(0, I) of x's shape for replacement number `step` (int32 scalar) under `seed`."""
  fold_in = tf.random.experimental.stateless_fold_in
  return tf.random.stateless_normal(tf.shape(x), fold_in(fold_in(seed, NOISE_STREAM), step))
