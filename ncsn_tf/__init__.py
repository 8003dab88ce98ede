"""ncsn_tf: Noise Conditional Score Networks in TensorFlow 2 / Keras 3.

Song & Ermon (2019), "Generative Modeling by Estimating Gradients of the Data
Distribution", NCSNv2 and the score SDEs of Song et al. (2021). Every piece
(data, models, losses, samplers, metrics, export) is usable from Python
without absl flags; `run.py` is the command line. From Python (docs/python.md):

    import ncsn_tf
    config = ncsn_tf.Config.from_flagfile('tf_configs/toy_gmm_sde.cfg')
    pipe = ncsn_tf.load(ncsn_tf.train(config))     # or a workdir, an export, checkpoint.pth
    samples = pipe.sample(1000, sampler='pc', seed=0)

`Config` and `ConfigError` need no TensorFlow; `load`, `train`, `export`,
`validate`, `Pipeline` and `LogLikelihood` (ncsn_tf/api.py) load it when first used.
"""

from ncsn_tf.runtime import console as _console

# Before TensorFlow loads: its start-up notices stay off the console (runtime/console.py).
_console.quiet_tensorflow()

from ncsn_tf.config import Config, ConfigError  # noqa: E402,F401

__version__ = "0.1.0"

#: The names ncsn_tf/api.py provides, imported with TensorFlow on first use.
_API_NAMES = ('load', 'train', 'export', 'validate', 'Pipeline', 'LogLikelihood')

__all__ = ['Config', 'ConfigError', *_API_NAMES]


def __getattr__(name):
  if name not in _API_NAMES:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  from ncsn_tf import api  # Deferred: `import ncsn_tf.config` (run.py's flag checks) stays TensorFlow-free.
  return getattr(api, name)
