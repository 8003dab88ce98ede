"""Judging generated digits with a clean classifier that never guided them.

Guided samples are steered by a noise-conditional classifier p(y | x, sigma)
(`--task=classifier`), so asking that same network whether a sample is a 7
grades the homework with the answer key: guidance climbs its gradient, and
adversarial pixel patterns that fool it would score perfectly. The judge here
is a different model, fitted a different way, on clean images only:

* `CleanClassifier`: a scikit-learn `MLPClassifier` (two ReLU hidden layers,
  HIDDEN_UNITS = (128, 64), Adam, L2 penalty L2_PENALTY, fixed seed) on the
  flattened pixels of the real training digits, float in [0, 1]. It shares no
  code, weights, data perturbation or framework with the score models and the
  guidance classifier (those are Keras networks on noisy inputs). Its
  `features` are the last hidden layer's activations, relu(relu(x W1 + b1) W2
  + b2), computed from the fitted `coefs_` / `intercepts_`: the feature space
  of the Frechet distance, as Inception's pool layer is FID's.
* Metrics on its outputs (each a function below, formula in its docstring):
  `class_accuracy`, `inception_score`, `frechet_distance`, and, on raw pixels,
  `nearest_neighbour_distances` (the memorisation check).
* `judge` gives all of them for one image set; `judge_report` also for the
  real test digits, side by side; `write_judgement` does the whole job for a
  run (loads the digits, fits or reuses the classifier, writes JSON, logs).

Fitting and prediction run with BLAS limited to one thread: on this project's
2-core machines the tiny matrix products are several times faster single-
threaded under contention, and the summation order, hence the fit, is then the
same on every run (L-BFGS took a different number of iterations with 2 threads).
No TensorFlow is imported here.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any

import numpy as np

from ncsn_tf.data import digits
from ncsn_tf.metrics.image import fid_from_activations
from ncsn_tf.metrics.image import inception_score_from_logits
from ncsn_tf.runtime import artifacts

NUM_CLASSES = 10
# The classifier (see the module docstring). Two layers of 128 and 64 reach
# 96-97% test accuracy on the 8, 16 and 32 px digits in about a second at
# 16 px; a single layer or wider ones were not better (0.966-0.975 for all).
HIDDEN_UNITS = (128, 64)
L2_PENALTY = 1e-3
# Adam epochs at most; the fit stops earlier when the training loss stalls
# (sklearn's tol, 10 epochs without 1e-4 improvement): ~110-150 epochs here.
MAX_EPOCHS = 300
# Probabilities are floored here before the log in `inception_score`, so that a
# class with probability exactly 0 contributes p log p = 0 (its limit), not NaN.
_PROB_FLOOR = 1e-300
# Rows of the sample x train distance matrix computed at once (memory bound:
# 256 x N_train float64).
_DISTANCE_CHUNK = 256
# Random training subsets averaged in `real_frechet_at_size`: the Frechet
# distance of one 100-digit subset varies by +-25% between subsets, so the
# mean of 20 is within ~6% (each costs a millisecond on 64 features).
SUBSET_REPEATS = 20
JUDGEMENT_FILE = 'digit_judgement.json'


def _blas_one_thread():
  """Context manager limiting BLAS to one thread (see the module docstring)."""
  from threadpoolctl import threadpool_limits  # A scikit-learn dependency.
  return threadpool_limits(limits=1, user_api='blas')


def check_images(images: Any, name: str = 'images', image_size: int | None = None) -> np.ndarray:
  """Returns `images` as float64 [N, S, S, 1], or raises a one-line ValueError.

  Args:
    images: float array [N, S, S, 1] in [0, 1] (N >= 1). Integer arrays are
      refused: uint8 digits are 0..255 and must be divided by 255 first.
    name: what to call the array in the error message.
    image_size: the required side S, or None for any.
  """
  array = np.asarray(images)
  if not np.issubdtype(array.dtype, np.floating):
    raise ValueError(f'{name} must be a float array in [0, 1], got dtype {array.dtype} '
                     '(divide uint8 images by 255)')
  if array.ndim != 4 or array.shape[-1] != 1 or array.shape[1] != array.shape[2] or not len(array):
    raise ValueError(f'{name} must have shape [N >= 1, S, S, 1], got {array.shape}')
  if image_size is not None and array.shape[1] != image_size:
    raise ValueError(f'{name} are {array.shape[1]}x{array.shape[1]} but the classifier was fitted '
                     f'on {image_size}x{image_size} digits')
  if not np.all(np.isfinite(array)):
    raise ValueError(f'{name} contain NaN or Inf values')
  if array.min() < 0.0 or array.max() > 1.0:
    raise ValueError(f'{name} must lie in [0, 1], got [{array.min():.4g}, {array.max():.4g}] '
                     '(clip samples first)')
  return array.astype(np.float64)


def check_labels(labels: Any, num: int, name: str = 'labels') -> np.ndarray:
  """Returns `labels` as int64 [num] in [0, NUM_CLASSES), or raises a one-line ValueError."""
  array = np.asarray(labels)
  if not np.issubdtype(array.dtype, np.integer):
    raise ValueError(f'{name} must be integers, got dtype {array.dtype}')
  if array.shape != (num,):
    raise ValueError(f'{name} must have shape [{num}] (one per image), got {array.shape}')
  if array.min() < 0 or array.max() >= NUM_CLASSES:
    raise ValueError(f'{name} must lie in [0, {NUM_CLASSES}), got [{array.min()}, {array.max()}]')
  return array.astype(np.int64)


def _check_probs(probs: Any) -> np.ndarray:
  """Returns `probs` as float64 [N, K], rows on the simplex, or raises a one-line ValueError."""
  array = np.asarray(probs, dtype=np.float64)
  if array.ndim != 2 or not array.shape[0] or array.shape[1] < 2:
    raise ValueError(f'probs must have shape [N >= 1, K >= 2], got {array.shape}')
  if not np.all(np.isfinite(array)) or array.min() < 0.0:
    raise ValueError('probs must be finite and non-negative')
  # 1e-6: float32 softmax rows sum to 1 within ~K * 6e-8; anything further off
  # is logits or unnormalised scores passed by mistake.
  if np.max(np.abs(array.sum(axis=1) - 1.0)) > 1e-6:
    raise ValueError('probs rows must sum to 1 (pass probabilities, not logits)')
  return array


def _flatten(images: np.ndarray) -> np.ndarray:
  return images.reshape(len(images), -1)


class CleanClassifier:
  """An MLP digit classifier on clean pixels, fitted once, then a fixed judge.

  Example:
    judge = CleanClassifier().fit(train_images, train_labels, seed=0)
    judge.accuracy(test_images, test_labels)   # ~0.97 at 16 px
    judge.predict_proba(samples)               # [N, 10]
    judge.features(samples)                    # [N, 64]
  """

  def __init__(self, hidden_units: tuple[int, ...] = HIDDEN_UNITS,
               l2_penalty: float = L2_PENALTY, max_epochs: int = MAX_EPOCHS):
    """Args: hidden_units: widths of the ReLU hidden layers (>= 1 layer);
    l2_penalty: sklearn's `alpha`; max_epochs: Adam's epoch budget."""
    if not hidden_units or any(int(units) < 1 for units in hidden_units):
      raise ValueError(f'hidden_units must be one or more positive widths, got {hidden_units}')
    self.hidden_units = tuple(int(units) for units in hidden_units)
    self.l2_penalty = float(l2_penalty)
    self.max_epochs = int(max_epochs)
    self.image_size: int | None = None
    self._mlp = None

  def fit(self, images: Any, labels: Any, seed: int = 0) -> 'CleanClassifier':
    """Fits on `images` float [N, S, S, 1] in [0, 1] and `labels` int [N] in [0, 10).

    Every class must occur (the output has one column per class). `seed` fixes
    sklearn's weight initialisation and minibatch order: the same data and seed
    give the same classifier. Returns self.
    """
    images = check_images(images)
    labels = check_labels(labels, len(images))
    missing = sorted(set(range(NUM_CLASSES)) - set(labels.tolist()))
    if missing:
      raise ValueError(f'labels must contain every class 0..{NUM_CLASSES - 1}; missing {missing}')
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    mlp = MLPClassifier(hidden_layer_sizes=self.hidden_units, activation='relu', solver='adam',
                        alpha=self.l2_penalty, max_iter=self.max_epochs, random_state=int(seed))
    with _blas_one_thread(), warnings.catch_warnings():
      # Hitting the epoch budget is a choice (a fixed, fast fit), not an error.
      warnings.simplefilter('ignore', ConvergenceWarning)
      mlp.fit(_flatten(images), labels)
    self._mlp = mlp
    self.image_size = images.shape[1]
    return self

  def _checked(self, images: Any) -> np.ndarray:
    if self._mlp is None:
      raise ValueError('CleanClassifier is not fitted; call fit(images, labels) first')
    return _flatten(check_images(images, image_size=self.image_size))

  def predict_proba(self, images: Any) -> np.ndarray:
    """p(y | x): float64 [N, 10], rows summing to 1, for images float [N, S, S, 1] in [0, 1]."""
    pixels = self._checked(images)
    with _blas_one_thread():
      return self._mlp.predict_proba(pixels).astype(np.float64)

  def features(self, images: Any) -> np.ndarray:
    """Last hidden layer's ReLU activations: float64 [N, hidden_units[-1]] (>= 0)."""
    hidden = self._checked(images)
    with _blas_one_thread():
      for weights, bias in zip(self._mlp.coefs_[:-1], self._mlp.intercepts_[:-1]):
        hidden = np.maximum(hidden @ weights + bias, 0.0)
    return hidden

  def accuracy(self, images: Any, labels: Any) -> float:
    """Share of `images` whose most probable class is `labels` (int [N] in [0, 10))."""
    probs = self.predict_proba(images)
    return class_accuracy(probs, labels)[0]


