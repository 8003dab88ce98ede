"""The package's Python surface: what the command line and a notebook both call.

`validate(config)`: every check of a Config, its settings and the registries'
(network, SDE, sampler). `train(config)`: train (or resume), then sample,
evaluate and export, as `python run.py --mode=train` does. `export(config)`:
a new SavedModel version of a trained workdir.
"""

from ncsn_tf import config as config_lib
from ncsn_tf import noise
from ncsn_tf.evaluation import images as image_eval
from ncsn_tf.evaluation import samples as sample_outputs
from ncsn_tf.models import registry as networks
from ncsn_tf.runtime import checkpoints
from ncsn_tf.sampling import guidance
from ncsn_tf.sampling import samplers
from ncsn_tf.serving import export as export_lib
from ncsn_tf.training import loop as train_loop


def validate(config: config_lib.Config) -> config_lib.Config:
  """`config` if every setting is valid and the registries have what it names.

  First the settings (ncsn_tf.config.validate, no TensorFlow needed), then
  the network, SDE and sampler registries, which hold extensions too. Raises
  ConfigError with a one-line message naming the flag.
  """
  config = config_lib.validate(config)
  networks.check_config(config)
  noise.check_sde_config(config)
  samplers.check_config(config, noise.build_sde(config.model))
  return config


def export(config: config_lib.Config, state=None) -> str:
  """A new SavedModel version of the run (its latest checkpoint unless `state`); its path.

  With --guidance=classifier the classifier of --classifier_workdir is
  exported beside the score model, for `sample_class`.
  """
  state = state or checkpoints.restore_for_inference(config)
  classifier = guidance.load_classifier(config) if config.sampling.guidance == 'classifier' else None
  return export_lib.export(state.score_model, config, state.sigmas, classifier=classifier)


def train(config: config_lib.Config) -> dict:
  """Trains (or resumes), then samples, evaluates and exports; {'metrics', 'export'}.

  --task=classifier trains the guidance classifier only: it has no samples
  or export of its own (--guidance=classifier reads it from its workdir).
  Under multi-worker training only the chief samples, evaluates and exports.
  """
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
