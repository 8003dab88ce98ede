"""One function per `--mode`; `run.py` parses flags and calls these, each a call into the library.

train      -> ncsn_tf.api.train_run: train (or resume), then sample, evaluate and export
sample     -> <workdir>/samples/ (--guidance: samples_guided/): samples.npz and pictures
eval       -> per checkpoint: toy exact metrics and figures, or images' IS/FID/KID; held-out loss
stats      -> FID reference statistics (mean, covariance) of a dataset split
inpaint    -> <workdir>/inpainting/: originals, masked inputs and completions (any --sampler)
colorize   -> <workdir>/colorization/: originals, grey inputs, completions and their colour error
export     -> <export_dir>/<version>/ SavedModel
experiment -> the score-matching lab's figures and tables (ncsn_tf/lab/)
likelihood -> exact NLL (toys) or bits/dim (images) by the probability-flow ODE
"""

from ncsn_tf import api
from ncsn_tf import config as config_lib
from ncsn_tf.evaluation import conditional
from ncsn_tf.evaluation import images as image_eval
from ncsn_tf.evaluation import likelihood as likelihood_eval
from ncsn_tf.evaluation import samples as sample_outputs
from ncsn_tf.lab import experiments


def run_train(config: config_lib.Config) -> dict:
  return api.train_run(config)


def run_sample(config: config_lib.Config, state=None) -> str:
  return sample_outputs.sample_run(config, state)


def run_eval(config: config_lib.Config, state=None) -> dict:
  return image_eval.evaluate_run(config, state)


def run_stats(config: config_lib.Config) -> str:
  return image_eval.run_stats(config)


def run_inpaint(config: config_lib.Config, state=None) -> str:
  return conditional.inpaint_run(config, state)


def run_colorize(config: config_lib.Config, state=None) -> dict:
  return conditional.colorize_run(config, state)


def run_export(config: config_lib.Config, state=None) -> str:
  return api.export(config, state)


def run_likelihood(config: config_lib.Config, state=None) -> dict:
  return likelihood_eval.evaluate_likelihood(config, state)


def run_experiment(config: config_lib.Config) -> dict:
  return experiments.run_experiment(config)


MODES = {'train': run_train, 'sample': run_sample, 'eval': run_eval, 'stats': run_stats,
         'inpaint': run_inpaint, 'colorize': run_colorize, 'export': run_export,
         'likelihood': run_likelihood, 'experiment': run_experiment}