def class_accuracy(probs: Any, requested_labels: Any) -> tuple[float, float]:
  """Share of samples classified as the class that was asked for.

    acc = (1/N) sum_i [argmax_y p(y | x_i) = y_i],   stderr = sqrt(acc (1 - acc) / N)

  stderr is the binomial standard error of a share estimated from N
  independent samples (0 when acc is 0 or 1).

  Args:
    probs: [N, 10] class probabilities (e.g. `CleanClassifier.predict_proba`).
    requested_labels: int [N] in [0, 10), the class each sample was asked to be.

  Returns:
    (acc, stderr), Python floats in [0, 1].
  """
  probs = _check_probs(probs)
  labels = check_labels(requested_labels, len(probs), 'requested_labels')
  share = float(np.mean(probs.argmax(axis=1) == labels))
  return share, float(np.sqrt(share * (1.0 - share) / len(probs)))


def inception_score(probs: Any) -> float:
  """The digit Inception-Score analogue (Salimans et al. 2016) of one image set.

    IS = exp( (1/N) sum_i KL( p(y | x_i) || p(y) ) ),   p(y) = (1/N) sum_i p(y | x_i)

  1 <= IS <= K (K = 10 classes): 1 when every image gets the same prediction,
  K when each is classified with certainty and the classes are equally often
  chosen. Computed over all N rows at once (one "split"): the published 10-
  split protocol was made for 50,000 images; on a few hundred digits, splits of
  tens of images would estimate p(y) badly and bias IS down. Reuses
  `ncsn_tf.metrics.image.inception_score_from_logits` on log p (probabilities
  floored at 1e-300, so 0 log 0 counts as 0).

  Args:
    probs: [N, K] class probabilities, rows summing to 1.

  Returns:
    IS as a Python float.
  """
  probs = _check_probs(probs)
  return inception_score_from_logits(np.log(np.maximum(probs, _PROB_FLOOR)), splits=1)[0]


