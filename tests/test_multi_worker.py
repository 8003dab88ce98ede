"""--strategy=multi_worker: two real worker processes on 127.0.0.1 via TF_CONFIG.

The toy and the shapes (RefineNet) configs each train on two workers, with
chief-only outputs and agreeing weights; the shapes test takes about a minute on
an idle 2-core machine (two RefineNet traces at once).
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

# modes.run_train (train, then chief-only sample/eval/export) with the state
# captured so the test can compare the workers' final weights.
WORKER = """
import json, os, sys
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import numpy as np
from ncsn_tf import config as config_lib
from ncsn_tf.cli import modes
from ncsn_tf.training import loop as train_loop
spec = json.loads(sys.argv[1])
groups = {k: v for k, v in spec.items() if isinstance(v, dict)}
config = config_lib.validate(config_lib.Config(**{k: v for k, v in spec.items() if k not in groups})
                             .replace(**groups))
captured = {}
train = train_loop.train
def capture(config, **kwargs):
  captured['state'] = train(config, **kwargs)
  return captured['state']
train_loop.train = capture
modes.run_train(config)
state = captured['state']
np.savez(sys.argv[2], *[w.numpy() for w in state.model.weights + state.ema_model.weights],
         step=int(state.step.numpy()), chief=state.chief)
"""

SAMPLING = {'n_steps_each': 3, 'num_samples': 16, 'sample_batch_size': 16, 'summary_samples': 0,
            'num_snapshots': 2}
TOY = {'name': 'toy', 'data': {'dataset': 'gmm'},
       'model': {'name': 'mlp', 'sigma_begin': 10.0, 'sigma_end': 1.0, 'num_scales': 4, 'ngf': 16,
                 'num_layers': 1},
       'train': {'batch_size': 16, 'train_steps': 30, 'snapshot_freq': 10, 'log_freq': 10,
                 'ema_rate': 0.9, 'heldout_batches': 1, 'strategy': 'multi_worker'},
       'sampling': SAMPLING}
SHAPES = {'name': 'shapes', 'data': {'dataset': 'shapes', 'image_size': 16},
          'model': {'name': 'refinenet', 'sigma_begin': 1.0, 'sigma_end': 0.01, 'num_scales': 4,
                    'ngf': 4},
          'train': {'batch_size': 4, 'train_steps': 6, 'snapshot_freq': 3, 'log_freq': 3,
                    'ema_rate': 0.9, 'heldout_batches': 1, 'strategy': 'multi_worker',
                    'precision': 'float32'},
          'sampling': SAMPLING}


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  try:
    for s in sockets:
      s.bind(('127.0.0.1', 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def _run_cluster(spec, tmp_path, timeout):
  ports = _free_ports(2)
  cluster = {'worker': [f'127.0.0.1:{p}' for p in ports]}
  procs = []
  try:
    for index in range(2):
      env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', 'PYTHONPATH': REPO_ROOT,
             'TF_CONFIG': json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': index}})}
      procs.append(subprocess.Popen(
          [sys.executable, '-c', WORKER, json.dumps(spec), str(tmp_path / f'worker{index}.npz')],
          cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
      _, err = proc.communicate(timeout=timeout)
      assert proc.returncode == 0, err[-4000:]
  finally:
    for proc in procs:  # Always reap: a lone worker would wait for its peer forever.
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  return [np.load(tmp_path / f'worker{i}.npz') for i in range(2)]


def _check(spec, tmp_path, timeout):
  spec = {**spec, 'workdir': str(tmp_path / 'run'),
          'export': {'export_dir': str(tmp_path / 'export')}}
  chief, worker = _run_cluster(spec, tmp_path, timeout)
  assert bool(chief['chief']) and not bool(worker['chief'])
  steps = spec['train']['train_steps']
  assert int(chief['step']) == int(worker['step']) == steps
  for key in chief.files:
    if key.startswith('arr_'):  # Synchronous all-reduce: identical weights on both workers.
      np.testing.assert_array_equal(chief[key], worker[key], err_msg=key)
  workdir = tmp_path / 'run'
  # Only the chief's outputs: no worker scratch checkpoints left, its events only.
  assert not [n for n in os.listdir(workdir) if n.startswith('.tmp-')]
  assert {'checkpoints', 'config.json', 'tensorboard', 'samples'} <= set(os.listdir(workdir))
  ckpts = sorted(n for n in os.listdir(workdir / 'checkpoints') if n.endswith('.index'))
  snapshot = spec['train']['snapshot_freq']
  assert ckpts == sorted(f'ckpt-{s}.index' for s in range(snapshot, steps + 1, snapshot))
  events = [n for n in os.listdir(workdir / 'tensorboard') if 'tfevents' in n]
  assert events and len({n.split('.')[-3] for n in events}) == 1  # One process (pid) wrote them.
  assert os.listdir(tmp_path / 'export') == ['1']


def test_toy_trains_on_two_workers_with_chief_only_outputs(tmp_path):
  _check(TOY, tmp_path, timeout=240)


# 136 s in make test; the toy test above covers the cluster, chief-only outputs and
# checkpoints, and tests/test_digits.py and tests/test_images.py the image input
# pipelines split across 2 input pipelines.
@pytest.mark.slow
def test_shapes_trains_on_two_workers_with_chief_only_outputs(tmp_path):
  _check(SHAPES, tmp_path, timeout=600)
