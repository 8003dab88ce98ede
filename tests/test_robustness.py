"""Kills, preemption, NaNs: real subprocesses, real signals, real files.

Each test runs training in a separate Python process (op determinism is a
process-wide switch, and SIGKILL must hit a real process), and always kills
what it started.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT
from tensorboard.backend.event_processing import event_accumulator
from test_train_lib import tiny_config

from ncsn_tf import losses
from ncsn_tf.runtime import checkpoints
from ncsn_tf.runtime import devices
from ncsn_tf.training import loop as train_loop

TOY = {'name': 'toy', 'data': {'dataset': 'gmm'},
       'model': {'name': 'mlp', 'sigma_begin': 10.0, 'sigma_end': 1.0, 'num_scales': 4, 'ngf': 32,
                 'num_layers': 2},
       'train': {'batch_size': 32, 'train_steps': 3000, 'snapshot_freq': 100, 'log_freq': 50,
                 'ema_rate': 0.9, 'heldout_batches': 0, 'deterministic': True,
                 'max_chunk_steps': 25}}
SHAPES = {'name': 'shapes', 'data': {'dataset': 'shapes', 'image_size': 16},
          'model': {'name': 'refinenet', 'sigma_begin': 1.0, 'sigma_end': 0.01, 'num_scales': 4,
                    'ngf': 4},
          'train': {'batch_size': 4, 'train_steps': 12, 'snapshot_freq': 4, 'log_freq': 4,
                    'ema_rate': 0.9, 'heldout_batches': 0, 'deterministic': True,
                    'max_chunk_steps': 2, 'precision': 'float32'}}

# Trains a Config given as JSON (group -> fields) and saves the final weights.
DRIVER = """
import json, os, sys
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import numpy as np
from absl import logging
from ncsn_tf import config as config_lib
from ncsn_tf.training import loop as train_loop
logging.set_verbosity(logging.INFO)
spec = json.loads(sys.argv[1])
groups = {k: v for k, v in spec.items() if isinstance(v, dict)}
config = config_lib.validate(config_lib.Config(**{k: v for k, v in spec.items() if k not in groups})
                             .replace(**groups))
state = train_loop.train(config)
np.savez(sys.argv[2], *[w.numpy() for w in state.model.weights + state.ema_model.weights],
         step=int(state.step.numpy()))
"""

# Exports the same model again and again until killed.
EXPORT_LOOP = """
import json, os, sys
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from ncsn_tf import config as config_lib
from ncsn_tf.runtime import checkpoints, devices
from ncsn_tf.serving import export as export_lib
config = config_lib.Config.from_dict(json.load(open(sys.argv[1])))
state = checkpoints.create_state(config, devices.make_strategy())
while True:
  export_lib.export(state.ema_model, config, state.sigmas)