def frechet_distance(features_a: Any, features_b: Any) -> float:
  """Frechet distance between Gaussians fitted to two feature sets (FID's formula).

    d^2 = ||mu_a - mu_b||^2 + Tr(Sigma_a + Sigma_b - 2 (Sigma_a Sigma_b)^{1/2})

  with mu, Sigma the sample mean and unbiased covariance of each set. This is
  `ncsn_tf.metrics.image.fid_from_activations` (the package's FID), applied to
  `CleanClassifier.features` instead of Inception activations. Like FID, the
  estimate is biased upward for small sets, so compare sets of similar sizes.

  Args:
    features_a: [Na, F], features_b: [Nb, F] (Na, Nb >= 2).

  Returns:
    d^2 (the squared distance, as FID reports it), a Python float >= 0 up to round-off.
  """
  return fid_from_activations(features_a, features_b)


def nearest_neighbour_distances(samples: Any, train_images: Any) -> np.ndarray:
  """Each sample's per-pixel RMS distance to its nearest training image.

    d_i = min_j sqrt( (1/P) sum_p (x_i[p] - t_j[p])^2 ),   P = S * S pixels

  in [0, 1] pixel units, whatever S: 0 for an exact copy of a training image,
  0.1 for a difference of 0.1 at every pixel. A generator that memorises its
  training set gives a median near 0; held-out real digits show what a
  median for genuinely new digits looks like.

  Args:
    samples: float [N, S, S, 1] in [0, 1]; train_images: float [M, S, S, 1] in [0, 1].

  Returns:
    float64 [N] distances.
  """
  samples = _flatten(check_images(samples, 'samples'))
  train = check_images(train_images, 'train_images')
  if train.shape[1] ** 2 != samples.shape[1]:
    raise ValueError(f'samples are {int(np.sqrt(samples.shape[1]))} px but train_images '
                     f'{train.shape[1]} px')
  train = _flatten(train)
  train_sq = np.sum(train**2, axis=1)
  nearest = np.empty(len(samples), np.float64)
  with _blas_one_thread():
    for start in range(0, len(samples), _DISTANCE_CHUNK):
      chunk = samples[start:start + _DISTANCE_CHUNK]
      # ||x - t||^2 = ||x||^2 + ||t||^2 - 2 x.t in float64; the round-off of the
      # expansion (~1e-13 here) can go below 0, hence the clip.
      squared = np.sum(chunk**2, axis=1)[:, None] + train_sq[None, :] - 2.0 * chunk @ train.T
      nearest[start:start + len(chunk)] = np.maximum(squared.min(axis=1), 0.0)
  return np.sqrt(nearest / samples.shape[1])


