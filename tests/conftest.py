"""Test session setup: two logical CPU devices, so MirroredStrategy runs for real."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

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
