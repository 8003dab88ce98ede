"""Exports as a model server loads them: the session-based loader and saved_model_cli.

TF Serving's C++ `LoadSavedModel` restores the variables through the
SavedModel's saver into a session and runs each signature's graph; that is
`tf.compat.v1.saved_model.loader.load` in Python and what `saved_model_cli run`
does. `tf.saved_model.load` (the TF2 object graph) restores variables by object
and can pass where a server fails, so every signature is run through both, in a
fresh process, and the answers must agree for the same inputs and seed.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT
from test_image_training import config_from_flagfile
from test_train_lib import tiny_config

from ncsn_tf.sampling import guidance
from ncsn_tf.serving import docs as serving_docs
from ncsn_tf.serving import export as export_lib
from ncsn_tf.serving import signatures
from ncsn_tf.training import loop as train_loop

# Runs every signature of the export at argv[1] with the inputs in argv[2]
# (an .npz of `<signature>/<input>` arrays) through both loaders, in a process
# that has never seen the model, and writes `<loader>/<signature>/<output>`.
TWO_LOADERS_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
path, inputs_path, out_path = sys.argv[1:4]
arrays = np.load(inputs_path)
inputs = {}
for key in arrays.files:
  signature, name = key.split('/')
  inputs.setdefault(signature, {})[name] = arrays[key]
results = {}

loaded = tf.saved_model.load(path)
for signature, feed in inputs.items():
  outputs = loaded.signatures[signature](**{k: tf.constant(v) for k, v in feed.items()})
  for name, value in outputs.items():
    results[f'object_graph/{signature}/{name}'] = value.numpy()

with tf.Graph().as_default(), tf.compat.v1.Session() as session:
  meta_graph = tf.compat.v1.saved_model.loader.load(session, ['serve'], path)
  for signature, feed in inputs.items():
    definition = meta_graph.signature_def[signature]
    fetches = {name: info.name for name, info in definition.outputs.items()}
    feed_dict = {definition.inputs[k].name: v for k, v in feed.items()}
    for name, value in session.run(fetches, feed_dict).items():
      results[f'session/{signature}/{name}'] = value
np.savez(out_path, **results)
"""


def _toy_export(tmp_path):
  """The toy ladder MLP, exported with a (small, untrained) noise-conditional classifier:
  `sample_class` is classifier-guided annealed Langevin, and the classifier's variables
  must reach both loaders. (The CLI guides only labelled datasets; the module takes any
  classifier, and a toy's graph is the cheapest to save and load.)"""
  from ncsn_tf.models.classifier import NoiseConditionalMLPClassifier
  config = tiny_config(tmp_path / 'toy', train_steps=10, ema_rate=0.9)
  state = train_loop.train(config)
  classifier = guidance.Classifier(NoiseConditionalMLPClassifier(
      num_classes=2, data_dim=2, hidden_units=8, num_layers=1).build_for(), num_classes=2)
  rng = np.random.default_rng(0)
  inputs = {
      'score/x': rng.normal(scale=5, size=(6, 2)).astype(np.float32),
      'score/sigma_index': (np.arange(6) % 4).astype(np.int32),
      'sample/num_samples': np.int32(5), 'sample/seed': np.int32(1),
      'sample_class/labels': np.array([0, 1, 1], np.int32),
      'sample_class/guidance_scale': np.float32(2.0), 'sample_class/seed': np.int32(3)}
  path = export_lib.export(state.ema_model, config, state.sigmas, classifier=classifier)
  return path, _with_serving_default(inputs, state)


def _image_export(tmp_path):
  config = config_from_flagfile(
      'shapes', '--ngf=4', '--image_size=16', '--num_scales=3', '--n_steps_each=2',
      '--train_steps=2', '--batch_size=4', '--heldout_batches=0', '--summary_samples=0',
      f'--workdir={tmp_path}/shapes', f'--export_dir={tmp_path}/shapes_export')
  state = train_loop.train(config)
  rng = np.random.default_rng(1)
  images = rng.random((2, 16, 16, 3)).astype(np.float32)
  mask = np.zeros_like(images)
  mask[:, :, :8] = 1.0
  inputs = {
      'score/x': images, 'score/sigma_index': np.array([0, 2], np.int32),
      'sample/num_samples': np.int32(3), 'sample/seed': np.int32(4),
      'inpaint/images': images, 'inpaint/mask': mask, 'inpaint/seed': np.int32(5),
      # Grey input: the spec's open channel axis takes 1 (grey) or 3 (RGB).
      'colorize/images': images.mean(-1, keepdims=True), 'colorize/seed': np.int32(7)}
  return export_lib.export(state.ema_model, config, state.sigmas), _with_serving_default(inputs, state)


