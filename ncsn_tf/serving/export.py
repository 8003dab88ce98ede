"""SavedModel export for TF Serving: numbered versions, each whole or absent.

`export(...)` writes `<export_dir>/<version>/`, a SavedModel of a
serving/module.py ScoreModule with its signatures (the entries of
serving/signatures.py that apply, and `serving_default` = `score`). Versions
are integers; each is written to a `.tmp-<version>-<pid>` directory beside the
others and renamed into place, so a TF Serving process polling `export_dir`
never sees half a model, and temporaries of exporting processes that died are
removed by the next export. saved_models/README.md documents the layout and
the signatures.
"""

import os
import shutil
import time

import numpy as np
import tensorflow as tf
from absl import logging

from ncsn_tf import config as config_lib
from ncsn_tf.runtime import artifacts
from ncsn_tf.runtime.progress import Progress
from ncsn_tf.serving import module as serving_module

_TMP_PREFIX = '.tmp-'
#: The export's progress total until the module says how many signatures it traces.
_PROGRESS_STEPS = 2


def next_version(export_dir: str) -> int:
  """1 + the largest integer version already in `export_dir` (1 if none)."""
  if not os.path.isdir(export_dir):
    return 1
  versions = [int(d) for d in os.listdir(export_dir) if d.isdigit()]
  return max(versions, default=0) + 1


def remove_stale_temporaries(export_dir: str):
  """Deletes temporary versions left by exporting processes that died (e.g. kill -9)."""
  for name in os.listdir(export_dir):
    pid = name.rsplit('-', 1)[-1]
    if name.startswith(_TMP_PREFIX) and pid.isdigit() and not artifacts.pid_alive(int(pid)):
      shutil.rmtree(os.path.join(export_dir, name), ignore_errors=True)


def export(score_model, config: config_lib.Config, sigmas: np.ndarray,
           version: int | None = None, classifier=None) -> str:
  """Writes a new SavedModel version atomically; returns its directory.

  classifier: a guidance.Classifier for `sample_class` by classifier guidance.
  """
  export_dir = config.export.export_dir
  os.makedirs(export_dir, exist_ok=True)
  remove_stale_temporaries(export_dir)
  version = version or next_version(export_dir)
  final = os.path.join(export_dir, str(version))
  if os.path.exists(final):
    raise FileExistsError(f'export version {final} already exists; choose another version')
  tmp = os.path.join(export_dir, f'{_TMP_PREFIX}{version}-{os.getpid()}')
  shutil.rmtree(tmp, ignore_errors=True)
  start = time.perf_counter()
  # Tracing every signature, then writing them: a minute or two for an image model.
  # The total is known once the module is built: one step per signature, one to write.
  with Progress('export', _PROGRESS_STEPS) as progress:

    def on_traced(done, total, name):
      progress.total = total + 1
      progress.update(done, traced=name)

    module = serving_module.ScoreModule(score_model, config, sigmas, classifier=classifier,
                                        on_traced=on_traced)
    signatures = module.signatures()
    progress.update(len(signatures), stage='writing')
    try:
      # No custom gradients: a server never differentiates the signatures, and
      # saving the ODE solver's and the networks' gradient functions took 3x as
      # long (76 against 23 s for a small continuous U-Net with log_likelihood).
      tf.saved_model.save(module, tmp, signatures=signatures,
                          options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
      os.rename(tmp, final)  # Atomic on one filesystem: a version is whole or absent.
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
    progress.update(len(signatures) + 1, stage='written')
  logging.info('exported SavedModel to %s (%s; %.0f s)', final,
               ', '.join(module.signature_names), time.perf_counter() - start)
  return final
