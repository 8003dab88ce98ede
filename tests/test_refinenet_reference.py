"""CondRefineNetDilated against the official PyTorch NCSN, output for output.

tests/reference/refinenet_outputs.npz holds, for a 32x32x3 and a 28x28x1 model
(ngf 4, 4 levels), a random state_dict of ermongroup/ncsn's CondRefineNetDilated,
random inputs and the reference's outputs (computed in float64; how:
tests/reference/make_refinenet_outputs.py). Loading that state_dict into our model
with `assign_reference_weights` must give the same scores: this pins the whole
wiring (residual stages, dilations, ConvMeanPool, RefineBlocks, MSF upsampling,
CRP pooling, CIN++) that parameter counts alone cannot.
"""

import os

import numpy as np
import pytest

from ncsn_tf.models.reference_weights import assign_reference_weights
from ncsn_tf.models.refinenet import CondRefineNetDilated

FIXTURE = os.path.join(os.path.dirname(__file__), 'reference', 'refinenet_outputs.npz')
CASES = ['rgb32', 'gray28']
# Our float32 forward pass against the reference's float64 one, on outputs of size
# ~1: about 60 layers of float32 rounding (each ~1e-7 relative) accumulate to
# ~1e-6 of the largest output. A wiring error (a pixel's shift, a wrong pooling
# divisor, a missing ELU) moves outputs by 1e-2 or more.
RELATIVE_TOLERANCE = 2e-5


def _case(name):
  with np.load(FIXTURE) as arrays:
    prefix = f'{name}/'
    data = {k[len(prefix):]: arrays[k] for k in arrays.files if k.startswith(prefix)}
  state = {k[len('state/'):]: v for k, v in data.items() if k.startswith('state/')}
  return data['x'], data['levels'], data['score'], state


def _model_for(x, state):
  ngf = state['begin_conv.bias'].shape[0]
  levels = state['normalizer.embed.weight'].shape[0]
  model = CondRefineNetDilated(ngf, levels, x.shape[1], x.shape[3]).build_for()
  return model


@pytest.mark.parametrize('case', CASES)
def test_outputs_match_the_pytorch_reference(case):
  x, levels, expected, state = _case(case)
  model = _model_for(x, state)
  assign_reference_weights(model, state)
  got = np.asarray(model(x, levels))
  scale = np.abs(expected).max()
  assert scale > 0.5  # the fixture's weights give outputs of order 1, not ~0
  np.testing.assert_allclose(got, expected, rtol=0, atol=RELATIVE_TOLERANCE * scale)


def test_data_parallel_prefix_is_accepted():
  x, levels, expected, state = _case('rgb32')
  model = _model_for(x, state)
  assign_reference_weights(model, {f'module.{k}': v for k, v in state.items()})
  scale = np.abs(expected).max()
  np.testing.assert_allclose(np.asarray(model(x, levels)), expected, rtol=0,
                             atol=RELATIVE_TOLERANCE * scale)


def test_mismatches_are_reported_and_nothing_is_assigned():
  x, _, _, state = _case('rgb32')
  model = _model_for(x, state)
  before = [np.array(w) for w in model.weights]

  missing = dict(state)
  del missing['end_conv.bias']
  with pytest.raises(ValueError, match='leaves 1 model variable'):
    assign_reference_weights(model, missing)

  with pytest.raises(ValueError, match='no module'):
    assign_reference_weights(model, {**state, 'refine9.crp.convs.0.weight': np.zeros([4, 4, 3, 3])})

  wider = CondRefineNetDilated(8, 4, 32, 3).build_for()
  with pytest.raises(ValueError, match='another ngf'):
    assign_reference_weights(wider, state)

  for old, new in zip(before, model.weights):
    np.testing.assert_array_equal(old, np.array(new))