def _sde_toy_export(tmp_path):
  """The continuous VE toy (toy_gmm_sde.cfg): `sample` is the probability-flow ODE."""
  config = config_from_flagfile(
      'toy_gmm_sde', '--train_steps=20', '--snapshot_freq=20', '--heldout_batches=0',
      '--ode_rtol=1e-3', '--ode_atol=1e-3', f'--workdir={tmp_path}/sde',
      f'--export_dir={tmp_path}/sde_export')
  state = train_loop.train(config)
  rng = np.random.default_rng(2)
  inputs = {
      'score/x': rng.normal(scale=5, size=(4, 2)).astype(np.float32),
      'score/sigma_index': np.array([0, 5, 10, 19], np.int32),
      'sample/num_samples': np.int32(6), 'sample/seed': np.int32(2)}
  inputs = _with_serving_default(inputs, state)
  inputs['score_sigma/sigma'] = np.array([0.013, 0.5, 3.7, 19.0], np.float32)  # Off the ladder.
  inputs['log_likelihood/x'] = inputs['score/x'][:3]
  inputs['log_likelihood/seed'] = np.int32(0)
  return export_lib.export(state.score_model, config, state.sigmas), inputs


def _with_serving_default(inputs, state):
  """`serving_default` is `score`: feed it the same inputs; `score_sigma` the
  same x at the same levels' σ (a ladder network answers on its ladder)."""
  return {**inputs, **{f'serving_default/{k}': inputs[f'score/{k}'] for k in ('x', 'sigma_index')},
          'score_sigma/x': inputs['score/x'],
          'score_sigma/sigma': np.asarray(state.sigmas, np.float32)[inputs['score/sigma_index']]}


def _run_both_loaders(path, inputs, tmp_path):
  np.savez(tmp_path / 'inputs.npz', **inputs)
  out = subprocess.run([sys.executable, '-c', TWO_LOADERS_SCRIPT, path, str(tmp_path / 'inputs.npz'),
                        str(tmp_path / 'outputs.npz')], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  return dict(np.load(tmp_path / 'outputs.npz'))


_MAKERS = {'toy': _toy_export, 'image': _image_export, 'sde_toy': _sde_toy_export}


@pytest.mark.parametrize('kind', sorted(_MAKERS))
def test_the_export_serves_through_the_model_server_path(kind, tmp_path):
  """One export per kind (a toy, a ladder image model, the continuous VE toy),
  checked every way a server or its user reaches it. One test per export, so
  that test processes running side by side do not each rebuild it."""
  path, inputs = _MAKERS[kind](tmp_path)
  (tmp_path / 'answers').mkdir()
  results = _run_both_loaders(path, inputs, tmp_path / 'answers')
  _check_every_signature_answers_as_through_tf2(kind, inputs, results)
  _check_saved_model_cli_runs_score_and_sample(path, inputs, results, tmp_path)
  _check_the_documented_serving_contract_matches_the_export(path)
  if kind == 'toy':
    _check_saved_model_cli_prints_the_samples_of_the_readme_command(path)
  if kind == 'sde_toy':
    _check_saved_model_cli_show_lists_the_sde_signatures_and_the_sampler(path)
  if kind == 'image':
    _check_bad_condition_inputs_fail_before_sampling(path, inputs)


def _check_every_signature_answers_as_through_tf2(kind, inputs, results):
  signatures = {key.split('/')[0] for key in inputs}
  expected = {'score', 'score_sigma', 'sample', 'serving_default'} | (
      {'inpaint', 'colorize'} if kind == 'image' else set()) | (
      {'sample_class'} if kind == 'toy' else set()) | (
      {'log_likelihood'} if kind == 'sde_toy' else set())
  assert signatures == expected  # Every signature of the export is exercised.
  session_keys = sorted(k for k in results if k.startswith('session/'))
  assert [k.split('/', 1)[1] for k in session_keys] == sorted(
      k.split('/', 1)[1] for k in results if k.startswith('object_graph/'))
  for key in session_keys:
    # Same graph, same weights, same stateless seeds: the two loaders run the
    # same ops, so they agree to float32 round-off of kernel choice.
    np.testing.assert_allclose(results[key], results['object_graph/' + key.split('/', 1)[1]],
                               rtol=1e-5, atol=1e-5, err_msg=key)
    assert np.all(np.isfinite(results[key])), key
  assert results['session/sample/samples'].shape[0] == int(inputs['sample/num_samples'])
  if 'colorize/images' in inputs:  # Grey in, RGB out.
    assert results['session/colorize/colorized'].shape == inputs['colorize/images'].shape[:-1] + (3,)
  if 'sample_class/labels' in inputs:  # One sample per requested label.
    assert results['session/sample_class/samples'].shape == (
        len(inputs['sample_class/labels']),) + inputs['score/x'].shape[1:]
  if kind != 'sde_toy':  # On the ladder, the σ signature is the index signature:
    # the same network at the same level, up to the image model's bfloat16
    # round-off (two graphs may order its sums differently; measured 0.012
    # at scores of about 0.4).
    index_score = results['session/score/score']
    atol = 1e-6 if kind == 'toy' else 0.05 * np.abs(index_score).max()
    np.testing.assert_allclose(results['session/score_sigma/score'], index_score, atol=atol)


def _saved_model_cli(*args):
  cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
  return subprocess.run([cli, *args], capture_output=True, text=True,
                        env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})


