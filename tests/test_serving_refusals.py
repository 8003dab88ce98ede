"""Served signatures defend themselves, in the graph: a bad request fails within seconds
with InvalidArgument and a message naming the signature and the input, never a hang,
unbounded memory or a silent NaN.

The categories: a request over the export's max_batch (--export_max_batch, stored in
the export); a non-finite input; σ <= 0; a level out of range; and an adaptive solve
that cannot converge (a step limit). They are checked through tf.saved_model.load and,
in a fresh process, through saved_model_cli (the session loader a model server uses).
Loading the export from a process that imported ncsn_tf prints no warning a user would
read as a failure.
"""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT
from test_image_training import config_from_flagfile

from ncsn_tf import likelihood
from ncsn_tf import noise
from ncsn_tf.runtime import checkpoints
from ncsn_tf.serving import export as export_lib

MAX_BATCH = 16
#: A refusal must come before any sampling or solving: well within this many seconds.
PROMPT_SECONDS = 10.0


@pytest.fixture(scope='module')
def sde_export(tmp_path_factory):
  """The continuous toy (untrained, small), exported with --export_max_batch=16 and the ODE
  sampler: its path. `sample` and `log_likelihood` are adaptive solves."""
  tmp_path = tmp_path_factory.mktemp('refusals')
  config = config_from_flagfile('toy_gmm_sde', '--ngf=16', '--num_layers=1', '--ode_rtol=1e-2',
                                '--ode_atol=1e-2', f'--export_max_batch={MAX_BATCH}',
                                f'--workdir={tmp_path}/run', f'--export_dir={tmp_path}/export')
  state = checkpoints.create_state(config, tf.distribute.get_strategy())
  return export_lib.export(state.score_model, config, state.sigmas)


@pytest.fixture(scope='module')
def loaded(sde_export):
  return tf.saved_model.load(sde_export)


NAN = float('nan')
CASES = [
    ('sample', dict(num_samples=10**9, seed=0),
     f'sample: num_samples must be in [1, {MAX_BATCH}] (max_batch of this export: '
     f'--export_max_batch), got 1000000000'),
    ('sample', dict(num_samples=0, seed=0), 'sample: num_samples must be in [1, 16]'),
    ('sample', dict(num_samples=-3, seed=0), 'sample: num_samples must be in [1, 16]'),
    ('score', dict(x=np.zeros([MAX_BATCH + 1, 2], np.float32),
                   sigma_index=np.zeros([MAX_BATCH + 1], np.int32)),
     'score: the batch of x must be in [1, 16]'),
    ('score', dict(x=np.array([[NAN, 0.0]], np.float32), sigma_index=np.array([0], np.int32)),
     'score: x must be finite'),
    ('score_sigma', dict(x=np.ones([1, 2], np.float32), sigma=np.array([0.0], np.float32)),
     'score_sigma: sigma must be > 0'),
    ('score_sigma', dict(x=np.ones([1, 2], np.float32), sigma=np.array([-1.0], np.float32)),
     'score_sigma: sigma must be > 0'),
    ('score_sigma', dict(x=np.ones([1, 2], np.float32), sigma=np.array([np.inf], np.float32)),
     'score_sigma: sigma must be finite'),
    ('score_sigma', dict(x=np.array([[np.inf, 0.0]], np.float32), sigma=np.ones([1], np.float32)),
     'score_sigma: x must be finite'),
    ('log_likelihood', dict(x=np.array([[NAN, 1.0]], np.float32), seed=0),
     'log_likelihood: x must be finite'),
    ('log_likelihood', dict(x=np.array([[1.0, -np.inf]], np.float32), seed=0),
     'log_likelihood: x must be finite'),
    ('log_likelihood', dict(x=np.zeros([MAX_BATCH + 1, 2], np.float32), seed=0),
     'log_likelihood: the batch of x must be in [1, 16]'),
]


@pytest.mark.parametrize('signature,feed,message', CASES,
                         ids=[f'{c[0]}-{k}' for k, c in enumerate(CASES)])
def test_a_bad_request_fails_promptly_with_invalid_argument(loaded, signature, feed, message):
  start = time.monotonic()
  with pytest.raises(tf.errors.InvalidArgumentError) as error:
    loaded.signatures[signature](**{k: tf.constant(v) for k, v in feed.items()})
  assert time.monotonic() - start < PROMPT_SECONDS
  assert message in str(error.value), str(error.value)[:2000]


def test_requests_within_the_cap_are_answered(loaded):
  assert int(loaded.max_batch.numpy()) == MAX_BATCH
  samples = loaded.signatures['sample'](num_samples=tf.constant(MAX_BATCH), seed=tf.constant(0))
  assert samples['samples'].shape == (MAX_BATCH, 2)
  out = loaded.signatures['log_likelihood'](x=tf.ones([MAX_BATCH, 2]), seed=tf.constant(0))
  assert np.all(np.isfinite(out['log_prob'].numpy()))


def test_the_session_loader_refuses_too_in_one_line_and_loading_is_quiet(sde_export):
  """saved_model_cli (TF Serving's loader path) in a fresh process: the refusal is its
  error, named on one line. Loading the export in a process that imported ncsn_tf logs
  no "unsaved custom gradients ... Will likely fail" warning."""
  cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  start = time.monotonic()
  result = subprocess.run([cli, 'run', '--dir', sde_export, '--tag_set', 'serve',
                           '--signature_def', 'sample', '--input_exprs',
                           'num_samples=100000000;seed=1'],
                          capture_output=True, text=True, timeout=300, env=env)
  assert result.returncode != 0
  lines = [line for line in result.stderr.splitlines() if 'num_samples must be in' in line]
  assert lines and 'got 100000000' in lines[0], result.stderr[-3000:]
  assert time.monotonic() - start < 120  # The process's start included; no sampling.
  script = ('import ncsn_tf, sys\n'
            'import tensorflow as tf\n'
            'loaded = tf.saved_model.load(sys.argv[1])\n'
            'print(loaded.signatures["log_likelihood"](x=tf.ones([2, 2]), seed=tf.constant(0))'
            '["log_prob"].shape)\n')
  result = subprocess.run([sys.executable, '-c', script, sde_export], capture_output=True,
                          text=True, timeout=300, env=env, cwd=REPO_ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == '(2,)'
  assert result.stderr.strip() == '', result.stderr[-3000:]


def test_an_adaptive_solve_that_cannot_converge_stops_at_its_step_limit():
  """A score that is NaN everywhere (a diverged network): the solve ends with
  InvalidArgument "max_num_steps exceeded" after MAX_SOLVER_STEPS, in seconds, not never."""
  sde = noise.VESDE(0.01, 20.0)
  start = time.monotonic()
  with pytest.raises(tf.errors.InvalidArgumentError, match='max_num_steps exceeded'):
    likelihood.log_likelihood(lambda x, t: x * NAN, sde, tf.ones([4, 2]), exact_trace=True,
                              rtol=1e-3, atol=1e-3)
  assert time.monotonic() - start < 120
  with pytest.raises(tf.errors.InvalidArgumentError, match='likelihood x must be finite'):
    likelihood.log_likelihood(lambda x, t: -x, sde, tf.constant([[NAN, 1.0]]), exact_trace=True)
