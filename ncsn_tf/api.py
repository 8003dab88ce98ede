"""The package's Python surface: what the command line and a notebook both call.

`validate(config)`: every check of a Config, its settings and the registries'
(network, SDE, sampler). `train(config)`: train (or resume), then sample,
evaluate and export, as `python run.py --mode=train` does; returns the
workdir, which `load` takes. `load(path)`: a `Pipeline` over a workdir, an
export or an official checkpoint (ncsn_tf/pipeline/, docs/python.md).
`export(config)`: a new SavedModel version of a trained workdir. `ncsn_tf.load`,
`ncsn_tf.train` and `ncsn_tf.Config` are these (ncsn_tf/__init__.py).
"""

from ncsn_tf import config as config_lib
from ncsn_tf.config import Config, ConfigError  # noqa: F401  (the public names)
from ncsn_tf.evaluation import images as image_eval
from ncsn_tf.evaluation import samples as sample_outputs
from ncsn_tf.pipeline import LogLikelihood, Pipeline, load  # noqa: F401  (the public names)
from ncsn_tf.runtime import checkpoints
from ncsn_tf.sampling import configured
from ncsn_tf.sampling import guidance
from ncsn_tf.serving import export as export_lib
from ncsn_tf.serving import signatures as signatures_lib
from ncsn_tf.training import loop as train_loop


def validate(config: config_lib.Config) -> config_lib.Config:
  """`config` if every setting is valid and the registries have what it names.

  First the settings (ncsn_tf.config.validate, no TensorFlow needed), then
  the network, SDE, sampler and signature registries, which hold extensions too. Raises
  ConfigError with a one-line message naming the flag.
  """
  config = configured.validate(config)
  signatures_lib.check_names(config.export.signature_names)
  return config


def export(config: config_lib.Config, state=None) -> str:
  """A new SavedModel version of the run (its latest checkpoint unless `state`); its path.

  With --guidance=classifier the classifier of --classifier_workdir is
  exported beside the score model, for `sample_class`.
  """
  state = state or checkpoints.restore_for_inference(config)
  classifier = guidance.load_classifier(config) if config.sampling.guidance == 'classifier' else None
  return export_lib.export(state.score_model, config, state.sigmas, classifier=classifier)


def train_run(config: config_lib.Config) -> dict:
  """Trains (or resumes), then samples, evaluates and exports; {'metrics', 'export'}.

  --task=classifier trains the guidance classifier only: it has no samples
  or export of its own (--guidance=classifier reads it from its workdir).
  Under multi-worker training only the chief samples, evaluates and exports.
  """
  config = validate(config)
  if config.train.task == 'classifier':
    train_loop.train(config)
    return {'metrics': {}, 'export': None}
  hook = None if config.data.is_toy else sample_outputs.image_snapshot_hook(config)
  state = train_loop.train(config, on_snapshot=hook)
  if not state.chief:
    return {'metrics': {}, 'export': None}
  if config.sampling.guidance != 'none':
    # Both: unconditional samples in samples/, class-conditional in samples_guided/.
    sample_outputs.sample_run(config.replace(sampling={'guidance': 'none'}), state)
  sample_outputs.sample_run(config, state)
  metrics = image_eval.evaluate_run(config, state)
  return {'metrics': metrics, 'export': export(config, state)}


def train(config: config_lib.Config) -> str:
  """Trains (or resumes) the run of `config`, then samples, evaluates and exports, as
  `python run.py --mode=train` does; returns its workdir, for `load`.

  config: e.g. `Config.from_flagfile('tf_configs/toy_gmm.cfg', train_steps=2000)`;
  checked first (`validate`). Outputs: <workdir>/ (checkpoints, samples,
  metrics.json, TensorBoard) and a SavedModel version under --export_dir.
  """
  train_run(config)
  return config.workdir