def _cli_run(path, signature, input_exprs, outdir):
  result = _saved_model_cli('run', '--dir', path, '--tag_set', 'serve', '--signature_def', signature,
                            '--input_exprs', input_exprs, '--outdir', str(outdir), '--overwrite')
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _check_saved_model_cli_runs_score_and_sample(path, inputs, reference, tmp_path):
  x, index = inputs['score/x'], inputs['score/sigma_index']
  np.save(tmp_path / 'x.npy', x)
  np.save(tmp_path / 'index.npy', index)
  # --inputs reads .npy files; --input_exprs takes Python literals.
  score = _saved_model_cli('run', '--dir', path, '--tag_set', 'serve', '--signature_def', 'score',
                           '--inputs', f'x={tmp_path}/x.npy;sigma_index={tmp_path}/index.npy',
                           '--outdir', str(tmp_path / 'score'), '--overwrite')
  assert score.returncode == 0, score.stderr[-3000:]
  np.testing.assert_allclose(np.load(tmp_path / 'score' / 'score.npy'),
                             reference['object_graph/score/score'], rtol=1e-5, atol=1e-5)
  num, seed = int(inputs['sample/num_samples']), int(inputs['sample/seed'])
  _cli_run(path, 'sample', f'num_samples={num};seed={seed}', tmp_path / 'sample')
  np.testing.assert_allclose(np.load(tmp_path / 'sample' / 'samples.npy'),
                             reference['object_graph/sample/samples'], rtol=1e-5, atol=1e-5)


def _check_saved_model_cli_prints_the_samples_of_the_readme_command(path):
  result = _saved_model_cli('run', '--dir', path, '--tag_set', 'serve', '--signature_def', 'sample',
                            '--input_exprs', 'num_samples=5;seed=1')
  assert result.returncode == 0, result.stderr[-3000:]
  printed = result.stdout.split('Result for output key samples:')[1]
  rows = re.findall(r'\[\s*(-?[\d.e+-]+)\s+(-?[\d.e+-]+)\s*\]', printed)
  assert len(rows) == 5


def _documented_signatures():
  """{signature: {'inputs': {name: dtype}, 'outputs': {...}}} from saved_models/README.md's
  table (generated from the registry: tests/test_serving_docs.py; read here as a user
  reads it, to check it against what the exports serve)."""
  with open(os.path.join(REPO_ROOT, 'saved_models', 'README.md')) as f:
    text = f.read()
  table = text.split(serving_docs.BEGIN, 1)[1].split(serving_docs.END, 1)[0].strip()
  documented = {}
  for line in table.splitlines()[2:]:
    cells = [c.strip() for c in line.strip('|').split('|')]
    # The signature, and `serving_default` where the cell says "(= `serving_default`)".
    names = re.findall(r'^`(\w+)`|= `(\w+)`', cells[0])
    names = [a or b for a, b in names]
    entry = {side: dict(re.findall(r'`(\w+)` (\w+)', cell))
             for side, cell in (('inputs', cells[1]), ('outputs', cells[2]))}
    for name in names:
      documented[name] = entry
  return documented


def _check_the_documented_serving_contract_matches_the_export(path):
  documented = _documented_signatures()
  with tf.Graph().as_default(), tf.compat.v1.Session() as session:
    meta_graph = tf.compat.v1.saved_model.loader.load(session, ['serve'], path)
  assert meta_graph.signature_def, path
  for name, definition in meta_graph.signature_def.items():
    if name.startswith('__'):  # The SavedModel's own init op, not a serving signature.
      continue
    assert name in documented, f'signature {name!r} is not documented in saved_models/README.md'
    for side in ('inputs', 'outputs'):
      actual = {k: tf.dtypes.as_dtype(v.dtype).name for k, v in getattr(definition, side).items()}
      assert actual == documented[name][side], (name, side)


