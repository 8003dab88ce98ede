import numpy as np
import pytest

from ncsn_tf import sigmas


def test_geometric_ladder_matches_the_paper_definition():
  # CIFAR-10 ladder of the paper: σ from 1 to 0.01, L = 10, constant ratio.
  ladder = sigmas.geometric_sigmas(1.0, 0.01, 10)
  assert ladder.dtype == np.float32 and ladder.shape == (10,)
  np.testing.assert_allclose(ladder[0], 1.0, rtol=1e-6)
  np.testing.assert_allclose(ladder[-1], 0.01, rtol=1e-6)
  ratios = ladder[:-1] / ladder[1:]
  np.testing.assert_allclose(ratios, (1 / 0.01)**(1 / 9), rtol=1e-5)
  assert np.all(np.diff(ladder) < 0)


def test_single_level_ladder():
  np.testing.assert_allclose(sigmas.geometric_sigmas(0.5, 0.1, 1), [0.5])


@pytest.mark.parametrize('begin,end,n', [(1.0, 0.0, 10), (0.1, 1.0, 10), (1.0, 0.1, 0)])
def test_invalid_ladders_raise(begin, end, n):
  with pytest.raises(ValueError):
    sigmas.geometric_sigmas(begin, end, n)
