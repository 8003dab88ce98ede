"""New toy distributions (rings, grid, 8-Gaussian circle) and the lab metrics, against closed forms."""

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import tensorflow as tf
from test_toy import _autodiff_score

from ncsn_tf.data import toy
from ncsn_tf.metrics import toy as toy_metrics


@pytest.mark.parametrize('name', ['rings', 'grid', 'gmm8'])
def test_scores_match_autodiff_of_log_prob(name):
  dist = toy.get_toy(name)
  x = tf.random.stateless_uniform([512, 2], [1, 2], -dist.plot_radius, dist.plot_radius)
  np.testing.assert_allclose(dist.score(x).numpy(), _autodiff_score(dist.log_prob, x).numpy(),
                             rtol=2e-3, atol=2e-3)
  assert dist.has_perturbed_score
  sigma = 0.7
  np.testing.assert_allclose(
      dist.perturbed_score(x, sigma).numpy(),
      _autodiff_score(lambda v: dist.perturbed_log_prob(v, sigma), x).numpy(), rtol=2e-3, atol=2e-3)


def test_rings_density_is_the_blurred_circle_by_quadrature():
  # Independent check: p(x) = Σ_k π_k ∫ N(x; r_k u(θ), w²I) dθ/2π, by scipy quadrature.
  dist = toy.Rings()
  points = np.array([[0.0, 0.0], [2.0, 0.1], [-1.0, 3.9], [4.0, -4.0]], np.float32)
  w2 = dist.width**2
  for p, lp in zip(points, dist.log_prob(points).numpy()):
    total = 0.0
    for r, pi in zip(dist.radii, dist.weights):
      f = lambda t: np.exp(-((p[0] - r * np.cos(t))**2 + (p[1] - r * np.sin(t))**2) / (2 * w2))
      total += pi * scipy.integrate.quad(f, 0, 2 * np.pi, limit=200)[0] / (2 * np.pi) / (2 * np.pi * w2)
    np.testing.assert_allclose(lp, np.log(total), rtol=1e-4, atol=1e-4)


def test_rings_density_integrates_to_one_and_samples_have_the_right_radii():
  dist = toy.Rings()
  grid = np.linspace(-7, 7, 561, dtype=np.float32)
  xx, yy = np.meshgrid(grid, grid)
  p = np.exp(dist.log_prob(np.stack([xx.ravel(), yy.ravel()], -1)).numpy())
  np.testing.assert_allclose(p.sum() * (grid[1] - grid[0])**2, 1.0, atol=2e-3)
  x = dist.sample(20000, seed=[3, 4]).numpy()
  r = np.linalg.norm(x, axis=-1)
  inner = r < 0.5 * (dist.radii[0] + dist.radii[1])
  np.testing.assert_allclose(inner.mean(), dist.weights[0], atol=0.015)
  # E‖x‖² = r_k² + 2w² for each ring.
  np.testing.assert_allclose((r[inner]**2).mean(), dist.radii[0]**2 + 2 * dist.width**2, rtol=0.02)


def test_rings_score_is_finite_at_the_origin():
  assert np.all(np.isfinite(toy.Rings().score(np.zeros([1, 2], np.float32)).numpy()))


def test_grid_and_circle_mixture_layouts():
  grid = toy.get_toy('grid')
  assert grid.num_components == 25
  np.testing.assert_allclose(grid.weights, 1 / 25)
  circle = toy.get_toy('gmm8')
  assert circle.num_components == 8
  np.testing.assert_allclose(np.linalg.norm(circle.means, axis=-1), 4.0, rtol=1e-6)
  assert not toy.get_toy('banana').has_perturbed_score


def test_monte_carlo_perturbed_score_matches_the_closed_form():
  dist = toy.paper_mixture()
  x = dist.sample(256, seed=[5, 6]) + 1.5 * tf.random.stateless_normal([256, 2], [7, 8])
  estimate = toy.perturbed_score_mc(dist, x, 1.5, num=20000, seed=[9, 10]).numpy()
  exact = dist.perturbed_score(x, 1.5).numpy()
  assert toy_metrics.relative_score_error(estimate, exact) < 0.02


# --- metrics ----------------------------------------------------------------

def test_mmd_matches_the_gaussian_closed_form():
  # Gaussian kernel h, X ~ N(0, s²I), Y ~ N(Δ, s²I) in D dims:
  # MMD² = 2 (h²/(h²+2s²))^{D/2} (1 − exp(−‖Δ‖² / (2(h²+2s²)))).
  h, s, delta, d = 1.0, 1.0, np.array([1.0, 0.5]), 2
  rng = np.random.default_rng(0)
  x = rng.standard_normal((3000, d))
  y = rng.standard_normal((3000, d)) + delta
  c = h**2 + 2 * s**2
  expected = 2 * (h**2 / c)**(d / 2) * (1 - np.exp(-delta @ delta / (2 * c)))
  np.testing.assert_allclose(toy_metrics.mmd_rbf(x, y, bandwidth=h), expected, atol=0.01)
  same = toy_metrics.mmd_rbf(x, rng.standard_normal((3000, d)), bandwidth=h)
  assert abs(same) < 0.005


def test_sliced_wasserstein_of_a_shift_is_its_norm_over_sqrt_dim():
  # Y = X + Δ: each 1-D W₂² is (θᵀΔ)² exactly, and E_θ(θᵀΔ)² = ‖Δ‖²/D.
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2000, 2))
  delta = np.array([3.0, -1.0])
  sw = toy_metrics.sliced_wasserstein(x, x + delta, num_projections=4000)
  np.testing.assert_allclose(sw, np.linalg.norm(delta) / np.sqrt(2), rtol=0.03)
  assert toy_metrics.sliced_wasserstein(x, x) == 0.0


def test_fisher_overall_and_weight_error_known_values():
  exact = np.random.default_rng(2).standard_normal((100, 2))
  np.testing.assert_allclose(toy_metrics.fisher_divergence(exact + [0.6, 0.8], exact), 0.5)
  overall = toy_metrics.fisher_divergence_overall([1.0, 4.0], [2.0, 0.5])
  assert overall == {'mean': 2.5, 'sigma2_weighted': 2.5}
  means = np.array([[-5.0, -5.0], [5.0, 5.0]])
  samples = np.array([[-5.0, -5.0]] * 5 + [[5.0, 5.0]] * 5)
  err = toy_metrics.mixture_weight_error(samples, means, [0.2, 0.8])
  np.testing.assert_allclose([err['total_variation'], err['max_abs']], [0.3, 0.3])


def test_error_by_density_decile():
  log_density = np.arange(100.0)
  exact = np.zeros((100, 2))
  score = np.zeros((100, 2))
  score[:10, 0] = 2.0  # Wrong only in the lowest-density tenth.
  deciles = toy_metrics.error_by_density_decile(score, exact, log_density)
  np.testing.assert_allclose(deciles, [4.0] + [0.0] * 9)