def test_the_documented_rest_requests_name_real_inputs():
  with open(os.path.join(REPO_ROOT, 'saved_models', 'README.md')) as f:
    text = f.read()
  documented = _documented_signatures()
  bodies = re.findall(r"-d '(\{.*?\})'", text)
  assert bodies, 'saved_models/README.md shows no REST request'
  for body in bodies:
    request = json.loads(body)
    signature = request.get('signature_name', 'serving_default')
    assert set(request['inputs']) == set(documented[signature]['inputs']), body


def _check_saved_model_cli_show_lists_the_sde_signatures_and_the_sampler(path):
  shown = _saved_model_cli('show', '--dir', path, '--all')
  assert shown.returncode == 0, shown.stderr[-2000:]
  for name in ('score', 'score_sigma', 'sample', 'serving_default', 'log_likelihood'):
    assert f"signature_def['{name}']" in shown.stdout
  loaded = tf.saved_model.load(path)
  assert loaded.sampler.numpy().decode().startswith('ode(rtol=0.001, atol=0.001')


def _check_bad_condition_inputs_fail_before_sampling(path, inputs):
  """A mask of the wrong shape or with NaN, images outside [0, 1], more images than the
  export's max_batch (default 1024), a colourisation input that is neither grey nor RGB:
  each one error naming the signature and what is wrong."""
  loaded = tf.saved_model.load(path)
  images, mask, seed = inputs['inpaint/images'], inputs['inpaint/mask'], tf.constant(0)
  many = np.zeros((1025,) + images.shape[1:], np.float32)
  for signature, feed, message in (
      ('inpaint', dict(images=many, mask=many), 'inpaint: the batch of images must be in [1, 1024]'),
      ('inpaint', dict(images=images, mask=mask * np.nan), 'inpaint: mask must be 0 (unknown) or 1'),
      ('colorize', dict(images=many), 'colorize: the batch of images must be in [1, 1024]'),
      ('inpaint', dict(images=images, mask=mask[:1]), 'inpaint: images and mask need the same shape'),
      ('inpaint', dict(images=images, mask=0.5 * mask), 'inpaint: mask must be 0 (unknown) or 1'),
      ('inpaint', dict(images=images + 1.0, mask=mask), 'inpaint: images must be in [0, 1]'),
      ('colorize', dict(images=images[..., :2]), 'colorize: images need 1 (grey) or 3 (RGB) channels'),
      ('colorize', dict(images=-images), 'colorize: images must be in [0, 1]')):
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
      loaded.signatures[signature](**{k: tf.constant(v) for k, v in feed.items()}, seed=seed)


def _score_norm(context, x, sigma_index):
  """‖s(x, σ_i)‖ float32 [N]: a signature as a module outside the package adds one."""
  score = context.score_model.score_index(x, sigma_index)
  return {'score_norm': tf.norm(tf.reshape(score, [tf.shape(x)[0], -1]), axis=1)}


SCORE_NORM = signatures.Signature(
    name='score_norm', fn=_score_norm,
    input_specs=lambda context: [context.x_spec(), context.sigma_index_spec()],
    inputs='`x` float32 [N, *data_shape], `sigma_index` int32 [N]',
    outputs='`score_norm` float32 [N]', doc='The score\'s norm per example.')


@pytest.fixture
def score_norm_registered():
  """SCORE_NORM in the registry for one test (the registry is the process's)."""
  signatures.register(SCORE_NORM)
  try:
    yield SCORE_NORM
  finally:
    signatures.unregister(SCORE_NORM.name)


def test_a_signature_registered_from_outside_is_exported_and_served(score_norm_registered,
                                                                     tmp_path):
  """One `register` call from outside the package: the export has the signature, and
  the session loader (TF Serving's) restores the variables it reads and answers."""
  config = tiny_config(tmp_path / 'toy', train_steps=2)
  state = train_loop.train(config)
  path = export_lib.export(state.ema_model, config, state.sigmas)
  x = np.random.default_rng(3).normal(scale=5, size=(5, 2)).astype(np.float32)
  index = (np.arange(5) % 4).astype(np.int32)
  results = _run_both_loaders(path, {'score_norm/x': x, 'score_norm/sigma_index': index},
                              tmp_path)
  expected = np.linalg.norm(state.ema_model(x, index).numpy(), axis=1)
  for loader in ('session', 'object_graph'):
    np.testing.assert_allclose(results[f'{loader}/score_norm/score_norm'], expected,
                               rtol=1e-5, err_msg=loader)
