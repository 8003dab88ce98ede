"""ncsn_tf command line: python run.py --flagfile=tf_configs/toy_gmm.cfg [--mode=...].

Parses flags, builds a validated Config and dispatches on --mode. Invalid
configuration prints one line naming the flag and exits with status 2.

The console is quiet by default (ncsn_tf/runtime/console.py, which importing
ncsn_tf sets up): unless TF_CPP_MIN_LOG_LEVEL is set in the environment,
TensorFlow's C++ runtime notices and its Python INFO logs are hidden, and the
run logs one `devices: ...` line instead. Python warnings, errors and this
package's logs (--verbosity) still show; set TF_CPP_MIN_LOG_LEVEL (0 shows
everything) to get TensorFlow's own logs back.

NCSN_TF_EXTRA_FLAGS (docs/usage.md): flags appended to the command line, so they
override it; the documentation's check (make docs-check) shrinks every
documented command's work with it.
"""

import sys

from absl import app
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf.cli import extra_flags
from ncsn_tf.config import flags as ncsn_flags
from ncsn_tf.runtime import console


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])} (flags take the form --name=value)')
  try:
    config = ncsn_flags.build_config(sys.argv)
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  # Imported late: TensorFlow loads only for valid configs.
  from ncsn_tf.runtime import devices
  from ncsn_tf.training import loop as train_loop
  if config.train.num_cpu_replicas > 1:
    # Logical devices must exist before TensorFlow touches the CPU.
    devices.configure_cpu_replicas(config.train.num_cpu_replicas)
  from ncsn_tf import api
  from ncsn_tf.cli import modes
  console.hide_tensorflow_info(logging.get_absl_handler())
  try:
    # The registries' checks (network, SDE, sampler), now that TensorFlow is loaded.
    config = api.validate(config)
    logging.info('%s: mode=%s workdir=%s', config.name, config.mode, config.workdir)
    modes.MODES[config.mode](config)
  except config_lib.ConfigError as e:  # e.g. a workdir of a different configuration
    print(f'error: {e}', file=sys.stderr)
    return 2
  except train_loop.TrainingInterrupted as e:  # SIGTERM/SIGINT: saved, resumable
    print(f'stopped: {e}', file=sys.stderr)
    return 128 + int(e.signum)
  except (FileNotFoundError, train_loop.NonFiniteLossError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  app.run(main, argv=extra_flags.argv_with_extra_flags(sys.argv))