"""


def _spec(base, tmp_path, name, **train):
  spec = json.loads(json.dumps(base))
  spec['workdir'] = str(tmp_path / name)
  spec['export'] = {'export_dir': str(tmp_path / (name + '_export'))}
  spec['train'].update(train)
  return spec


def _env():
  return {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', 'PYTHONPATH': REPO_ROOT}


def _start(code, *args):
  return subprocess.Popen([sys.executable, '-c', code, *args], cwd=REPO_ROOT, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=300):
  try:
    out, err = proc.communicate(timeout=timeout)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  return proc.returncode, out, err


def _wait_for(predicate, proc, timeout=180):
  deadline = time.time() + timeout
  while not predicate():
    if proc.poll() is not None:
      raise AssertionError(f'process ended early: {proc.communicate()[1][-3000:]}')
    if time.time() > deadline:
      proc.kill()
      proc.wait()
      raise AssertionError('timed out waiting for the process')
    time.sleep(0.05)


def _checkpoints(workdir):
  return sorted(int(p.rsplit('-', 1)[1].split('.')[0])
                for p in glob.glob(os.path.join(workdir, 'checkpoints', 'ckpt-*.index')))


def _latest_step(workdir):
  """The step of the checkpoint the `checkpoint` state file names (written last), or 0."""
  latest = tf.train.latest_checkpoint(os.path.join(workdir, 'checkpoints'))
  return int(latest.rsplit('-', 1)[1]) if latest else 0


def _kill_resume_and_compare(spec_straight, spec_split, kill_after_step, tmp_path):
  """Uninterrupted run vs a run SIGKILLed after a checkpoint, then rerun."""
  straight = _start(DRIVER, json.dumps(spec_straight), str(tmp_path / 'straight.npz'))
  split_args = (json.dumps(spec_split), str(tmp_path / 'split.npz'))
  victim = _start(DRIVER, *split_args)
  try:
    _wait_for(lambda: _latest_step(spec_split['workdir']) >= kill_after_step, victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    assert victim.returncode == -signal.SIGKILL
    killed_at = _latest_step(spec_split['workdir'])
    assert killed_at < spec_split['train']['train_steps'], 'finished before the kill'
    rc, _, err = _finish(_start(DRIVER, *split_args))
    assert rc == 0, err[-3000:]
    assert 'resumed from' in err and f'at step {killed_at}' in err
    rc, _, err = _finish(straight)
    assert rc == 0, err[-3000:]
  finally:
    for proc in (straight, victim):
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  a, b = np.load(tmp_path / 'straight.npz'), np.load(tmp_path / 'split.npz')
  assert int(a['step']) == int(b['step']) == spec_split['train']['train_steps']
  assert len(a.files) == len(b.files) > 4
  for key in a.files:  # Bit for bit: op determinism and an exact data position.
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_kill9_then_rerun_resumes_and_equals_an_uninterrupted_run_toy(tmp_path):
  _kill_resume_and_compare(_spec(TOY, tmp_path, 'straight'), _spec(TOY, tmp_path, 'split'), 100,
                           tmp_path)


# Three RefineNet traces: about a minute on an idle 2-core CPU (122 s in make test).
# The toy test above covers kill -9 and the bit-exact resume; tests/test_digits.py
# the in-memory image stream's exact replay on resume.
@pytest.mark.slow
def test_kill9_then_rerun_resumes_and_equals_an_uninterrupted_run_shapes(tmp_path):
  _kill_resume_and_compare(_spec(SHAPES, tmp_path, 'straight'), _spec(SHAPES, tmp_path, 'split'),
                           4, tmp_path)


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_save_at_the_current_step_and_exit_cleanly(tmp_path, sig):
  workdir = tmp_path / 'run'
  args = [sys.executable, os.path.join(REPO_ROOT, 'run.py'), '--dataset=gmm', '--model=mlp',
          '--ngf=16', '--num_layers=1', '--num_scales=4', '--sigma_begin=10', '--batch_size=16',
          '--train_steps=10000000', '--snapshot_freq=200', '--log_freq=1000', '--max_chunk_steps=7',
          '--heldout_batches=0', f'--workdir={workdir}', f'--export_dir={tmp_path}/export']
  proc = subprocess.Popen(args, cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    _wait_for(lambda: _checkpoints(workdir), proc)
    time.sleep(1.0)  # Mid-way between snapshots.
    proc.send_signal(sig)
    rc, _, err = _finish(proc, timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert rc == 128 + sig, err[-3000:]
  assert 'Traceback' not in err
  line = [l for l in err.splitlines() if l.startswith('stopped: ')]
  assert len(line) == 1, err[-3000:]
  assert f'stopped by {signal.Signals(sig).name} at step' in line[0]
  step = int(line[0].split(' at step ')[1].split(':')[0])
  # Saved at the step it stopped (runs in chunks of at most 7), usually
  # past the last snapshot.
  assert _checkpoints(workdir)[-1] == step >= 200
  assert tf.train.latest_checkpoint(str(workdir / 'checkpoints')).endswith(f'ckpt-{step}')
  assert 'run the same command again to resume' in line[0]


def _poisoned_loss(first_bad_step, replicas=2):
  base = losses.anneal_dsm_per_example

  def poisoned(score_fn, x, sigmas, seed):
    loss, index = base(score_fn, x, sigmas, seed)
    # NaN at the smallest σ on steps [first_bad_step, first_bad_step + 5)
    # (the seed's second entry is step * replicas + replica).
    step = seed[1] // replicas
    bad = (step >= first_bad_step) & (step < first_bad_step + 5) & tf.equal(index, len(sigmas) - 1)
    return tf.where(bad, np.nan, loss), index

  return poisoned


def test_skip_nonfinite_skips_steps_keeps_weights_finite_and_counts_them(tmp_path, monkeypatch):
  monkeypatch.setitem(losses.LOSSES, 'anneal_dsm', _poisoned_loss(12))
  config = tiny_config(tmp_path, num_cpu_replicas=2, ema_rate=0.9, skip_nonfinite=True)
  state = train_loop.train(config)
  assert int(state.step.numpy()) == 40
  for w in state.model.weights + state.ema_model.weights:
    assert np.all(np.isfinite(w.numpy()))
  acc = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'),
                                           size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  skipped = {e.step: float(tf.make_ndarray(e.tensor_proto))
             for e in acc.Tensors('nonfinite_skipped_steps')}
  # batch 32 over 4 levels: the smallest σ is drawn on every one of those steps.
  assert skipped == {10: 0.0, 20: 5.0, 30: 0.0, 40: 0.0}
  losses_logged = [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors('loss')]
  assert np.all(np.isfinite(losses_logged))


def test_skipped_steps_leave_weights_and_optimizer_untouched(tmp_path, monkeypatch):
  """A run whose steps 10-14 are all NaN equals one that never applied them."""
  monkeypatch.setitem(losses.LOSSES, 'anneal_dsm', _poisoned_loss(10, replicas=1))
  config = tiny_config(tmp_path, skip_nonfinite=True, train_steps=10, snapshot_freq=10)
  before = train_loop.train(config)
  weights = [w.numpy() for w in before.model.weights]
  iterations = int(before.optimizer.iterations.numpy())
  after = train_loop.train(config.replace(train={'train_steps': 15}))
  assert int(after.step.numpy()) == 15
  assert int(after.optimizer.iterations.numpy()) == iterations
  for a, b in zip(weights, after.model.weights):
    np.testing.assert_array_equal(a, b.numpy())


def test_nonfinite_default_stops_and_the_last_good_checkpoint_stays_latest(tmp_path, monkeypatch):
  monkeypatch.setitem(losses.LOSSES, 'anneal_dsm', _poisoned_loss(33))
  config = tiny_config(tmp_path, num_cpu_replicas=2)
  with pytest.raises(train_loop.NonFiniteLossError, match=r'step 33 in σ level 3 .*ckpt-20'):
    train_loop.train(config)
  assert _checkpoints(str(tmp_path)) == [20]


def _complete(version_dir):
  return (os.path.isfile(os.path.join(version_dir, 'saved_model.pb'))
          and os.path.isfile(os.path.join(version_dir, 'variables', 'variables.index')))


def test_kill9_during_export_leaves_only_complete_versions(tmp_path):
  config = tiny_config(tmp_path / 'run', train_steps=0)
  checkpoints.write_config_json(config)
  export_dir = config.export.export_dir
  proc = _start(EXPORT_LOOP, str(tmp_path / 'run' / 'config.json'))
  try:
    # Kill while the third version is being written (a temporary dir exists).
    _wait_for(lambda: os.path.isdir(os.path.join(export_dir, '2')) and any(
        name.startswith('.tmp-') for name in os.listdir(export_dir)), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  names = os.listdir(export_dir)
  versions = [n for n in names if n.isdigit()]
  assert len(versions) >= 2 and all(_complete(os.path.join(export_dir, v)) for v in versions)
  assert all(n.isdigit() or n.startswith('.tmp-') for n in names)  # TF Serving skips .tmp-.
  for v in versions:
    tf.saved_model.load(os.path.join(export_dir, v))
  # The next export clears the dead process's temporary directory.
  from ncsn_tf.serving import export as export_lib
  state = checkpoints.create_state(config, devices.make_strategy())
  export_lib.export(state.ema_model, config, state.sigmas)
  assert sorted(os.listdir(export_dir), key=int) == [str(v) for v in range(1, len(versions) + 2)]


def test_resume_refuses_a_workdir_of_a_different_model(tmp_path):
  train_loop.train(tiny_config(tmp_path, train_steps=10, snapshot_freq=10))
  with pytest.raises(checkpoints.ConfigMismatchError) as info:
    train_loop.train(tiny_config(tmp_path, train_steps=20, batch_size=16).replace(
        model={'ngf': 16}))
  message = str(info.value)
  assert '\n' not in message
  assert "--ngf 32 -> 16" in message and '--batch_size 32 -> 16' in message
  assert 'new --workdir' in message
  assert _checkpoints(str(tmp_path)) == [10]  # Nothing lost.
  # Safe fields (length, frequencies, sampling, export) may change.
  state = train_loop.train(tiny_config(tmp_path, train_steps=20, log_freq=5).replace(
      sampling={'num_samples': 3}))
  assert int(state.step.numpy()) == 20
