"""docs/extending.md's worked example, as written: a dataset, an SDE, a sampler and a served
signature in one module outside the package, registered through --extensions.

The page's Python blocks are written to a file and `run.py` trains with them (the
page's command, shrunk); the run's config.json names the module, so --mode=sample
on the workdir imports it again; the export is loaded in a fresh process by the
session loader (TF Serving's path), which runs the new signature and the samples of
the new sampler without the module.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from tensorflow.core.protobuf import saved_model_pb2
from conftest import REPO_ROOT
from test_cli import run_cli

PAGE = os.path.join(REPO_ROOT, 'docs', 'extending.md')
# The page's command with its work shrunk: a tiny U-Net, a few steps and samples, and
# the export cut to the signatures checked here (the image likelihood's would
# double this file's time; tests/test_serving.py serves every builtin one).
SMOKE = ('--ngf=4', '--train_minutes=0', '--train_steps=4', '--snapshot_freq=4', '--log_freq=2',
         '--heldout_batches=1', '--num_samples=6', '--sample_batch_size=6', '--sampling_steps=3',
         '--num_scales=10', '--n_steps_each=1', '--export_signatures=score_norm,sample')

SESSION_SCRIPT = """
import sys, numpy as np, tensorflow as tf
path = sys.argv[1]
with tf.Graph().as_default(), tf.compat.v1.Session() as session:
  meta_graph = tf.compat.v1.saved_model.loader.load(session, ['serve'], path)
  def run(name, **inputs):
    sig = meta_graph.signature_def[name]
    feed = {sig.inputs[k].name: v for k, v in inputs.items()}
    return session.run({k: v.name for k, v in sig.outputs.items()}, feed)
  x = np.random.default_rng(0).uniform(0, 1, [3, 8, 8, 1]).astype(np.float32)
  norms = run('score_norm', x=x, sigma_index=np.array([0, 4, 9], np.int32))['score_norm']
  scores = run('score', x=x, sigma_index=np.array([0, 4, 9], np.int32))['score']
  samples = run('sample', num_samples=np.int32(5), seed=np.int32(1))['samples']
  np.savez(sys.argv[2], norms=norms, scores=scores, samples=samples)
"""


def _extension_module(tmp_path) -> str:
  """The page's Python blocks, in order, as one file (what a user saves as my_extension.py)."""
  text = open(PAGE, encoding='utf-8').read()
  blocks = re.findall(r'```python\n(.*?)```', text, re.S)
  assert len(blocks) == 4, 'the page shows a dataset, an SDE, a sampler and a signature'
  path = tmp_path / 'my_extension.py'
  path.write_text('\n\n'.join(blocks))
  return str(path)


def _documented_command() -> list:
  """The flags of the page's `python run.py ...` command."""
  text = open(PAGE, encoding='utf-8').read()
  command = re.search(r'```bash\n(python run\.py .*?)```', text, re.S).group(1)
  return command.replace('\\\n', ' ').split()[2:]


@pytest.fixture(scope='module', name='extended_run')
def _extended_run(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp('extending')
  module = _extension_module(tmp_path)
  flags = [f.replace('my_extension.py', module) if f.startswith('--extensions=') else f
           for f in _documented_command()]
  flags = [f for f in flags if not f.startswith('--workdir=')]
  workdir, export_dir = tmp_path / 'run', tmp_path / 'export'
  result = run_cli(*flags, f'--workdir={workdir}', f'--export_dir={export_dir}', *SMOKE)
  assert result.returncode == 0, result.stderr[-3000:]
  return tmp_path, workdir, export_dir, module


def test_the_documented_command_trains_samples_and_exports_with_the_extension(extended_run):
  _, workdir, export_dir, module = extended_run
  config = json.load(open(workdir / 'config.json'))
  assert (config['data']['dataset'], config['model']['sde'], config['sampling']['sampler']) == (
      'stripes', 'velinear', 'euler')
  assert config['extensions'] == module
  samples = np.load(workdir / 'samples' / 'latest' / 'samples.npz')['samples']
  assert samples.shape == (6, 8, 8, 1) and np.all(np.isfinite(samples))
  guided = np.load(workdir / 'samples_guided' / 'latest' / 'samples.npz')
  assert guided['samples'].shape[1:] == (8, 8, 1) and set(guided['labels']) == {0, 1}
  assert os.listdir(export_dir) == ['1']
  # --export_signatures: the two named and `score` (serving_default), read from the proto.
  proto = saved_model_pb2.SavedModel.FromString((export_dir / '1' / 'saved_model.pb').read_bytes())
  served = sorted(k for k in proto.meta_graphs[0].signature_def if not k.startswith('__'))
  assert served == ['sample', 'score', 'score_norm', 'serving_default']


def test_a_later_mode_on_the_workdir_imports_the_extension_again(extended_run):
  tmp_path, workdir, _, module = extended_run
  # --mode=sample with the saved flags: the registries must hold 'stripes',
  # 'velinear' and 'euler' again in this fresh process.
  result = run_cli(*[f.replace('my_extension.py', module) for f in _documented_command()
                     if not f.startswith('--workdir=')],
                   f'--workdir={workdir}', *SMOKE, '--mode=sample', '--guidance=none',
                   '--num_samples=3', '--sample_batch_size=3')
  assert result.returncode == 0, result.stderr[-3000:]


def test_the_export_serves_the_new_signature_without_the_extension(extended_run, tmp_path):
  _, _, export_dir, _ = extended_run
  out = tmp_path / 'served.npz'
  run = subprocess.run([sys.executable, '-c', SESSION_SCRIPT, str(export_dir / '1'), str(out)],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
  assert run.returncode == 0, run.stderr[-3000:]
  served = np.load(out)
  expected = np.linalg.norm(served['scores'].reshape(3, -1), axis=1)
  np.testing.assert_allclose(served['norms'], expected, rtol=1e-5)
  assert served['samples'].shape == (5, 8, 8, 1) and np.all(np.isfinite(served['samples']))


def test_bad_extensions_fail_in_one_line(tmp_path):
  bad = tmp_path / 'broken.py'
  bad.write_text('raise RuntimeError("not today")\n')
  for spec, expected in ((str(bad), 'RuntimeError: not today'),
                         ('no_such_module_here', 'No module named'),
                         (str(tmp_path / 'missing.py'), 'is not a file')):
    result = run_cli(f'--flagfile={REPO_ROOT}/tf_configs/toy_gmm.cfg', f'--workdir={tmp_path}/w',
                     f'--extensions={spec}')
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: --extensions: '), result.stderr
    assert expected in lines[0]
  assert not os.path.exists(tmp_path / 'w')
