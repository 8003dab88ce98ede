"""The image path end to end: paper flagfiles under tfds mock data, the shapes CLI,
inpainting, and the image SavedModel signatures in a fresh process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import REPO_ROOT
from test_cli import run_cli

from ncsn_tf import plots
from ncsn_tf.config import flags as ncsn_flags
from ncsn_tf.runtime import checkpoints
from ncsn_tf.sampling import conditions
from ncsn_tf.sampling import inpainting
from ncsn_tf.sampling import langevin
from ncsn_tf.training import loop as train_loop

TINY = ['--ngf=4', '--train_steps=2', '--log_freq=1', '--snapshot_freq=2', '--batch_size=4',
        '--heldout_batches=0', '--summary_samples=0']


def config_from_flagfile(name, *overrides):
  """The Config run.py would build for `tf_configs/<name>.cfg` plus overrides."""
  argv = ['run.py', f'--flagfile={os.path.join(REPO_ROOT, "tf_configs", name + ".cfg")}', *overrides]
  ncsn_flags.FLAGS(argv)
  try:
    return ncsn_flags.build_config(argv)
  finally:
    ncsn_flags.FLAGS.unparse_flags()


# All slow (cifar10 64 s, mnist and celeba 24 s each): their tfds pipelines under mock data
# are tests/test_images.py's, the paper's RefineNet tests/test_refinenet.py's, training
# under MirroredStrategy on two logical CPUs tests/test_train_lib.py's, and the flagfiles'
# values test_paper_flagfiles_set_the_papers_values below.
@pytest.mark.parametrize('name,shape,replicas', [
    pytest.param('mnist', (28, 28, 1), 0, marks=pytest.mark.slow),
    pytest.param('cifar10', (32, 32, 3), 2, marks=pytest.mark.slow),  # 2 logical CPUs
    pytest.param('celeba', (32, 32, 3), 0, marks=pytest.mark.slow),
])
def test_paper_flagfiles_train_under_tfds_mock_data(tmp_path, name, shape, replicas):
  config = config_from_flagfile(name, f'--workdir={tmp_path}/run', *TINY,
                                f'--num_cpu_replicas={replicas}')
  assert config.model.name == 'refinenet' and config.model.num_scales == 10
  assert config.sampling.step_lr == 2e-5 and config.train.batch_size == 4
  # The paper's network: per-level CIN++, no 1/σ output scaling.
  assert config.model.conditional_norm and not config.model.scale_by_sigma
  with tfds.testing.mock_data(num_examples=16):
    state = train_loop.train(config)
  assert int(state.step.numpy()) == 2 and state.model.output_sigmas is None
  assert state.model.conditional_norm
  assert os.path.exists(tmp_path / 'run' / 'checkpoints' / 'ckpt-2.index')
  x = np.random.default_rng(0).random((2,) + shape).astype(np.float32)
  assert state.ema_model(x, np.array([0, 9], np.int32)).shape == (2,) + shape


@pytest.mark.parametrize('name', ['mnist', 'cifar10', 'celeba'])
def test_paper_flagfiles_set_the_papers_values(tmp_path, name):
  config = config_from_flagfile(name, f'--workdir={tmp_path}/run')
  assert config.model.name == 'refinenet' and config.model.num_scales == 10
  assert config.model.sigma_begin == 1.0 and config.model.sigma_end == 0.01
  assert config.sampling.step_lr == 2e-5 and config.sampling.n_steps_each == 100
  assert config.model.conditional_norm and not config.model.scale_by_sigma


def test_a_missing_dataset_stops_at_once_naming_it_and_three_ways(tmp_path):
  result = run_cli(f'--flagfile={REPO_ROOT}/tf_configs/celeba.cfg', f'--workdir={tmp_path}/w',
                   f'--data_dir={tmp_path}/no_data', '--ngf=4')
  assert result.returncode != 0
  message = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(message) == 1, result.stderr[-2000:]
  assert 'celeb_a' in message[0] and 'tfds build' in message[0]
  assert 'manual' in message[0] and '--dataset=folder' in message[0]
  assert not os.path.exists(tmp_path / 'w' / 'checkpoints' / 'checkpoint')


def test_inpainting_keeps_known_pixels_up_to_the_last_sigma():
  # With the score of N(0.5, s²) per pixel the chain is well behaved; the known
  # pixels end at original + N(0, σ_L²) noise: their deviation has std σ_L
  # (0.01) within 20%, the unknown ones moved far from the original. (Every
  # sampler's condition: tests/test_conditions.py.)
  sigmas = tf.constant([0.5, 0.1, 0.01])
  images = tf.random.stateless_uniform([4, 16, 16, 3], [0, 1])
  mask = inpainting.make_mask('right', (4, 16, 16, 3))
  score = lambda x, i: -(x - 0.5) / (0.1 + tf.gather(sigmas, i)[:, None, None, None]**2)
  x_init = tf.random.stateless_uniform([4, 16, 16, 3], [1, 2])
  out = langevin.annealed_langevin_dynamics(score, x_init, sigmas, conditions.inpainting(images, mask),
                                            n_steps_each=20, step_lr=1e-5, seed=[3, 4]).numpy()
  known = mask.astype(bool)
  deviation = (out - images.numpy())[known]
  assert abs(deviation.std() - 0.01) < 0.002 and abs(deviation.mean()) < 0.002
  assert np.abs(out - images.numpy())[~known].mean() > 0.1


@pytest.mark.parametrize('kind,known_fraction', [('right', 0.5), ('left', 0.5), ('top', 0.5),
                                                 ('bottom', 0.5), ('center', 0.75)])
def test_masks(kind, known_fraction):
  mask = inpainting.make_mask(kind, (2, 8, 8, 3))
  assert mask.shape == (2, 8, 8, 3) and mask.mean() == known_fraction
  assert set(np.unique(mask)) <= {0.0, 1.0}


def test_random_and_image_masks(tmp_path):
  mask = inpainting.make_mask('random', (2, 32, 32, 3), keep_fraction=0.25, seed=1)
  assert abs(mask.mean() - 0.25) < 0.05
  np.testing.assert_array_equal(mask[..., 0], mask[..., 2])  # Shared across channels.
  from PIL import Image
  picture = np.zeros((10, 10), np.uint8)
  picture[:, :5] = 255
  Image.fromarray(picture).save(tmp_path / 'mask.png')
  from_file = inpainting.mask_from_image(str(tmp_path / 'mask.png'), (1, 20, 20, 1))
  assert from_file[0, :, :10].min() == 1 and from_file[0, :, 10:].max() == 0
  with pytest.raises(ValueError, match='unknown mask'):
    inpainting.make_mask('diagonal', (1, 4, 4, 1))


SIGNATURE_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
images = tf.random.stateless_uniform([2, 16, 16, 3], [0, 1])
mask = tf.concat([tf.ones([2, 16, 8, 3]), tf.zeros([2, 16, 8, 3])], axis=2)
sample = loaded.signatures['sample'](num_samples=tf.constant(3), seed=tf.constant(0))['samples']
inpainted = loaded.signatures['inpaint'](images=images, mask=mask, seed=tf.constant(1))['inpainted']
score = loaded.signatures['score'](x=images, sigma_index=tf.constant([0, 9]))['score']
assert sample.shape == (3, 16, 16, 3) and inpainted.shape == (2, 16, 16, 3)
assert score.shape == (2, 16, 16, 3)
assert float(tf.reduce_min(sample)) >= 0 and float(tf.reduce_max(sample)) <= 1
print(sorted(loaded.signatures.keys()))
"""