def judge(classifier: CleanClassifier, samples: Any, *, train_images: Any,
          reference_images: Any, requested_labels: Any = None) -> dict:
  """All the judge's numbers for one image set.

  Args:
    classifier: a fitted `CleanClassifier`.
    samples: float [N, S, S, 1] in [0, 1] (N >= 2), the images judged.
    train_images: float [M, S, S, 1] in [0, 1], the generator's training digits
      (for the nearest-neighbour distances).
    reference_images: float [R, S, S, 1] in [0, 1] (R >= 2), the set the
      Frechet distance is measured against (the test digits, for samples).
    requested_labels: int [N] in [0, 10), the class each sample was asked to be,
      or None for unconditional samples (then no class accuracy).

  Returns:
    A JSON-serialisable dict: num_images; inception_score; frechet_distance
    (against reference_images); nn_distance_median, nn_distance_min (per-pixel
    RMS to the nearest training image); predicted_class_counts (10 ints: the
    classes the judge sees); and with requested_labels, class_accuracy and
    class_accuracy_stderr.
  """
  samples = check_images(samples, 'samples', classifier.image_size)
  if len(samples) < 2:
    raise ValueError(f'judge needs at least 2 samples (a covariance), got {len(samples)}')
  if requested_labels is not None:
    requested_labels = check_labels(requested_labels, len(samples), 'requested_labels')
  reference = check_images(reference_images, 'reference_images', classifier.image_size)
  train = check_images(train_images, 'train_images', classifier.image_size)
  probs = classifier.predict_proba(samples)
  distances = nearest_neighbour_distances(samples, train)
  result = {
      'num_images': int(len(samples)),
      'inception_score': inception_score(probs),
      'frechet_distance': frechet_distance(classifier.features(samples),
                                           classifier.features(reference)),
      'nn_distance_median': float(np.median(distances)),
      'nn_distance_min': float(distances.min()),
      'predicted_class_counts': np.bincount(probs.argmax(axis=1),
                                            minlength=NUM_CLASSES).tolist(),
  }
  if requested_labels is not None:
    result['class_accuracy'], result['class_accuracy_stderr'] = class_accuracy(
        probs, requested_labels)
  return result


def judge_report(classifier: CleanClassifier, samples: Any, *, train_images: Any,
                 reference_images: Any, reference_labels: Any,
                 requested_labels: Any = None, seed: int = 0) -> dict:
  """`judge` for the samples and for the real test digits, side by side.

  The 'test_digits' row judges reference_images as if they were samples,
  asked to be their own labels (so its class_accuracy is the classifier's test
  accuracy); its frechet_distance is test digits vs all training digits, since
  against themselves it would be 0. The Frechet estimate grows steeply as sets
  shrink (at 16 px: ~1.1 for all 1,442 training digits vs the test digits, ~2.7
  for 355 of them, ~8 for 100), so that row also has
  frechet_distance_at_sample_size: the mean over SUBSET_REPEATS random sets of N
  training digits (N = the number of samples, fixed by `seed`) of their distance
  to the test digits, the number N genuinely new real digits get. Same
  arguments as `judge`, plus reference_labels: int [R] in [0, 10) and seed.

  Returns:
    {'samples': judge(samples), 'test_digits': judge(test digits),
     'classifier': {hidden_units, test_accuracy, num_train, num_test}}.
  """
  reference = check_images(reference_images, 'reference_images', classifier.image_size)
  reference_labels = check_labels(reference_labels, len(reference), 'reference_labels')
  train = check_images(train_images, 'train_images', classifier.image_size)
  ours = judge(classifier, samples, train_images=train, reference_images=reference,
               requested_labels=requested_labels)
  data = judge(classifier, reference, train_images=train, reference_images=train,
               requested_labels=reference_labels)
  data['frechet_distance_at_sample_size'] = real_frechet_at_size(
      classifier, train, reference, ours['num_images'], seed)
  return {
      'samples': ours,
      'test_digits': data,
      'classifier': {'hidden_units': list(classifier.hidden_units),
                     'test_accuracy': data['class_accuracy'],
                     'num_train': int(len(train)), 'num_test': int(len(reference))},
  }


