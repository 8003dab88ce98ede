"""Feature extractors for FID / IS / KID: images -> (pool features, logits).

Every extractor takes float32 images [N, H, W, C] in [0, 1] (C = 3, or C = 1,
which is tiled to RGB, e.g. for MNIST) and returns numpy float32
(features [N, F], logits [N, K]). Three are provided:

* `FIDInceptionGraph(path)`: THE network behind published FID and IS numbers,
  the 2015 Inception GraphDef `classify_image_graph_def.pb` from
  http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz
  (the archive TTUR and openai/improved-gan use). F = 2048 ('pool_3'),
  K = 1008. Only numbers from this extractor are comparable with papers.
* `KerasInceptionV3(weights_path)`: keras.applications.InceptionV3 with
  user-supplied ImageNet weights. F = 2048, K = 1000. A different network
  (different weights, padding and resize): its FID/IS are NOT comparable with
  published numbers; useful for relative comparisons only.
* `tiny_random_inception(...)`: a small randomly initialised conv net, for
  tests and offline smoke runs. Its numbers are meaningless for reporting.

Nothing here downloads anything: missing files raise
`InceptionWeightsNotFoundError` saying where to get them.

`extract_batches` streams an iterable of image batches through an extractor
into a `RunningStatistics` (for FID) and collects logits (for IS) and,
optionally, features (for KID).
"""

from __future__ import annotations

import os
from typing import Any
from typing import Iterable
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_def_registry  # op deprecation versions

from ncsn_tf.metrics.image import RunningStatistics

# Where the FID Inception graph comes from (TTUR README / fid.py, improved-gan).
FID_INCEPTION_URL = "http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"
FID_INCEPTION_FILENAME = "classify_image_graph_def.pb"

# Tensor names inside the 2015 graph, as used by TTUR and improved-gan. They
# feed 'ExpandDims:0' (a [1, H, W, 3] float image in [0, 255], the output of the
# graph's JPEG decoder) so the graph's own ResizeBilinear (to 299x299) and
# normalisation ((x - 128) / 128) run exactly as in the published numbers.
_GRAPH_INPUT = "ExpandDims:0"
_GRAPH_POOL = "pool_3:0"  # [B, 1, 1, 2048] average pool
# improved-gan's IS takes the weight matrix feeding this MatMul and computes
# logits = pool_3 @ W itself (no bias), because the graph's own logits path
# reshapes pool_3 to a hard-coded batch of 1. We do the same, so IS matches.
_GRAPH_LOGITS_MATMUL = "softmax/logits/MatMul"
_PIXEL_SCALE = 255.0

# keras.applications.InceptionV3 layer whose output is the 2048-d pool feature.
_KERAS_POOL_LAYER = "avg_pool"
_INCEPTION_SIZE = 299

# Tolerance on the [0, 1] range check: catches images in [-1, 1] or [0, 255]
# passed by mistake (a classic source of wrong FIDs) without rejecting
# interpolation overshoot.
_RANGE_TOLERANCE = 1e-3


class InceptionWeightsNotFoundError(FileNotFoundError):
    """A user-supplied network file is missing (nothing is ever downloaded)."""


