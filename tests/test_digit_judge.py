"""The clean digit judge (ncsn_tf/metrics/digit_judge.py): closed forms and real digits."""

import json
import os

import numpy as np
import pytest

from ncsn_tf.data import digits
from ncsn_tf.metrics import digit_judge as dj

SIZE = 16


@pytest.fixture(scope='module')
def real():
  """The 16 px train and test digits as float [N, 16, 16, 1] in [0, 1], with labels."""
  train, train_labels = digits.load_digits_split('train', SIZE)
  test, test_labels = digits.load_digits_split('test', SIZE)
  return train / 255.0, np.asarray(train_labels), test / 255.0, np.asarray(test_labels)


@pytest.fixture(scope='module')
def classifier():
  # The cached instance write_judgement uses too: one fit (~1-2 s) for the module.
  return dj.fitted_classifier(SIZE, 0)


def _one_hot(labels, num_classes=10):
  return np.eye(num_classes)[labels]


def test_inception_score_closed_forms():
  # One-hot predictions, every class equally often: KL = log K for every row.
  assert dj.inception_score(_one_hot(np.arange(200) % 10)) == pytest.approx(10.0, rel=1e-12)
  # Identical rows: p(y | x) = p(y), KL = 0.
  row = np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05, 0, 0, 0, 0])
  assert dj.inception_score(np.tile(row, (50, 1))) == pytest.approx(1.0, abs=1e-12)
  # Two classes, rows (a, 1-a) and (1-a, a) in equal numbers: p(y) = (1/2, 1/2),
  # KL = log 2 - H(a) for each row, so IS = 2 exp(-H(a)).
  a = 0.8
  entropy = -(a * np.log(a) + (1 - a) * np.log(1 - a))
  probs = np.array([[a, 1 - a], [1 - a, a]] * 20)
  assert dj.inception_score(probs) == pytest.approx(2.0 * np.exp(-entropy), rel=1e-12)


def _exact_moments(rng, mean, cov, num):
  """num points whose sample mean and unbiased covariance are exactly mean, cov."""
  z = rng.normal(size=(num, len(mean)))
  z -= z.mean(axis=0)
  z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # cov(z) = I
  return mean + z @ np.linalg.cholesky(cov).T


def test_frechet_distance_closed_form():
  # Covariances sharing eigenvectors R: Sigma_a = R diag(a) R^T, Sigma_b = R diag(b) R^T,
  # so (Sigma_a Sigma_b)^(1/2) = R diag(sqrt(a b)) R^T and
  # d^2 = |mu_a - mu_b|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
  rng = np.random.default_rng(0)
  rotation, _ = np.linalg.qr(rng.normal(size=(5, 5)))
  var_a, var_b = np.array([1.0, 2.0, 0.5, 3.0, 0.1]), np.array([4.0, 1.0, 0.5, 0.2, 2.0])
  mu_a, mu_b = rng.normal(size=5), rng.normal(size=5)
  feats_a = _exact_moments(rng, mu_a, rotation @ np.diag(var_a) @ rotation.T, 400)
  feats_b = _exact_moments(rng, mu_b, rotation @ np.diag(var_b) @ rotation.T, 300)
  expected = np.sum((mu_a - mu_b)**2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b))**2)
  # Exact moments: only float64 round-off of eigendecompositions separates the two.
  assert dj.frechet_distance(feats_a, feats_b) == pytest.approx(expected, rel=1e-9)
  assert dj.frechet_distance(feats_a, feats_a) == pytest.approx(0.0, abs=1e-9)


def test_classifier_accuracy_on_real_test_digits(real, classifier):
  _, _, test, test_labels = real
  assert classifier.accuracy(test, test_labels) >= 0.95
  probs = classifier.predict_proba(test)
  assert probs.shape == (len(test), 10)
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
  features = classifier.features(test)
  assert features.shape == (len(test), dj.HIDDEN_UNITS[-1]) and features.min() >= 0.0


def test_classifier_native_size_and_deterministic():
  train, train_labels = digits.load_digits_split('train', 8)
  test, test_labels = digits.load_digits_split('test', 8)
  first = dj.CleanClassifier().fit(train / 255.0, train_labels, seed=3)
  second = dj.CleanClassifier().fit(train / 255.0, train_labels, seed=3)
  assert first.accuracy(test / 255.0, test_labels) >= 0.95
  np.testing.assert_array_equal(first.predict_proba(test / 255.0),
                                second.predict_proba(test / 255.0))


def test_class_accuracy_true_and_shuffled_labels(real, classifier):
  _, _, test, test_labels = real
  probs = classifier.predict_proba(test)
  share, stderr = dj.class_accuracy(probs, test_labels)
  assert share >= 0.95
  assert stderr == pytest.approx(np.sqrt(share * (1 - share) / len(test)), rel=1e-12)
  # Labels unrelated to the images: right 1 time in 10 (binomial sd at N = 355 is
  # 0.016, so +-0.05 is 3 sd).
  shuffled = np.random.default_rng(0).permutation(test_labels)
  assert dj.class_accuracy(probs, shuffled)[0] == pytest.approx(0.1, abs=0.05)
  assert dj.class_accuracy(_one_hot(np.arange(8) % 10), np.arange(8)) == (1.0, 0.0)