# 112 s in make test. Covered by tests/test_digits.py (tf_configs/digits.cfg through
# run.py: training, sampling, judging, export), tests/test_conditions.py (--mode=inpaint)
# and tests/test_serving.py (the shapes export through both loaders).
@pytest.mark.slow
def test_shapes_cli_trains_samples_inpaints_and_exports(tmp_path):
  workdir, export_dir = tmp_path / 'run', tmp_path / 'export'
  common = [f'--flagfile={REPO_ROOT}/tf_configs/shapes.cfg', f'--workdir={workdir}',
            f'--export_dir={export_dir}', '--ngf=4', '--image_size=16', '--batch_size=8',
            '--n_steps_each=2', '--num_samples=8', '--sample_batch_size=8', '--num_snapshots=4']
  result = run_cli(*common, '--train_steps=4', '--snapshot_freq=2', '--log_freq=2',
                   '--heldout_batches=1', '--summary_samples=4')
  assert result.returncode == 0, result.stderr[-3000:]
  assert {'samples.npz', 'samples.png', 'chain.gif'} <= set(os.listdir(workdir / 'samples' / 'latest'))
  samples = np.load(workdir / 'samples' / 'latest' / 'samples.npz')
  assert samples['samples'].shape == (8, 16, 16, 3)
  assert samples['trajectory'].shape == (4, 8, 16, 16, 3)
  with open(workdir / 'samples' / 'shape_fit.json') as f:
    fit = json.load(f)
  for images in ('samples', 'test_images'):  # 8 of each: every image has an object or is empty.
    assert fit[images]['objects'] + fit[images]['empty_images'] >= 8, fit
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(str(workdir / 'tensorboard'),
                                           size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  tags = set(acc.Tags()['tensors'])
  assert {'samples', 'langevin_chain', 'eval/heldout_loss', 'loss'} <= tags
  assert [e.step for e in acc.Tensors('samples')] == [2, 4]

  result = run_cli(*common, '--mode=inpaint', '--num_inpaint_images=2', '--inpaint_completions=2')
  assert result.returncode == 0, result.stderr[-3000:]
  arrays = np.load(workdir / 'inpainting' / 'latest' / 'inpainting.npz')
  assert arrays['completions'].shape == (2, 2, 16, 16, 3)
  assert os.path.exists(workdir / 'inpainting' / 'latest' / 'inpainting.png')

  out = subprocess.run([sys.executable, '-c', SIGNATURE_SCRIPT, str(export_dir / '1')],
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "['colorize', 'inpaint', 'sample', 'score', 'score_sigma', 'serving_default']" in out.stdout


def test_snapshot_samples_reuse_one_trace_of_the_sampler(tmp_path):
  # Every snapshot draws TensorBoard samples with the same EMA model: the sampler
  # graph must be traced once, not once per snapshot (7 s each even at ngf 4).
  from ncsn_tf.sampling import draw
  from ncsn_tf.sampling import langevin
  config = config_from_flagfile('shapes', '--ngf=4', '--image_size=16', '--n_steps_each=1',
                                '--num_snapshots=2', f'--workdir={tmp_path}')
  state = checkpoints.create_state(config, tf.distribute.get_strategy())
  draws = [draw.draw_samples(config, state.ema_model, state.sigmas, num=2, seed=seed,
                              show_progress=False) for seed in (0, 1, 2)]
  traces = langevin.annealed_langevin_dynamics.experimental_get_tracing_count()
  draws.append(draw.draw_samples(config, state.ema_model, state.sigmas, num=2, seed=3,
                                  show_progress=False))
  assert langevin.annealed_langevin_dynamics.experimental_get_tracing_count() == traces
  assert draws[0][0].shape == (2, 16, 16, 3) and not np.allclose(draws[0][0], draws[1][0])


def test_pictures_of_logit_space_samples_show_the_images(tmp_path):
  # With --logit_transform the sampler works in logit space; the grid must show
  # inverse_logit(samples), not the logits clipped to [0, 1] (black and white).
  import types

  from ncsn_tf.cli import modes
  from ncsn_tf.data import images
  config = config_from_flagfile('mnist', '--logit_transform=true', '--image_size=16',
                                '--num_scales=2', '--n_steps_each=1', '--num_samples=4',
                                '--sample_batch_size=4', '--num_snapshots=2',
                                f'--workdir={tmp_path}')
  # The exact score of a standard normal in logit space: samples spread over ±2.
  from ncsn_tf.models.score_model import ScoreModel
  state = types.SimpleNamespace(score_model=ScoreModel(lambda x, i: -x, [1.0, 0.5], continuous=False),
                                sigmas=np.array([1.0, 0.5]), step=tf.constant(0))
  out_dir = modes.run_sample(config, state)
  samples = np.load(os.path.join(out_dir, 'samples.npz'))['samples']
  assert np.abs(samples).max() > 1.0  # Outside [0, 1]: clipping alone would be wrong.
  expected = plots.image_grid(images.inverse_logit_transform(samples).numpy())
  png = tf.io.decode_png(tf.io.read_file(os.path.join(out_dir, 'samples.png'))).numpy()
  np.testing.assert_array_equal(png, expected)
