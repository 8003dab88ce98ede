"""The same `ncsn_tf.load(path)` calls on a workdir (in the test's process) and on its export
(in a fresh one), for tests/test_python_api.py to compare.

    python tests/pipeline_calls.py toy|digits EXPORT_PATH OUT.npz

runs the calls of the kind on the export, with the checkpoint readers disabled:
an export must answer from what it holds alone.
"""

import sys

import numpy as np

import ncsn_tf
from ncsn_tf.data import digits
from ncsn_tf.runtime import checkpoints

#: Samplers with settings that keep each call short on a tiny model.
TOY_SAMPLERS = {'ald': dict(n_steps_each=2), 'pc': dict(sampling_steps=20),
                'ode': dict(ode_rtol=1e-3, ode_atol=1e-3), 'heun': dict(sampling_steps=10)}
#: The toy points and σ every call uses.
TOY_POINTS = np.array([[0.0, 0.0], [5.0, 5.0], [4.5, 6.0], [-4.0, -5.5], [3.0, 3.0]], np.float32)
TOY_SIGMAS = np.array([0.01, 0.1, 1.0, 5.0, 20.0], np.float32)


def toy_calls(pipe) -> dict:
  """{name: array}: scores, each sampler's samples and NFE, likelihoods (exact and 2 probes)."""
  out = {'score': pipe.score(TOY_POINTS, TOY_SIGMAS)}
  for name, settings in TOY_SAMPLERS.items():
    out[f'sample_{name}'] = pipe.sample(32, sampler=name, seed=5, **settings)
    out[f'nfe_{name}'] = np.array(pipe.nfe)
  # One probe: the export's own log_likelihood signature draws the same probe at this seed.
  for key, options in (('exact', dict(exact_trace=True)), ('probe', dict(exact_trace=False, probes=1))):
    out[f'log_prob_{key}'] = pipe.log_likelihood(TOY_POINTS, ode_rtol=1e-3, ode_atol=1e-3,
                                                 seed=4, **options).log_prob
  return out


def digit_images(pipe, num: int) -> np.ndarray:
  """The first `num` test digits at the run's size, float32 in [0, 1]."""
  images, _ = digits.load_digits_split('test', pipe.data_shape[0])
  return (images[:num] / 255.0).astype(np.float32)


def digits_calls(pipe) -> dict:
  """{name: array}: unconditional and labelled samples (the run's sampler), inpaintings."""
  return {'sample': pipe.sample(4, seed=1),
          'sample_labels': pipe.sample(5, label=[0, 3, 7, 7, 9], guidance_scale=2.0, seed=2),
          'inpaint': pipe.inpaint(digit_images(pipe, 3), 'right', seed=3)}


CALLS = {'toy': toy_calls, 'digits': digits_calls}


def main(kind: str, path: str, out_path: str):
  def no_checkpoints(*args, **kwargs):
    raise AssertionError('an export must not read checkpoints')

  checkpoints.restore_for_inference = checkpoints.create_state = no_checkpoints
  pipe = ncsn_tf.load(path)
  assert pipe.source.kind == 'export', pipe
  np.savez(out_path, **CALLS[kind](pipe))


if __name__ == '__main__':
  main(*sys.argv[1:4])