def real_frechet_at_size(classifier: CleanClassifier, train_images: Any, reference_images: Any,
                         num: int, seed: int = 0) -> float:
  """Mean Frechet distance of SUBSET_REPEATS random sets of `num` training digits to the reference.

  The baseline a generator of `num` samples should be compared with (see
  `judge_report`). Subsets are drawn without replacement (all of train when
  num >= M) by numpy's default_rng(seed): deterministic.
  """
  train_features = classifier.features(train_images)
  reference_features = classifier.features(reference_images)
  size = min(int(num), len(train_features))
  if size == len(train_features):  # Every subset would be the whole training set.
    return frechet_distance(train_features, reference_features)
  rng = np.random.default_rng(seed)
  distances = [frechet_distance(train_features[rng.choice(size=size, a=len(train_features),
                                                          replace=False)], reference_features)
               for _ in range(SUBSET_REPEATS)]
  return float(np.mean(distances))


@functools.lru_cache(maxsize=None)
def fitted_classifier(image_size: int, seed: int = 0) -> CleanClassifier:
  """The clean classifier fitted on the training digits at `image_size`, cached per process."""
  images, labels = digits.load_digits_split('train', image_size)
  return CleanClassifier().fit(images / 255.0, labels, seed=seed)


def write_judgement(samples: Any, requested_labels: Any, image_size: int, out_dir: str,
                    seed: int = 0) -> dict:
  """Judges digit samples against the real digits; writes <out_dir>/digit_judgement.json.

  Loads the train and test splits (`ncsn_tf.data.digits.load_digits_split`) at
  `image_size`, fits the clean classifier on train (once per (image_size,
  seed) per process), runs `judge_report` (samples against the test digits),
  writes the JSON, logs two lines and returns the dict (plus image_size, seed).

  Args:
    samples: float [N, S, S, 1] in [0, 1] with S = image_size (N >= 2).
    requested_labels: int [N] in [0, 10), or None for unconditional samples.
    image_size: S, a positive multiple of 8.
    out_dir: directory for the JSON (created if missing).
    seed: the classifier's seed, and that of the training subsets of
      `real_frechet_at_size`.
  """
  from absl import logging

  digits.check_image_size(image_size)
  samples = check_images(samples, 'samples', image_size)
  if requested_labels is not None:
    requested_labels = check_labels(requested_labels, len(samples), 'requested_labels')
  classifier = fitted_classifier(int(image_size), int(seed))
  train_images, _ = digits.load_digits_split('train', image_size)
  test_images, test_labels = digits.load_digits_split('test', image_size)
  report = judge_report(classifier, samples, train_images=train_images / 255.0,
                        reference_images=test_images / 255.0, reference_labels=test_labels,
                        requested_labels=requested_labels, seed=seed)
  report.update(image_size=int(image_size), seed=int(seed))
  ours, data = report['samples'], report['test_digits']
  asked = ('unconditional' if requested_labels is None else
           f"{100 * ours['class_accuracy']:.1f}% ± {100 * ours['class_accuracy_stderr']:.1f}% "
           'the requested class')
  logging.info('digit judge: %d samples %s; Inception-Score analogue %.2f (test digits %.2f); '
               'clean classifier test accuracy %.1f%%', ours['num_images'], asked,
               ours['inception_score'], data['inception_score'],
               100 * data['class_accuracy'])
  logging.info('digit judge: Frechet distance to the test digits %.3g (%d real training digits: '
               '%.3g); median nearest-training-image RMS distance %.3f (test digits %.3f)',
               ours['frechet_distance'], ours['num_images'],
               data['frechet_distance_at_sample_size'],
               ours['nn_distance_median'], data['nn_distance_median'])
  os.makedirs(out_dir, exist_ok=True)
  artifacts.write_json(os.path.join(out_dir, JUDGEMENT_FILE), report)
  return report
