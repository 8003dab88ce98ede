"""MALA: exact invariance of a Gaussian, and the acceptance rate's fall with the step."""

import numpy as np
import tensorflow as tf

from ncsn_tf.data import toy
from ncsn_tf.sampling import mala

COV = np.array([[1.5, 0.5], [0.5, 0.8]], np.float32)
MEAN = np.array([1.0, -2.0], np.float32)


def _gaussian():
  return toy.GaussianMixture([1.0], [MEAN], [COV])


def test_mala_leaves_a_gaussian_invariant_even_with_a_large_step():
  # Start exactly at p; after 50 steps of ε = 0.5 (where unadjusted Langevin is
  # visibly biased) the moments must still be p's. N = 20000 chains: the
  # standard error of each mean is ≈ 0.01 and of each covariance entry ≈ 0.015.
  dist = _gaussian()
  x0 = dist.sample(20000, seed=[1, 2])
  out = mala.mala(dist.log_prob, x0, step_size=0.5, n_steps=50, seed=[3, 4])
  x = out['samples'].numpy()
  np.testing.assert_allclose(x.mean(0), MEAN, atol=0.05)
  np.testing.assert_allclose(np.cov(x.T), COV, atol=0.07)
  assert 0.2 < float(out['acceptance_rate']) < 1.0
  # Unadjusted Langevin at the same step has stationary covariance far from Σ:
  # for a Gaussian it is Σ (I − εΣ⁻¹/2)⁻¹, a 20-60 % inflation here.
  from ncsn_tf.sampling import langevin
  ula = langevin.langevin_dynamics(dist.score, x0, step_size=0.5, n_steps=50, seed=[3, 4]).numpy()
  assert np.abs(np.cov(ula.T) - COV).max() > 0.2


def test_mala_moves_from_a_bad_start_to_the_target():
  dist = _gaussian()
  x0 = tf.fill([4000, 2], 4.0)
  x = mala.mala(dist.log_prob, x0, step_size=0.3, n_steps=300, seed=[5, 6])['samples'].numpy()
  np.testing.assert_allclose(x.mean(0), MEAN, atol=0.1)


def test_acceptance_rate_falls_as_the_step_grows():
  dist = _gaussian()
  x0 = dist.sample(2000, seed=[7, 8])
  rates = [float(mala.mala(dist.log_prob, x0, step_size=eps, n_steps=20,
                           seed=[9, 10])['acceptance_rate']) for eps in (0.01, 0.1, 0.5, 2.0)]
  assert all(a > b for a, b in zip(rates, rates[1:])), rates
  assert rates[0] > 0.95 and rates[-1] < 0.5, rates


def test_mala_trajectory_and_per_chain_shapes():
  dist = _gaussian()
  out = mala.mala(dist.log_prob, tf.zeros([5, 2]), step_size=0.1, n_steps=20, seed=[0, 0],
                  num_snapshots=4)
  assert out['trajectory'].shape == (4, 5, 2)
  np.testing.assert_array_equal(out['trajectory'][-1].numpy(), out['samples'].numpy())
  assert out['acceptance_per_chain'].shape == (5,)
