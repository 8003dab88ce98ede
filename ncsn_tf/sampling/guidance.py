"""Class-conditional sampling: guided score models that every sampler accepts.

Bayes' rule for scores (Song et al. 2021, section 5 and appendix I): at every
noise level σ,

    ∇_x log p_σ(x | y) = ∇_x log p_σ(x) + ∇_x log p_σ(y | x),

since p_σ(y) does not depend on x. Two ways to get the right-hand side:

* classifier guidance (`ClassifierGuidedScore`; Dhariwal & Nichol 2021): the
  unconditional score plus w times the gradient of a noise-conditional
  classifier's log p(y | x, σ) (models/classifier.py), taken by
  tf.GradientTape inside the sampler's graph. w = 1 is Bayes' rule exactly;
  w > 1 sharpens towards p(x) p(y | x)^w.
* classifier-free guidance (`FreeGuidedScore`; Ho & Salimans 2022): one
  class-conditional network s(x, σ, y) trained with label dropout, so it also
  knows s(x, σ) = s(x, σ, ∅), and

      s̃ = (1 + w) s(x, σ, y) − w s(x, σ, ∅),

  their ε̃ = (1 + w) ε(z, c) − w ε(z) written for scores (s = −ε/σ is linear
  in ε, so the combination is the same). w = 0 is the conditional score;
  w > 0 the score of p(x | y)^{1+w} / p(x)^w.

Both look exactly like a ScoreModel to ConfiguredSampler and the registry:
`sigmas`, `num_scales`, `is_continuous`, and `score_index`, `score_sigma`,
`score_t`, bound once in __init__ (the trace-reuse reason of
models/score_model.py). Annealed Langevin asks `score_index` (a ladder
network at its levels, the classifier at those levels' σ); the PC, ODE and
Heun samplers ask `score_t`, which is

    ∇_x log p_t(x | y) = s̃(x/α(t), σ(t)) / α(t),   σ(t) = std(t)/α(t),

ScoreModel.score_t's identity applied to the guided σ-score: the classifier
sees the VE-equivalent input x/α and σ(t), as it was trained
(losses.classifier_per_example), for VE, VP and sub-VP alike.

Labels are int32 [N], one per example of the sampler's batch, and the scale
w a float or float32 scalar tensor; either may be a tf.Variable, read at
every call, so that one traced sampler serves new labels assigned between
batches (`draw_guided_samples`), or a signature's input tensors (export).
"""

import json
import os

import numpy as np
import tensorflow as tf

from ncsn_tf import config as config_lib
from ncsn_tf.models.score_model import ScoreModel
from ncsn_tf.noise import expand_to
from ncsn_tf.runtime import checkpoints
from ncsn_tf.sampling import draw

_METHODS = ('score_index', 'score_sigma', 'score_t')


class _GuidedScore:
  """What both guided models share: the ScoreModel surface over a base model."""

  def __init__(self, base: ScoreModel, labels, scale):
    if not isinstance(base, ScoreModel):
      raise ValueError(f'guidance needs a ScoreModel to guide, got {type(base).__name__}')
    if isinstance(scale, (int, float)) and not scale >= 0:
      raise ValueError(f'the guidance scale must be >= 0, got {scale}')
    self.base = base
    self.sigmas = base.sigmas
    self.labels = labels
    self.scale = scale
    for name in _METHODS:  # One bound-method object each (module docstring).
      setattr(self, name, getattr(self, name))

  @property
  def is_continuous(self) -> bool:
    return self.base.is_continuous

  @property
  def num_scales(self) -> int:
    return self.base.num_scales

  def _labels(self):
    return tf.cast(tf.convert_to_tensor(self.labels), tf.int32)

  def _scale(self):
    return tf.cast(tf.convert_to_tensor(self.scale), tf.float32)

  def _level_sigma(self, sigma_index):
    return tf.gather(tf.constant(self.sigmas), tf.cast(sigma_index, tf.int32))

  def score_t(self, x, t, sde):
    """∇_x log p_t(x | y): the guided σ-score at (x/α(t), σ(t)), divided by α(t).

    x float32 [N, ...] a state of `sde`, t float32 [N] in (0, T].
    """
    x = tf.cast(x, tf.float32)
    t = tf.cast(t, tf.float32)
    alpha = expand_to(sde.mean_coeff(t), x)
    return self.score_sigma(x / alpha, sde.sigma_of_t(t)) / alpha


class ClassifierGuidedScore(_GuidedScore):
  """s(x, σ) + w ∇_x log p(y | x, σ): classifier guidance (w = 1: Bayes' rule).

  Args:
    base: the unconditional ScoreModel (ladder or continuous network).
    classifier: (x float32 [N, ...], sigma float32 [N] > 0) -> logits [N, C]
      of p(y | x, σ), with x in the VE-equivalent coordinates (data plus
      N(0, σ²) noise); e.g. a models/classifier.py network.
    labels: int32 [N] in [0, C) (tensor or tf.Variable).
    scale: w >= 0 (float, tensor or tf.Variable).
  """

  def __init__(self, base: ScoreModel, classifier, labels, scale=1.0):
    self.classifier = classifier
    super().__init__(base, labels, scale)

  def log_prob_grad(self, x, sigma):
    """∇_x log p(y | x, σ) float32 [N, ...] at x float32 [N, ...], σ float32 [N].

    One backward pass: log p of example n depends only on x_n (no batch
    statistics in the classifiers), so the gradient of the batch's sum is
    every example's own gradient.
    """
    x = tf.cast(x, tf.float32)
    labels = self._labels()
    with tf.GradientTape() as tape:
      tape.watch(x)
      logits = tf.cast(self.classifier(x, tf.cast(sigma, tf.float32)), tf.float32)
      log_prob = -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
      total = tf.reduce_sum(log_prob)
    return tape.gradient(total, x)

  def score_index(self, x, sigma_index):
    """At ladder level i: the base's score there plus w ∇ log p(y | x, σ_i)."""
    sigma = self._level_sigma(sigma_index)
    return self.base.score_index(x, sigma_index) + self._scale() * self.log_prob_grad(x, sigma)

  def score_sigma(self, x, sigma):
    """At σ: the base's score plus w ∇ log p(y | x, σ)."""
    return self.base.score_sigma(x, sigma) + self._scale() * self.log_prob_grad(x, sigma)


