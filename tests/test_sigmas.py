import os

import numpy as np
import pytest
from conftest import REPO_ROOT

from ncsn_tf import noise


def test_geometric_ladder_matches_the_paper_definition():
  # CIFAR-10 ladder of the paper: σ from 1 to 0.01, L = 10, constant ratio.
  ladder = noise.geometric_sigmas(1.0, 0.01, 10)
  assert ladder.dtype == np.float32 and ladder.shape == (10,)
  np.testing.assert_allclose(ladder[0], 1.0, rtol=1e-6)
  np.testing.assert_allclose(ladder[-1], 0.01, rtol=1e-6)
  ratios = ladder[:-1] / ladder[1:]
  np.testing.assert_allclose(ratios, (1 / 0.01)**(1 / 9), rtol=1e-5)
  assert np.all(np.diff(ladder) < 0)


def test_single_level_ladder():
  np.testing.assert_allclose(noise.geometric_sigmas(0.5, 0.1, 1), [0.5])


@pytest.mark.parametrize('begin,end,n', [(1.0, 0.0, 10), (0.1, 1.0, 10), (1.0, 0.1, 0)])
def test_invalid_ladders_raise(begin, end, n):
  with pytest.raises(ValueError):
    noise.geometric_sigmas(begin, end, n)


def test_variance_ratio_matches_the_iterated_gaussian_recursion():
  """Technique 4's closed form against the variance recursion done step by step.

  For p_σ = N(0, σ²) the update is linear: var' = (1 − α/σ²)² var + 2α, with
  α = step_lr σ_i²/σ_L². Iterating it T times from γ²σ_i² is independent of the
  closed form; both are exact, so they agree to float64 round-off.
  """
  sigma_i, sigma_end, gamma, n_steps, step_lr = 0.7, 0.01, 1.09, 5, 1.2e-5
  alpha = step_lr * sigma_i**2 / sigma_end**2
  var = (gamma * sigma_i)**2
  for _ in range(n_steps):
    var = (1 - alpha / sigma_i**2)**2 * var + 2 * alpha
  assert noise.langevin_variance_ratio(step_lr, gamma, n_steps, sigma_end) == pytest.approx(
      var / sigma_i**2, rel=1e-12)


def test_best_step_lr_reproduces_ncsnv2_cifar10():
  """NCSNv2's CIFAR-10 config: σ 50 -> 0.01, L = 232, T = 5, step_lr 6.2e-6.

  The published value is rounded to two digits, hence the 1% tolerance.
  """
  gamma = noise.ladder_ratio(50.0, 0.01, 232)
  assert gamma == pytest.approx(1.0376, abs=1e-4)
  assert noise.best_step_lr(gamma, 5, 0.01) == pytest.approx(6.2e-6, rel=0.01)


def test_best_step_lr_minimises_the_ratio():
  gamma, n_steps, sigma_end = 1.09, 5, 0.01
  best = noise.best_step_lr(gamma, n_steps, sigma_end)
  at_best = noise.langevin_variance_ratio(best, gamma, n_steps, sigma_end)
  assert at_best > 1.0  # The discretised chain always overshoots slightly.
  for other in (0.8 * best, 1.25 * best):
    assert noise.langevin_variance_ratio(other, gamma, n_steps, sigma_end) > at_best


def test_shapes_flagfile_follows_ncsnv2_techniques():
  """tf_configs/shapes.cfg: σ_1 near the largest distance between training
  images (technique 1) and the technique-4 step for its ladder."""
  from ncsn_tf.data.shapes import shapes_split_images
  flags = dict(line.strip()[2:].split('=', 1) for line in
               open(os.path.join(REPO_ROOT, 'tf_configs', 'shapes.cfg'))
               if line.startswith('--'))
  images = shapes_split_images('train', num_images=2000).reshape(2000, -1) / 255.0
  squared = (images**2).sum(1)
  distances = np.sqrt(np.maximum(squared[:, None] + squared[None] - 2 * images @ images.T, 0))
  assert 0.8 * distances.max() <= float(flags['sigma_begin']) <= 1.2 * distances.max()
  gamma = noise.ladder_ratio(float(flags['sigma_begin']), float(flags['sigma_end']),
                              int(flags['num_scales']))
  best = noise.best_step_lr(gamma, int(flags['n_steps_each']), float(flags['sigma_end']))
  assert float(flags['step_lr']) == pytest.approx(best, rel=0.05)