def test_nearest_neighbour_distances(real):
  train, _, test, _ = real
  # Closed form of the per-pixel RMS unit: 0.1 everywhere vs an all-black image.
  constant = np.full((1, SIZE, SIZE, 1), 0.1)
  np.testing.assert_allclose(dj.nearest_neighbour_distances(constant, np.zeros_like(constant)),
                             [0.1], rtol=1e-12)
  copies = train[::7]
  assert dj.nearest_neighbour_distances(copies, train).max() < 1e-6
  # Held-out digits are new digits: median 0.09 at 16 px.
  held_out = dj.nearest_neighbour_distances(test, train)
  assert np.median(held_out) > 0.05 and held_out.min() > 0.01


def test_noise_is_judged_badly(real, classifier):
  train, _, test, _ = real
  noise = np.random.default_rng(0).uniform(size=test.shape)
  ours = dj.judge(classifier, noise, train_images=train, reference_images=test)
  data = dj.judge(classifier, test, train_images=train, reference_images=train)
  assert 'class_accuracy' not in ours
  assert ours['inception_score'] < 3.0 < 9.0 < data['inception_score']
  assert ours['frechet_distance'] > 50 * data['frechet_distance']
  assert ours['nn_distance_median'] > 3 * data['nn_distance_median']


def test_write_judgement_side_by_side(real, classifier, tmp_path):
  train, train_labels, test, test_labels = real
  samples, labels = train[:200], train_labels[:200]  # "Samples" that copy the training set.
  report = dj.write_judgement(samples, labels, SIZE, str(tmp_path / 'out'))
  with open(os.path.join(tmp_path, 'out', dj.JUDGEMENT_FILE)) as f:
    assert json.load(f) == report
  ours, data = report['samples'], report['test_digits']
  assert ours['num_images'] == 200 and data['num_images'] == len(test)
  assert ours['nn_distance_median'] == pytest.approx(0.0, abs=1e-6)
  assert data['nn_distance_median'] > 0.05
  assert ours['class_accuracy'] >= 0.99  # Training digits, seen by the classifier.
  assert data['class_accuracy'] == report['classifier']['test_accuracy'] == pytest.approx(
      classifier.accuracy(test, test_labels))
  assert sum(ours['predicted_class_counts']) == 200
  # 200 real digits sit further from the test digits than all 1,442 do: the small-set bias.
  assert data['frechet_distance_at_sample_size'] > data['frechet_distance'] > 0
  assert dj.fitted_classifier(SIZE, 0) is classifier  # Fitted once per (size, seed).


@pytest.mark.parametrize('images, match', [
    (np.zeros((4, SIZE, SIZE, 1), np.uint8), 'float'),
    (np.zeros((4, SIZE, SIZE, 3)), 'shape'),
    (np.zeros((4, SIZE, SIZE)), 'shape'),
    (np.zeros((4, 8, 8, 1)), 'fitted on 16x16'),
    (np.full((4, SIZE, SIZE, 1), 1.5), r'\[0, 1\]'),
    (np.full((4, SIZE, SIZE, 1), np.nan), 'NaN'),
])
def test_bad_images_raise_one_line(classifier, images, match):
  with pytest.raises(ValueError, match=match) as error:
    classifier.predict_proba(images)
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('labels, match', [
    (np.full(4, 10), r'\[0, 10\)'),
    (np.array([0, 1, -1, 2]), r'\[0, 10\)'),
    (np.zeros(3, np.int32), 'shape'),
    (np.zeros(4), 'integers'),
])
def test_bad_labels_raise_one_line(labels, match):
  with pytest.raises(ValueError, match=match) as error:
    dj.class_accuracy(_one_hot(np.arange(4)), labels)
  assert '\n' not in str(error.value)


def test_other_bad_input_raises_one_line(real):
  train, train_labels, test, _ = real
  bad_calls = [
      (lambda: dj.inception_score(np.ones((4, 10))), 'sum to 1'),
      (lambda: dj.CleanClassifier().features(test), 'not fitted'),
      (lambda: dj.CleanClassifier().fit(train[train_labels < 9], train_labels[train_labels < 9]),
       r'missing \[9\]'),
      (lambda: dj.nearest_neighbour_distances(test, train[:, :8, :8]), 'px'),
      (lambda: dj.write_judgement(test[:, :12, :12], None, 12, '/nonexistent'), 'multiple of 8'),
  ]
  for call, match in bad_calls:
    with pytest.raises(ValueError, match=match) as error:
      call()
    assert '\n' not in str(error.value)
