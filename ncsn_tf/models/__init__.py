"""Score networks and the one score contract.

score_model.py: ScoreModel, what samplers, evaluation and export ask for scores.
registry.py: build_model from a Config (classifier.py: the guidance classifier's); each network module
registers itself, and this package imports them all so every import from
ncsn_tf.models sees the builtins.
"""

from ncsn_tf.models import mlp  # noqa: F401  (registers 'mlp')
from ncsn_tf.models import refinenet  # noqa: F401  (registers 'refinenet')
from ncsn_tf.models import unet  # noqa: F401  (registers 'unet')
