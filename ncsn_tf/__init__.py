"""ncsn_tf: Noise Conditional Score Networks in TensorFlow 2 / Keras 3.

Song & Ermon (2019), "Generative Modeling by Estimating Gradients of the Data
Distribution". Every piece (data, models, losses, samplers, metrics, export)
is usable from Python without absl flags; `run.py` is the command line.
"""

from ncsn_tf.runtime import console as _console

# Before TensorFlow loads: its start-up notices stay off the console (runtime/console.py).
_console.quiet_tensorflow()

__version__ = "0.1.0"