class FeatureExtractor:
    """Common interface: `extractor(images) -> (features, logits)`.

    Attributes:
      name: short string identifying the network, for reports and stat files.
      comparable_with_published: True only for the FID Inception graph.

    Subclasses implement `_forward(images)`, a function from float32 tensors
    [N, H, W, 3] in [0, 1] to (features [N, F], logits [N, K]) tensors.
    """

    name: str = "feature_extractor"
    comparable_with_published: bool = False

    def __call__(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """Args: images: [N, H, W, 3 or 1] float in [0, 1] (numpy or tf.Tensor).

        Returns: (features [N, F], logits [N, K]) numpy float32.
        """
        images = _validate_images(images)
        features, logits = self._forward(images)
        return np.asarray(features, np.float32), np.asarray(logits, np.float32)

    def _forward(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _validate_images(images: Any) -> tf.Tensor:
    """Checks shape and [0, 1] range; returns float32 [N, H, W, 3]."""
    # cast, not convert_to_tensor(dtype=...): accepts bfloat16 / float64 tensors.
    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    if images.shape.rank != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [N, H, W, 3] or [N, H, W, 1], got shape {images.shape}")
    # One host sync per batch: evaluation is outside the training hot loop.
    low, high = 0.0, 0.0
    if tf.size(images) > 0:
        low, high = float(tf.reduce_min(images)), float(tf.reduce_max(images))
    if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
        raise ValueError(
            f"images must be in [0, 1], got values in [{low:.3g}, {high:.3g}]; "
            "map model outputs from [-1, 1] with (x + 1) / 2 before evaluation"
        )
    if images.shape[-1] == 1:
        # Grayscale (MNIST): replicate to RGB, the usual convention for FID.
        images = tf.tile(images, [1, 1, 1, 3])
    return images


def _resolve_graph_path(path: str | os.PathLike) -> str:
    """Accepts the .pb file or a directory holding it (e.g. the extracted tgz)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, FID_INCEPTION_FILENAME)
    if not os.path.isfile(path):
        raise InceptionWeightsNotFoundError(
            f"FID Inception graph not found at {path}: download {FID_INCEPTION_URL} "
            f"(the archive named in the TTUR README) and extract {FID_INCEPTION_FILENAME} "
            "from it; nothing is downloaded automatically"
        )
    return path


class FIDInceptionGraph(FeatureExtractor):
    """The 2015 Inception GraphDef used by TTUR (FID) and improved-gan (IS).

    features = 'pool_3' [N, 2048]; logits = pool_3 @ W [N, 1008] with W the
    weight of 'softmax/logits/MatMul' (no bias, as in improved-gan's IS code).
    Images are scaled to [0, 255] and fed to 'ExpandDims:0', so the graph's own
    bilinear resize to 299x299 and normalisation run unchanged, as in TTUR.
    Any input size works; any batch size works (the graph is imported with a
    [None, None, None, 3] input, which removes the batch-1 shapes that TTUR
    and improved-gan patch by hand).
    """

    name = "fid_inception_2015"
    comparable_with_published = True

    def __init__(self, path: str | os.PathLike):
        """Args: path: `classify_image_graph_def.pb`, or the directory holding it.

        Raises:
          InceptionWeightsNotFoundError: the file is missing.
          ValueError: the file is not a GraphDef with the expected tensors.
        """
        self.path = _resolve_graph_path(path)
        graph_def = tf.compat.v1.GraphDef()
        with open(self.path, "rb") as f:
            try:
                graph_def.ParseFromString(f.read())
            except Exception as error:  # protobuf's DecodeError has no stable import path
                raise ValueError(f"{self.path} is not a TensorFlow GraphDef: {error}") from None
        self._forward_fn = _import_fid_graph(_modernise_graph_def(graph_def), self.path)

    def _forward(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self._forward_fn(images * _PIXEL_SCALE)


def _add_node(graph_def: Any, op: str, name: str, inputs: list[str], dtype: Any) -> Any:
    node = graph_def.node.add()
    node.op, node.name = op, name
    node.input.extend(inputs)
    node.attr["T"].CopyFrom(dtype)
    return node


def _batch_norm_as_elementwise_ops(node: Any, out: Any) -> None:
    """Appends to `out` the BatchNormWithGlobalNormalization `node` rewritten
    with the arithmetic of its kernel, op by op:
      output = (x - mean) * (rsqrt(var + eps) [* gamma]) + beta.
    The last node keeps the original name, so consumers need no rewiring."""
    x, mean, var, beta, gamma = [name for name in node.input if not name.startswith("^")]
    control_inputs = [name for name in node.input if name.startswith("^")]
    dtype = node.attr["T"]
    prefix = node.name + "/_modernised"
    eps = out.node.add()
    eps.op, eps.name = "Const", prefix + "/variance_epsilon"
    eps.attr["dtype"].type = dtype.type
    eps.attr["value"].tensor.CopyFrom(
        tf.make_tensor_proto(node.attr["variance_epsilon"].f, dtype=tf.as_dtype(dtype.type))
    )
    _add_node(out, "AddV2", prefix + "/var_eps", [var, eps.name], dtype)
    _add_node(out, "Rsqrt", prefix + "/inv_std", [prefix + "/var_eps"], dtype)
    scale = prefix + "/inv_std"
    if node.attr["scale_after_normalization"].b:
        _add_node(out, "Mul", prefix + "/scale", [scale, gamma], dtype)
        scale = prefix + "/scale"
    _add_node(out, "Sub", prefix + "/centred", [x, mean], dtype)
    _add_node(out, "Mul", prefix + "/scaled", [prefix + "/centred", scale], dtype)
    _add_node(out, "AddV2", node.name, [prefix + "/scaled", beta] + control_inputs, dtype)


def _modernise_graph_def(graph_def: Any) -> Any:
    """Replaces ops removed from current GraphDef versions.

    The 2015 graph (producer version < 9) uses BatchNormWithGlobalNormalization,
    removed in GraphDef version 9. Importing works (the check uses the file's
    producer version), but pruning re-creates ops at the current version and
    fails; so each such node is rewritten to the same arithmetic. Any other
    removed op gets a clear error instead of a deep TF traceback.
    """
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.op == "BatchNormWithGlobalNormalization":
            _batch_norm_as_elementwise_ops(node, out)
            continue
        op_def = op_def_registry.get(node.op)
        if op_def is not None and op_def.HasField("deprecation"):
            raise ValueError(
                f"graph op {node.name!r} of type {node.op} was removed in GraphDef version "
                f"{op_def.deprecation.version} and has no rewrite here"
            )
        out.node.add().CopyFrom(node)
    return out


def _import_fid_graph(graph_def: Any, path: str) -> Any:
    """Imports the GraphDef into a pruned ConcreteFunction [B,H,W,3] -> (feat, logits)."""

    def import_graph(images_0_255):
        try:
            pool, matmul = tf.compat.v1.import_graph_def(
                graph_def,
                input_map={_GRAPH_INPUT: images_0_255},
                return_elements=[_GRAPH_POOL, _GRAPH_LOGITS_MATMUL],
                name="fid_inception",
            )
        except (ValueError, KeyError) as error:
            raise ValueError(
                f"{path} lacks the FID Inception tensors {_GRAPH_INPUT}, {_GRAPH_POOL}, "
                f"{_GRAPH_LOGITS_MATMUL}: {error}"
            ) from None
        weights = matmul.inputs[1]
        features = tf.reshape(pool, [-1, weights.shape[0]])
        return features, tf.matmul(features, weights)

    image_spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    wrapped = tf.compat.v1.wrap_function(import_graph, [image_spec])
    # Prune to the subgraph between our input and outputs: drops the JPEG
    # decoder's string placeholder and the batch-1 reshape of the original
    # softmax path, which could otherwise not run.
    return wrapped.prune(feeds=wrapped.inputs, fetches=wrapped.outputs)


class KerasFeatureExtractor(FeatureExtractor):
    """Wraps a Keras model images -> (features, logits) with a preprocessing.

    The model sees `preprocess(images)` where images are float32 [N, H, W, 3]
    in [0, 1]; the forward pass is one tf.function traced once for any N, H, W.
    """

    def __init__(self, model: keras.Model, name: str, preprocess=None):
        self.model = model
        self.name = name
        self._preprocess = preprocess if preprocess is not None else (lambda x: x)
        self._forward_fn = tf.function(
            self._forward_impl,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
        )

    def _forward_impl(self, images):
        features, logits = self.model(self._preprocess(images), training=False)
        return tf.cast(features, tf.float32), tf.cast(logits, tf.float32)

    def _forward(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self._forward_fn(images)


def _inception_v3_preprocess(images: tf.Tensor) -> tf.Tensor:
    """[0, 1] -> resize to 299x299 bilinear -> [-1, 1] (keras InceptionV3's range)."""
    images = tf.image.resize(images, [_INCEPTION_SIZE, _INCEPTION_SIZE], method="bilinear")
    return images * 2.0 - 1.0


class _Float32Policy:
    """Builds models in float32 whatever global mixed-precision policy is set
    (metrics must not be computed in bfloat16)."""

    def __enter__(self):
        self._saved = keras.config.dtype_policy()
        keras.config.set_dtype_policy("float32")

    def __exit__(self, *exc_info):
        keras.config.set_dtype_policy(self._saved)


def KerasInceptionV3(weights_path: str | os.PathLike) -> KerasFeatureExtractor:  # noqa: N802
    """keras.applications.InceptionV3 with user-supplied full (with top) weights.

    NOT comparable with published FID/IS: different weights and architecture
    details than the 2015 graph. Use for relative comparisons only.

    Args:
      weights_path: a .h5 / .weights.h5 / .keras weights file for
        InceptionV3(include_top=True), e.g. keras's
        inception_v3_weights_tf_dim_ordering_tf_kernels.h5.

    Returns:
      An extractor: features 'avg_pool' [N, 2048], logits [N, 1000]; images
      resized to 299x299 (bilinear) and mapped to [-1, 1].

    Raises:
      InceptionWeightsNotFoundError: the file is missing.
    """
    weights_path = os.fspath(weights_path)
    if not os.path.isfile(weights_path):
        raise InceptionWeightsNotFoundError(
            f"InceptionV3 weights not found at {weights_path}: supply a keras.applications "
            "InceptionV3 (include_top=True) weights file; nothing is downloaded automatically"
        )
    with _Float32Policy():
        # classifier_activation=None: the top Dense outputs logits, not softmax.
        base = keras.applications.InceptionV3(
            include_top=True, weights=weights_path, classifier_activation=None
        )
    model = keras.Model(
        base.inputs, [base.get_layer(_KERAS_POOL_LAYER).output, base.outputs[0]]
    )
    return KerasFeatureExtractor(model, "keras_inception_v3", _inception_v3_preprocess)


def tiny_random_inception(
    seed: int = 0, feature_dim: int = 64, num_classes: int = 10
) -> KerasFeatureExtractor:
    """A small randomly initialised conv net with the extractor interface.

    For tests and offline smoke runs ONLY: its FID/IS/KID are meaningless as
    reported numbers. Deterministic given `seed`. Any image size works
    (global average pooling); inputs are mapped from [0, 1] to [-1, 1].

    Returns:
      An extractor: features [N, feature_dim] (ReLU, >= 0, like pool_3) and
      logits [N, num_classes].
    """
    with _Float32Policy():
        images = keras.Input([None, None, 3])
        hidden = images
        for i, width in enumerate((16, 32, feature_dim)):
            hidden = keras.layers.Conv2D(
                width,
                3,
                strides=2,
                padding="same",
                activation="relu",
                kernel_initializer=keras.initializers.HeNormal(seed=seed * 7919 + i),
                name=f"conv_{i}",
            )(hidden)
        features = keras.layers.GlobalAveragePooling2D(name="pool")(hidden)
        logits = keras.layers.Dense(
            num_classes,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed * 7919 + 100),
            name="logits",
        )(features)
        model = keras.Model(images, [features, logits], name="tiny_random_inception")
    return KerasFeatureExtractor(
        model, f"tiny_random_inception(seed={seed})", lambda x: x * 2.0 - 1.0
    )


class ExtractionResult(NamedTuple):
    """What `extract_batches` collected.

    statistics: RunningStatistics over the features (-> FID via mean_cov()).
    logits: [N, K] float32 (-> Inception Score), or None if not kept.
    features: [N, F] float32 (-> KID), or None if not kept.
    """

    statistics: RunningStatistics
    logits: np.ndarray | None
    features: np.ndarray | None


def extract_batches(
    extractor: FeatureExtractor,
    image_batches: Iterable[Any],
    keep_logits: bool = True,
    keep_features: bool = False,
) -> ExtractionResult:
    """Streams image batches through `extractor`.

    Args:
      extractor: any FeatureExtractor (or callable images -> (features, logits)).
      image_batches: iterable (list, generator, tf.data.Dataset) of float
        [B, H, W, 3 or 1] batches in [0, 1].
      keep_logits: keep all logits ([N, K], small) for the Inception Score.
      keep_features: keep all features for KID ([N, F]; 50k x 2048 float32 is
        400 MB, hence off by default: FID only needs the running statistics).

    Returns:
      ExtractionResult(statistics, logits or None, features or None).
    """
    statistics = RunningStatistics()
    logits_list, features_list = [], []
    for batch in image_batches:
        features, logits = extractor(batch)
        statistics.update(features)
        if keep_logits:
            logits_list.append(logits)
        if keep_features:
            features_list.append(features)
    if statistics.count == 0:
        raise ValueError("extract_batches: image_batches yielded no images")
    return ExtractionResult(
        statistics,
        np.concatenate(logits_list) if keep_logits else None,
        np.concatenate(features_list) if keep_features else None,
    )
