"""The SavedModel contract: signatures, a fresh-process reload, atomic versions."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT
from test_cli import run_cli
from test_train_lib import tiny_config

from ncsn_tf import config as config_lib
from ncsn_tf.sampling import langevin
from ncsn_tf.serving import export as export_lib
from ncsn_tf.serving import module as serving_module
from ncsn_tf.training import loop as train_loop

RELOAD_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
x = np.load(sys.argv[2])
index = np.arange(len(x), dtype=np.int32) % 4
score = loaded.signatures['score'](x=tf.constant(x), sigma_index=tf.constant(index))['score']
default = loaded.signatures['serving_default'](x=tf.constant(x), sigma_index=tf.constant(index))['score']
samples = loaded.signatures['sample'](num_samples=tf.constant(7), seed=tf.constant(3))['samples']
np.savez(sys.argv[3], score=score.numpy(), default=default.numpy(), samples=samples.numpy(),
         sigmas=loaded.sigmas.numpy())
print(json.dumps(sorted(loaded.signatures.keys())))
"""


def _trained(tmp_path):
  config = tiny_config(tmp_path / 'run', train_steps=20)
  return config, train_loop.train(config)


def test_export_reloads_in_a_fresh_process_and_matches_the_live_model(tmp_path):
  config, state = _trained(tmp_path)
  path = export_lib.export(state.ema_model, config, state.sigmas)
  assert os.path.basename(path) == '1'
  x = np.random.default_rng(0).normal(scale=5, size=(9, 2)).astype(np.float32)
  np.save(tmp_path / 'x.npy', x)
  out = subprocess.run([sys.executable, '-c', RELOAD_SCRIPT, path, str(tmp_path / 'x.npy'),
                        str(tmp_path / 'out.npz')], capture_output=True, text=True, check=True)
  assert json.loads(out.stdout.strip().splitlines()[-1]) == ['sample', 'score', 'score_sigma',
                                                             'serving_default']
  got = np.load(tmp_path / 'out.npz')
  live = state.ema_model(x, np.arange(9, dtype=np.int32) % 4).numpy()
  np.testing.assert_allclose(got['score'], live, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got['default'], got['score'])
  np.testing.assert_allclose(got['sigmas'], state.sigmas)
  # `sample` is annealed Langevin at the config's settings from the seed:
  # reproduce it in-process with the documented seed derivation.
  x_init = serving_module.initial_state((2,), tf.constant(7), tf.constant([3, 0]), config.data)
  expected = langevin.annealed_langevin_dynamics(
      lambda v, i: state.ema_model(v, i), x_init, state.sigmas,
      n_steps_each=config.sampling.n_steps_each, step_lr=config.sampling.step_lr, seed=[3, 1])
  assert got['samples'].shape == (7, 2)
  np.testing.assert_allclose(got['samples'], expected, rtol=1e-4, atol=1e-4)


def test_versions_increase_and_leave_no_temporary_directories(tmp_path):
  config, state = _trained(tmp_path)
  first = export_lib.export(state.ema_model, config, state.sigmas)
  second = export_lib.export(state.ema_model, config, state.sigmas)
  assert [os.path.basename(first), os.path.basename(second)] == ['1', '2']
  assert sorted(os.listdir(config.export.export_dir)) == ['1', '2']


def test_sample_signature_is_deterministic_in_the_seed(tmp_path):
  config, state = _trained(tmp_path)
  module = serving_module.ScoreModule(state.ema_model, config, state.sigmas)
  a = module.sample(tf.constant(4), tf.constant(1))['samples']
  b = module.sample(tf.constant(4), tf.constant(1))['samples']
  c = module.sample(tf.constant(4), tf.constant(2))['samples']
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_export_signatures_serves_only_those_named_and_score(tmp_path):
  config, state = _trained(tmp_path)
  # Named out of registry order, without `score`: served in registry order, with
  # `score` (it is serving_default).
  module = serving_module.ScoreModule(state.ema_model,
                                      config.replace(export={'signatures': 'sample'}),
                                      state.sigmas)
  assert module.signature_names == ('score', 'sample')
  assert sorted(module.signatures()) == ['sample', 'score', 'serving_default']
  assert not hasattr(module, 'score_sigma')


def test_export_signatures_refuses_an_unknown_name_before_anything_runs(tmp_path):
  result = run_cli(f'--flagfile={REPO_ROOT}/tf_configs/toy_gmm.cfg', f'--workdir={tmp_path}/run',
                   '--export_signatures=score,smaple')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "error: --export_signatures: unknown signature 'smaple'; choose from score,score_sigma,"
      'sample,inpaint,colorize,log_likelihood,sample_class'], result.stderr[-2000:]
  assert not os.path.exists(tmp_path / 'run')


def test_export_signatures_refuses_a_name_the_run_cannot_serve_and_writes_nothing(tmp_path):
  # A toy has no images to inpaint: refused when the export is built, before any file.
  config, state = _trained(tmp_path)
  config = config.replace(export={'signatures': 'score,inpaint'})
  with pytest.raises(config_lib.ConfigError,
                     match="^--export_signatures: 'inpaint' does not apply to this run; it can "
                           'serve score,score_sigma,sample$'):
    export_lib.export(state.ema_model, config, state.sigmas)
  assert os.listdir(config.export.export_dir) == []
