"""ncsn_tf from Python, as docs/python.md shows it: train, load a workdir or its export, then
sample, score, steer, inpaint, colourise and measure likelihoods.

The runs are conftest.py's tiny ones (trained by `ncsn_tf.train`); the export is
loaded in a fresh process (tests/pipeline_calls.py) with the checkpoint readers
disabled, and must give the workdir's answers to the same calls. The trained
models' quality (closed-form scores, mixture weights, sevens) is measured on
full runs in docs/python.md.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT

import ncsn_tf
import pipeline_calls
from ncsn_tf.sampling import conditions
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import inpainting
from ncsn_tf.serving import signatures

HELPER = os.path.join(os.path.dirname(__file__), 'pipeline_calls.py')


def _export_answers(kind, export_dir, tmp_path):
  out = tmp_path / 'export_answers.npz'
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join([REPO_ROOT, os.environ.get('PYTHONPATH', '')])}
  result = subprocess.run([sys.executable, HELPER, kind, export_dir, str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(out) as arrays:
    return {k: arrays[k] for k in arrays.files}


@pytest.fixture(scope='module')
def toy(toy_sde_run):
  workdir, _ = toy_sde_run
  return ncsn_tf.load(workdir)


@pytest.fixture(scope='module')
def digits(digits_run):
  return ncsn_tf.load(digits_run)


def test_train_returns_the_workdir_and_load_describes_the_run(toy_sde_run, toy):
  workdir, export_dir = toy_sde_run
  assert os.path.isfile(os.path.join(workdir, 'config.json')) and os.listdir(export_dir) == ['1']
  assert toy.source.kind == 'workdir' and toy.source.step == 40
  assert toy.data_shape == (2,) and toy.num_classes == 0
  assert toy.config.sampling.sampler == 'ode' and toy.config.model.sde == 've'
  assert type(toy.sde).__name__ == 'VESDE' and toy.sigmas.shape == (20,)
  assert toy.sigmas[0] == pytest.approx(20.0) and toy.sigmas[-1] == pytest.approx(0.01)
  assert 'workdir' in repr(toy) and 'ode(' in repr(toy)


def test_the_export_answers_as_the_workdir_in_a_fresh_process(toy_sde_run, toy, tmp_path):
  _, export_dir = toy_sde_run
  served = _export_answers('toy', export_dir, tmp_path)
  ours = pipeline_calls.toy_calls(toy)
  assert sorted(served) == sorted(ours)
  for name, value in ours.items():
    scale = max(1.0, float(np.abs(value).max()))
    # float32 round-off; an adaptive solver may take a step more or less.
    np.testing.assert_allclose(served[name], value, rtol=0, atol=2e-3 * scale, err_msg=name)
  for name in pipeline_calls.TOY_SAMPLERS:
    assert ours[f'sample_{name}'].shape == (32, 2) and np.all(np.isfinite(ours[f'sample_{name}']))
  assert np.all(np.isfinite(ours['log_prob_exact'])) and np.all(np.isfinite(ours['log_prob_probe']))


def test_an_export_answers_batches_over_its_request_cap_in_chunks(toy_sde_run, toy):
  """A sampler's or a score call's batch may exceed the export's --export_max_batch, which
  every signature call refuses: the export's network splits it, and answers as one call
  would, gradients included (the likelihood's divergence)."""
  _, export_dir = toy_sde_run
  served = ncsn_tf.load(export_dir)
  network = served._model.network
  assert network.max_batch == 1024  # --export_max_batch's default, stored in the export.
  x = tf.constant(np.random.default_rng(0).normal(size=[7, 2]) * 5, tf.float32)
  sigma = tf.constant(np.linspace(0.05, 10.0, 7), tf.float32)
  whole = network(x, sigma)
  network.max_batch = 3  # Chunks of 3, 3 and 1 (padded); the signature's own cap stays 1024.
  with tf.GradientTape() as tape:
    tape.watch(x)
    chunked = network(x, sigma)
    total = tf.reduce_sum(chunked * x)
  np.testing.assert_allclose(chunked.numpy(), whole.numpy(), rtol=1e-5, atol=1e-5)
  assert np.all(np.isfinite(tape.gradient(total, x).numpy()))
  np.testing.assert_allclose(served.score(x.numpy(), sigma.numpy()), toy.score(x.numpy(), sigma.numpy()),
                             rtol=1e-4, atol=1e-4)
  assert served.sample(8, sampler='heun', sampling_steps=4, seed=1).shape == (8, 2)


def test_samples_are_deterministic_in_the_seed_and_callbacks_see_each_step(toy):
  steps = []
  traced = toy.sample(16, sampler='pc', sampling_steps=7, seed=11,
                      callback=lambda step, x: steps.append((step, x.shape)))
  assert steps == [(k, (16, 2)) for k in range(1, 8)] and toy.nfe == 14
  first = toy.sample(16, sampler='pc', sampling_steps=7, seed=11)
  np.testing.assert_array_equal(toy.sample(16, sampler='pc', sampling_steps=7, seed=11), first)
  # The callback's graph is another trace: the same chain up to float32 round-off.
  np.testing.assert_allclose(traced, first, rtol=1e-5, atol=1e-4)
  assert not np.allclose(toy.sample(16, sampler='pc', sampling_steps=7, seed=12), first)


def test_likelihood_stderr_comes_from_the_probes(toy):
  x = pipeline_calls.TOY_POINTS
  tolerances = dict(ode_rtol=1e-3, ode_atol=1e-3)
  one = toy.log_likelihood(x, exact_trace=False, probes=1, **tolerances)
  # Gaussian probes: in 2-D a Rademacher probe's estimate takes only two values.
  eight = toy.log_likelihood(x, probes=8, probe='gaussian', **tolerances)
  exact = toy.log_likelihood(x, exact_trace=True, **tolerances)
  assert np.all(np.isnan(one.log_prob_stderr)) and one.probes == 1 and exact.probes == 0
  assert eight.probes == 8 and np.all(eight.log_prob_stderr > 0)
  assert one.bits_per_dim is None and toy.nfe == exact.nfe > 0
  # Each probe's estimate is unbiased: their mean lies within a few standard errors of the
  # exact trace's value (plus the two solves' own error at rtol 1e-3).
  error = np.abs(eight.log_prob - exact.log_prob)
  assert np.all(error <= 4 * eight.log_prob_stderr + 0.01), (error, eight.log_prob_stderr)


def _served_answer(pipe, name, *inputs):
  """What the export's signature `name` computes for the pipeline's model (its body, run here
  without writing a SavedModel: exporting a U-Net takes a minute; the slow test does it)."""
  context = signatures.ExportContext(
      config=pipe.config, score_model=pipe.source.score_model,
      sigmas=tf.Variable(pipe.sigmas), data_shape=pipe.data_shape,
      sampler=configured.ConfiguredSampler(pipe.config, pipe.source.score_model, pipe.data_shape),
      guidance=signatures.guidance_for(pipe.source.score_model, None))
  out = signatures.get_signature(name).fn(context, *[tf.constant(v) for v in inputs])
  return next(iter(out.values())).numpy()


def test_labels_and_inpainting_answer_as_the_export_signatures(digits):
  ours = pipeline_calls.digits_calls(digits)
  labels = np.array([0, 3, 7, 7, 9], np.int32)
  np.testing.assert_allclose(
      ours['sample_labels'], _served_answer(digits, 'sample_class', labels, np.float32(2.0),
                                            np.int32(2)), rtol=0, atol=1e-5)
  images = pipeline_calls.digit_images(digits, 3)
  mask = inpainting.make_mask('right', images.shape)
  np.testing.assert_allclose(ours['inpaint'], _served_answer(digits, 'inpaint', images, mask,
                                                             np.int32(3)), rtol=0, atol=1e-5)
  completions = ours['inpaint']
  assert completions.shape == (3, 8, 8, 1) and completions.min() >= 0 and completions.max() <= 1
  np.testing.assert_array_equal(completions[:, :, :4], images[:, :, :4])  # the known left half
  assert ours['sample_labels'].shape == (5, 8, 8, 1) and digits.num_classes == 10


@pytest.mark.slow  # 46 s; the toy's export answers as its workdir (one probe and the exact
# trace, test_the_export_answers_as_the_workdir_in_a_fresh_process), and the K-probe path
# through the pipeline is test_likelihood_stderr_comes_from_the_probes.
def test_the_image_log_likelihood_signature_answers_as_the_pipeline(digits):
  # The served body on an image model (bits/dim in 8-bit units, Hutchinson probes and
  # their spread) against the pipeline's call at the same seed: what an export of this
  # run answers (writing and serving that graph: the slow tests beside this one).
  # At rtol 1e-3 (the run's 1e-5 costs a minute here; the comparison does not need it).
  x = (np.floor(pipeline_calls.digit_images(digits, 2) * 255.0) + 0.5) / 256.0
  ours = digits.log_likelihood(x, seed=6, ode_rtol=1e-3, ode_atol=1e-3)
  context = signatures.ExportContext(
      config=digits.config.replace(sampling={'ode_rtol': 1e-3, 'ode_atol': 1e-3}),
      score_model=digits.source.score_model,
      sigmas=tf.Variable(digits.sigmas), data_shape=digits.data_shape,
      sampler=configured.ConfiguredSampler(digits.config, digits.source.score_model,
                                           digits.data_shape))
  served = signatures.get_signature('log_likelihood').fn(context, tf.constant(x, tf.float32),
                                                         tf.constant(6))
  # One function underneath (evaluation/likelihood.py model_log_prob), run eagerly by the
  # pipeline and inside the signature here: float32 round-off apart (it once stacked K
  # copies of the batch instead, and differed by 2e-5 with 109 NFE against 163).
  np.testing.assert_allclose(served['log_prob'].numpy(), ours.log_prob, rtol=1e-6)
  np.testing.assert_allclose(served['log_prob_stderr'].numpy(), ours.log_prob_stderr, rtol=1e-4)
  np.testing.assert_allclose(served['bits_per_dim'].numpy(), ours.bits_per_dim, rtol=1e-6)
  assert int(served['nfe']) == ours.nfe and ours.probes == 4


@pytest.mark.slow
def test_a_digits_export_answers_as_its_workdir_in_a_fresh_process(digits, tmp_path):
  export_dir = tmp_path / 'export'
  ncsn_tf.export(digits.config.replace(export={'export_dir': str(export_dir)}))
  served = _export_answers('digits', str(export_dir), tmp_path)
  for name, value in pipeline_calls.digits_calls(digits).items():
    np.testing.assert_allclose(served[name], value, rtol=0, atol=2e-3, err_msg=name)
  pipe = ncsn_tf.load(export_dir)
  assert pipe.source.kind == 'export' and pipe.num_classes == 10
  with pytest.raises(ValueError, match='^sampler: an export draws labelled samples'):
    pipe.sample(2, label=3, sampler='pc')
  with pytest.raises(ValueError, match='^callback: an export draws labelled samples'):
    pipe.sample(2, label=3, callback=lambda step, x: None)


def test_colorize_keeps_each_pixels_grey_value(shapes_run):
  # An RGB run at step 0 suffices: the grey axis is imposed, whatever the network says.
  pipe = ncsn_tf.load(shapes_run)
  rgb = np.random.default_rng(0).uniform(0, 1, [2, 16, 16, 3]).astype(np.float32)
  grey = rgb.mean(axis=-1, keepdims=True)
  for images in (rgb, grey):
    colour = pipe.colorize(images, sampler='heun', sampling_steps=3, seed=1)
    assert colour.shape == (2, 16, 16, 3)
    inside = ((colour > 1e-6) & (colour < 1 - 1e-6)).all(axis=-1)  # not moved by the clipping
    np.testing.assert_allclose(conditions.grey_of(colour).numpy()[inside], grey[inside],
                               atol=1e-5)


@pytest.mark.parametrize('call, message', [
    (lambda p: p.sample(4, sampler='nope'), '--sampler: must be one of'),
    (lambda p: p.sample(4, sampler='pc', snr=-1), '--snr: must be > 0'),
    (lambda p: p.sample(4, sampler='pc', sampling_steps='many'), '--sampling_steps=many'),
    (lambda p: p.sample(4, ngf=8), '--ngf: not a setting that may change here'),
    (lambda p: p.sample(4, bogus=1), '--bogus: not a setting'),
    (lambda p: p.sample(0), 'num: must be an integer >= 1'),
    (lambda p: p.sample(4, seed=-1), 'seed: must be an integer in'),
    (lambda p: p.sample(4, label=1), 'label: this model draws no classes'),
    (lambda p: p.sample(4, guidance_scale=2.0), 'guidance_scale: guides labelled samples only'),
    (lambda p: p.sample(4, callback='print'), 'callback: must be a function'),
    (lambda p: p.score(np.zeros([3, 3]), 1.0), 'x: must have shape [N, 2]'),
    (lambda p: p.score(np.zeros([3, 2]), [1.0, 2.0]), 'sigma: a float or 3 floats'),
    (lambda p: p.score(np.zeros([3, 2]), 0.0), 'sigma: a float or 3 floats'),
    (lambda p: p.score(np.full([3, 2], np.nan), 1.0), 'x: holds NaN'),
    (lambda p: p.log_likelihood(np.zeros([3, 2]), probes=0), '--hutchinson_probes: must be >= 1'),
    (lambda p: p.log_likelihood(np.zeros([3, 2]), sampler='pc'), '--sampler: not a setting'),
    (lambda p: p.inpaint(np.zeros([1, 2]), 'right'), 'inpaint: needs an image model'),
    (lambda p: p.colorize(np.zeros([1, 2])), 'colorize: needs an image model'),
])
def test_bad_arguments_raise_one_line_value_errors_on_a_toy(toy, call, message):
  with pytest.raises(ValueError) as caught:
    call(toy)
  assert str(caught.value).startswith(message) and '\n' not in str(caught.value)


@pytest.mark.parametrize('call, message', [
    (lambda p: p.sample(3, label=10), 'label: classes are 0..9, got 10'),
    (lambda p: p.sample(3, label=[1, 2]), 'label: an int or a list of 3 ints'),
    (lambda p: p.sample(3, label=1.5), 'label: an int or a list of 3 ints'),
    (lambda p: p.sample(3, label=1, guidance_scale=-1.0), 'guidance_scale: must be a finite'),
    (lambda p: p.inpaint(np.zeros([1, 8, 8, 1]), 'middle'), 'mask: one of right'),
    (lambda p: p.inpaint(np.zeros([1, 8, 8, 1]), np.ones([8, 8])), 'mask: 0 (generate) and 1'),
    (lambda p: p.inpaint(np.full([1, 8, 8, 1], 2.0), 'right'), 'images: images must be in [0, 1]'),
    (lambda p: p.colorize(np.zeros([1, 8, 8, 1])), 'colorize: needs an RGB model'),
    (lambda p: p.log_likelihood(np.ones([1, 8, 8, 1])), 'x: images must be in [0, 1)'),
])
def test_bad_arguments_raise_one_line_value_errors_on_digits(digits, call, message):
  with pytest.raises(ValueError) as caught:
    call(digits)
  assert str(caught.value).startswith(message) and '\n' not in str(caught.value)


def test_bad_paths_and_options_name_the_argument(toy_sde_run, tmp_path):
  workdir, export_dir = toy_sde_run
  cases = [
      (lambda: ncsn_tf.load(tmp_path / 'missing'), FileNotFoundError, 'path: '),
      (lambda: ncsn_tf.load(tmp_path), ValueError, 'path: '),
      (lambda: ncsn_tf.load(workdir, step=7), ValueError, 'step: '),
      (lambda: ncsn_tf.load(export_dir, step=1), ValueError, 'step: only a workdir'),
      (lambda: ncsn_tf.load(export_dir, ema=False), ValueError, 'ema: '),
      (lambda: ncsn_tf.load(workdir, config='toy_gmm'), ValueError, 'config: a workdir'),
  ]
  for call, kind, message in cases:
    with pytest.raises(kind) as caught:
      call()
    assert str(caught.value).startswith(message) and '\n' not in str(caught.value)


def test_a_chosen_checkpoint_and_the_trained_network(toy_sde_run):
  workdir, _ = toy_sde_run
  chosen = ncsn_tf.load(workdir, step=40, ema=False)
  x = pipeline_calls.TOY_POINTS
  assert chosen.source.step == 40
  # Without EMA: the network the optimiser trained, which the EMA copy only follows.
  assert not np.allclose(chosen.score(x, 1.0), ncsn_tf.load(workdir).score(x, 1.0))


def test_import_needs_no_tensorflow_and_from_flagfile_checks_as_the_command_line():
  script = ("import sys, ncsn_tf\n"
            "c = ncsn_tf.Config.from_flagfile('tf_configs/toy_gmm.cfg', train_steps=7, sampler='pc')\n"
            "assert (c.name, c.workdir, c.train.train_steps) == ('toy_gmm', 'runs/toy_gmm', 7)\n"
            "assert ncsn_tf.Config.from_flagfile('cifar10').model.ngf == 128\n"
            "for bad, message in [({'train_steps': 'x'}, '--train_steps=x: '),\n"
            "                     ({'nope': 1}, '--nope: no such flag'),\n"
            "                     ({'projection': 'x'}, '--projection=x: value should be one of'),\n"
            "                     ({'snr': -1}, '--snr: must be > 0')]:\n"
            "  try:\n"
            "    ncsn_tf.Config.from_flagfile('toy_gmm', **bad)\n"
            "  except ncsn_tf.ConfigError as e:\n"
            "    assert str(e).startswith(message) and '\\n' not in str(e), e\n"
            "  else:\n"
            "    raise AssertionError(bad)\n"
            "assert 'tensorflow' not in sys.modules\n")
  env = {**os.environ, 'PYTHONPATH': REPO_ROOT}
  result = subprocess.run([sys.executable, '-c', script], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env=env)
  assert result.returncode == 0, result.stderr[-2000:]
