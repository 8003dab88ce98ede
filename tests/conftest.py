"""Test session setup: two logical CPU devices, so MirroredStrategy runs for real."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import ncsn_tf  # noqa: E402
from ncsn_tf.runtime import devices

  # noqa: E402

# Must happen before any test touches a device.
devices.configure_cpu_replicas(2)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo_root():
  return REPO_ROOT


@pytest.fixture
def tf_seed():
  tf.random.set_seed(0)
  return 0


@pytest.fixture
def mixed_bfloat16():
  """Layers built inside the test use the mixed_bfloat16 policy; float32 after."""
  keras.mixed_precision.set_global_policy('mixed_bfloat16')
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy('float32')


# --- tiny runs for the Python API's tests (docs/python.md) --------------------------------
# Session-scoped: the API's tests, the example's and the docs' Python blocks share them (one
# of each per test process). Their numbers mean nothing; docs/python.md measures full runs.

#: tf_configs/toy_gmm_sde.cfg shrunk: a narrow MLP, few steps, short chains and tolerances.
TINY_TOY_SDE = dict(ngf=32, train_steps=40, snapshot_freq=40, log_freq=20, num_samples=64,
                    sample_batch_size=64, n_steps_each=2, sampling_steps=20, ode_rtol=1e-2,
                    ode_atol=1e-2, heldout_batches=1)
#: tf_configs/digits.cfg (class-conditional U-Net, guidance=free) shrunk to 8 px and width 4;
#: float32, so that a workdir and its export agree to float32 round-off on any machine.
TINY_DIGITS = dict(image_size=8, ngf=4, precision='float32', train_minutes=0, train_steps=2,
                   snapshot_freq=2, log_freq=1, heldout_batches=1, num_samples=10,
                   sample_batch_size=10, num_scales=10, sampling_steps=3, n_steps_each=1,
                   num_snapshots=2)
#: tf_configs/shapes_sde.cfg (an RGB U-Net) shrunk likewise.
TINY_SHAPES = dict(image_size=16, ngf=4, precision='float32', train_minutes=0, train_steps=0,
                   snapshot_freq=1, heldout_batches=1, num_scales=10)


@pytest.fixture(scope='session')
def toy_sde_run(tmp_path_factory):
  """(workdir, export root) of a tiny tf_configs/toy_gmm_sde.cfg run, trained as docs/python.md
  trains: `ncsn_tf.train` (train, sample, evaluate, export)."""
  root = tmp_path_factory.mktemp('toy_sde')
  config = ncsn_tf.Config.from_flagfile(
      os.path.join(REPO_ROOT, 'tf_configs/toy_gmm_sde.cfg'), workdir=str(root / 'run'),
      export_dir=str(root / 'export'), **TINY_TOY_SDE)
  return ncsn_tf.train(config), str(root / 'export')


def _barely_trained_run(tmp_path_factory, flagfile: str, name: str, **flags) -> str:
  """The workdir of a run trained by the training loop alone (no samples, metrics, export).

  Enough where a test checks wiring, not quality: labels reach the network, a condition's
  known pixels are imposed whatever the network says. (Exporting a U-Net takes a minute.)
  At step 0 the U-Net's score is 0 everywhere (its last layer starts at zero), which
  some samplers cannot use (PC's corrector divides by the score's norm); 2 steps suffice.
  """
  # Imported here: the module's imports would run before configure_cpu_replicas above.
  from ncsn_tf.training import loop as train_loop  # pylint: disable=import-outside-toplevel
  config = ncsn_tf.Config.from_flagfile(os.path.join(REPO_ROOT, flagfile),
                                        workdir=str(tmp_path_factory.mktemp(name) / 'run'), **flags)
  train_loop.train(config)
  return config.workdir


@pytest.fixture(scope='session')
def digits_run(tmp_path_factory):
  """The workdir of a tiny class-conditional tf_configs/digits.cfg run, 2 steps."""
  return _barely_trained_run(tmp_path_factory, 'tf_configs/digits.cfg', 'digits', **TINY_DIGITS)


@pytest.fixture(scope='session')
def shapes_run(tmp_path_factory):
  """The workdir of a tiny tf_configs/shapes_sde.cfg run (RGB) at step 0: colourisation keeps
  the grey axis whatever the network says."""
  return _barely_trained_run(tmp_path_factory, 'tf_configs/shapes_sde.cfg', 'shapes', **TINY_SHAPES)