class FreeGuidedScore(_GuidedScore):
  """(1 + w) s(x, σ, y) − w s(x, σ, ∅): classifier-free guidance (w = 0: the conditional score).

  Args:
    base: a ScoreModel of a class-conditional network (num_classes > 0).
    labels: int32 [N] in [0, C) (tensor or tf.Variable).
    scale: w >= 0 (float, tensor or tf.Variable).

  The conditional and unconditional scores are two network calls on the same
  x (not one call on the batch doubled), so w = 0 returns the conditional
  score bit for bit.
  """

  def __init__(self, base: ScoreModel, labels, scale=1.0):
    if not base.num_classes:
      raise ValueError('classifier-free guidance needs a class-conditional network '
                       '(--class_conditional)')
    super().__init__(base, labels, scale)
    self.conditional = base.with_labels(labels)
    self.unconditional = base.with_labels(None)

  def score_index(self, x, sigma_index):
    w = self._scale()
    return ((1.0 + w) * self.conditional.score_index(x, sigma_index)
            - w * self.unconditional.score_index(x, sigma_index))

  def score_sigma(self, x, sigma):
    w = self._scale()
    return ((1.0 + w) * self.conditional.score_sigma(x, sigma)
            - w * self.unconditional.score_sigma(x, sigma))


def guided_score_model(kind: str, base: ScoreModel, labels, scale, classifier=None):
  """The guided model of `kind` ('classifier' or 'free') over `base`."""
  if kind == 'classifier':
    if classifier is None:
      raise ValueError('classifier guidance needs a classifier (--classifier_workdir)')
    return ClassifierGuidedScore(base, classifier, labels, scale)
  if kind == 'free':
    return FreeGuidedScore(base, labels, scale)
  raise ValueError(f'unknown guidance {kind!r}; choose from classifier, free')


# --- the classifier of --classifier_workdir -----------------------------------

def classifier_config(config: config_lib.Config) -> config_lib.Config:
  """The classifier run's own Config (its config.json), at --classifier_workdir."""
  workdir = config.sampling.classifier_workdir
  with open(os.path.join(workdir, 'config.json')) as f:
    saved = config_lib.Config.from_dict(json.load(f))
  return saved.replace(workdir=workdir)


class Classifier:
  """A restored classifier network as guidance asks it: (x, σ) -> float32 logits [N, C].

  network: the EMA copy of the --task=classifier run (the network itself
  without EMA); num_classes: C.
  """

  def __init__(self, network, num_classes: int):
    self.network = network
    self.num_classes = int(num_classes)

  def __call__(self, x, sigma):
    return tf.cast(self.network(x, sigma), tf.float32)


def load_classifier(config: config_lib.Config) -> Classifier:
  """The classifier of --classifier_workdir, restored from its latest checkpoint."""
  state = checkpoints.restore_for_inference(classifier_config(config))
  return Classifier(state.ema_model, state.ema_model.num_classes)


# --- drawing labelled samples ---------------------------------------------------

def class_labels(class_label: int, num_classes: int, num: int) -> np.ndarray:
  """The labels to sample, int32: `num` of `class_label`, or for -1 a grid of
  ceil(num / C) samples per class, class by class (one row per class)."""
  if class_label >= 0:
    return np.full([num], class_label, np.int32)
  per_class = -(-num // num_classes)
  return np.repeat(np.arange(num_classes, dtype=np.int32), per_class)


def draw_guided_samples(config: config_lib.Config, score_model: ScoreModel, labels, *,
                        seed: int, classifier=None, show_progress: bool = True):
  """Guided samples of `labels` (int32 [M]) with --sampler, in batches of --sample_batch_size.

  The same seeds as modes.draw_samples (batch k starts from [seed, k], its
  chain runs on [seed, 1000 + k]); the labels of each batch are assigned to
  one tf.Variable that the guided model reads, so every batch reuses one
  traced sampler. Returns (samples [M, *shape], trajectory [K, M, *shape]).
  """
  labels = np.asarray(labels, np.int32).reshape(-1)
  label_var = tf.Variable(labels[:0], shape=tf.TensorShape([None]), trainable=False,
                          name='guidance_labels')
  guided = guided_score_model(config.sampling.guidance, score_model, label_var,
                              float(config.sampling.guidance_scale), classifier=classifier)
  # modes.draw_samples' batches, seeds and trajectories; each batch first gets its labels.
  return draw.draw_samples(config, guided, score_model.sigmas, num=len(labels), seed=seed,
                            show_progress=show_progress,
                            before_batch=lambda start, size: label_var.assign(
                                labels[start:start + size]))
