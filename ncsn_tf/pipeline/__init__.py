"""The Python API's pipeline: `load(path)` -> `Pipeline`, one call per task (docs/python.md).

sources.py: a workdir, a SavedModel export or an official checkpoint.pth as a
score model with its Config; official.py: the paper's checkpoints (read
without torch); pipeline.py: `Pipeline` (sample, score, log_likelihood,
inpaint, colorize).
"""

from ncsn_tf.pipeline.pipeline import LogLikelihood, Pipeline, sampler_flags  # noqa: F401
from ncsn_tf.pipeline.sources import Source, open_source


def load(path, *, step=None, ema: bool = True, config=None) -> Pipeline:
  """A Pipeline over the model at `path`; one-line errors naming the argument.

  path: a trained workdir (its config.json and checkpoints/), a SavedModel
    version directory or an export root (its newest version), or an official
    ermongroup/ncsn `checkpoint.pth` (with `config`).
  step: a workdir's checkpoint step (None: the latest).
  ema: a workdir's EMA network (True, what sampling and the export use) or the
    trained network itself.
  config: for a checkpoint file, the Config of its model, or its flagfile's
    path or tf_configs/ name ('cifar10', 'mnist', 'celeba').
  """
  return Pipeline(open_source(path, step=step, ema=ema, config=config))


__all__ = ['LogLikelihood', 'Pipeline', 'Source', 'load', 'open_source', 'sampler_flags']
