"""Metrics: image quality (FID, KID, Inception Score) and exact toy metrics.

The image metrics below are pure numpy (`ncsn_tf.metrics.image`); importing
this package loads no TensorFlow. Feature extractors (the FID Inception graph,
Keras InceptionV3, a tiny random net) live in `ncsn_tf.metrics.inception`, toy
metrics in `ncsn_tf.metrics.toy`; both import TensorFlow, so import them
explicitly. The end-to-end pipeline (sampling -> features -> metrics.json) is
`ncsn_tf.evaluation`.
"""

from ncsn_tf.metrics.image import activation_statistics
from ncsn_tf.metrics.image import fid_from_activations
from ncsn_tf.metrics.image import fid_from_statistics
from ncsn_tf.metrics.image import inception_score_from_logits
from ncsn_tf.metrics.image import kid_from_activations
from ncsn_tf.metrics.image import load_statistics
from ncsn_tf.metrics.image import RunningStatistics
from ncsn_tf.metrics.image import save_statistics

__all__ = [
    'RunningStatistics', 'activation_statistics', 'fid_from_activations', 'fid_from_statistics',
    'inception_score_from_logits', 'kid_from_activations', 'load_statistics', 'save_statistics',
]
