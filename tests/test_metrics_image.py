"""Tests for ncsn_tf.metrics.image (FID, KID, IS, statistics files) and
ncsn_tf.metrics.inception (feature extractors).

Mathematics is checked against independent references: scipy.linalg.sqrtm as
in TTUR's fid.py, closed forms for Gaussians, the improved-gan IS formula,
and a pairwise-loop MMD^2. Tolerances are stated next to each assertion.
"""

import os

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from ncsn_tf.metrics import image
from ncsn_tf.metrics import inception
from ncsn_tf.metrics.image import activation_statistics
from ncsn_tf.metrics.image import fid_from_activations
from ncsn_tf.metrics.image import fid_from_statistics
from ncsn_tf.metrics.image import inception_score_from_logits
from ncsn_tf.metrics.image import kid_from_activations
from ncsn_tf.metrics.image import load_statistics
from ncsn_tf.metrics.image import RunningStatistics
from ncsn_tf.metrics.image import save_statistics


def _scipy_fid(mu1, sigma1, mu2, sigma2):
    """TTUR's calculate_frechet_distance, verbatim in substance (scipy sqrtm)."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)


def _correlated_features(rng, n, d, scale=1.0, shift=0.0):
    """Non-negative-ish correlated features, like pool_3 activations."""
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return np.abs(rng.normal(size=(n, d)) @ mixing) * scale + shift


# ---------------------------------------------------------------- FID


@pytest.mark.parametrize(
    "n, d",
    [
        (400, 32),  # well-conditioned: N >> D
        (20, 64),  # near-singular: rank 19 < D
        (60, 200),  # near-singular, larger D
    ],
)
def test_fid_matches_scipy_sqrtm(n, d):
    rng = np.random.default_rng(n + d)
    act1 = _correlated_features(rng, n, d)
    act2 = _correlated_features(rng, n + 7, d, scale=1.3, shift=0.1)
    mu1, sigma1 = activation_statistics(act1)
    mu2, sigma2 = activation_statistics(act2)
    expected = _scipy_fid(mu1, sigma1, mu2, sigma2)
    # scipy's Schur sqrtm of a singular product is itself only accurate to
    # ~1e-8 relative (it returns imaginary parts of that size), hence rtol 1e-6
    # for N < D; 1e-10 for a well-conditioned product.
    rtol = 1e-10 if n > d else 1e-6
    np.testing.assert_allclose(fid_from_activations(act1, act2), expected, rtol=rtol)
    np.testing.assert_allclose(fid_from_statistics(mu1, sigma1, mu2, sigma2), expected, rtol=rtol)


@pytest.mark.parametrize("n, d", [(300, 16), (30, 128), (200, 1024)])
def test_fid_of_set_against_itself_is_zero(n, d):
    act = _correlated_features(np.random.default_rng(d), n, d)
    mu, sigma = activation_statistics(act)
    # Tolerance: 1e-9 of the total variance Tr(sigma); (200, 1024) is the
    # FID-like near-singular case where clipping only negative eigenvalues
    # gives a visible negative bias (about -2e-5 here, -2e-4 at D = 2048).
    assert abs(fid_from_statistics(mu, sigma, mu, sigma)) <= 1e-9 * np.trace(sigma)


def test_fid_closed_form_diagonal_gaussians():
    rng = np.random.default_rng(1)
    d = 50
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    var1, var2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    # Closed form for commuting covariances: sum (v1 + v2 - 2 sqrt(v1 v2)).
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2.0 * np.sqrt(var1 * var2))
    np.testing.assert_allclose(
        fid_from_statistics(mu1, np.diag(var1), mu2, np.diag(var2)), expected, rtol=1e-12
    )
    # FID is invariant to a common rotation of both Gaussians (non-diagonal case).
    sigma1 = rotation @ np.diag(var1) @ rotation.T
    sigma2 = rotation @ np.diag(var2) @ rotation.T
    np.testing.assert_allclose(
        fid_from_statistics(rotation @ mu1, sigma1, rotation @ mu2, sigma2), expected, rtol=1e-10
    )


def test_fid_one_dimensional_closed_form():
    # W2^2 between N(0, 4) and N(3, 1): 9 + (2 - 1)^2 = 10.
    assert fid_from_statistics([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(10.0, rel=1e-12)


def test_fid_of_samples_approaches_closed_form():
    rng = np.random.default_rng(2)
    d, n = 4, 200_000
    std1, std2 = np.array([1.0, 2.0, 0.5, 1.5]), np.array([1.5, 1.0, 0.5, 3.0])
    act1 = rng.normal(size=(n, d)) * std1
    act2 = rng.normal(size=(n, d)) * std2 + 1.0
    expected = d * 1.0 + np.sum((std1 - std2) ** 2)
    # Sampling error of the plug-in estimate at n = 2e5 is ~1e-2 here.
    assert fid_from_activations(act1, act2) == pytest.approx(expected, abs=0.05)


def test_fid_rejects_bad_shapes_and_values():
    mu, sigma = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="sigma2 has shape"):
        fid_from_statistics(mu, sigma, mu, np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        fid_from_statistics(mu, sigma, mu + np.nan, sigma)
    with pytest.raises(ValueError, match="feature dimensions"):
        fid_from_activations(np.zeros((5, 3)), np.zeros((5, 4)))


def test_fid_falls_back_to_eps_regularisation(monkeypatch):
    calls = []
    original = image._trace_sqrt_product

    def flaky(sigma1, sigma2):
        calls.append(np.trace(sigma1))
        return float("nan") if len(calls) == 1 else original(sigma1, sigma2)

    monkeypatch.setattr(image, "_trace_sqrt_product", flaky)
    sigma = np.diag([1.0, 2.0])
    with pytest.warns(RuntimeWarning, match="adding 0.001"):
        value = fid_from_statistics(np.zeros(2), sigma, np.zeros(2), sigma, eps=1e-3)
    # Second call sees sigma + eps I; the result is then ~0 (eps-perturbed).
    assert calls[1] == pytest.approx(3.0 + 2e-3)
    assert abs(value) < 1e-2


# ---------------------------------------------------------------- statistics


def test_running_statistics_matches_numpy_on_concatenation():
    rng = np.random.default_rng(3)
    # Large common offset: the naive sum-of-squares formula would lose ~8
    # digits here; the shifted sums must not.
    batches = [rng.normal(size=(b, 12)) * 0.5 + 1e4 for b in (1, 7, 32, 3, 64)]
    stats = RunningStatistics()
    for batch in batches:
        stats.update(batch.astype(np.float32) if batch.shape[0] == 3 else batch)
    batches[3] = batches[3].astype(np.float32).astype(np.float64)
    everything = np.concatenate(batches)
    mu, sigma = stats.mean_cov()
    assert stats.count == everything.shape[0]
    np.testing.assert_allclose(mu, everything.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(sigma, np.cov(everything, rowvar=False), rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(sigma, sigma.T)


def test_running_statistics_errors():
    stats = RunningStatistics(feature_dim=4)
    with pytest.raises(ValueError, match="at least 2"):
        stats.mean_cov()
    with pytest.raises(ValueError, match="expected 4"):
        stats.update(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        stats.update(np.zeros(4))


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    mu, sigma = activation_statistics(rng.normal(size=(30, 6)))
    path = save_statistics(tmp_path / "stats", mu, sigma, extractor="tiny", num_samples=30)
    assert path.endswith(".npz") and os.path.isfile(path)
    loaded_mu, loaded_sigma = load_statistics(path, feature_dim=6)
    np.testing.assert_array_equal(loaded_mu, mu)
    np.testing.assert_array_equal(loaded_sigma, sigma)
    with np.load(path) as data:
        assert str(data["extractor"]) == "tiny" and int(data["num_samples"]) == 30
    with pytest.raises(ValueError, match="reserved"):
        save_statistics(tmp_path / "bad", mu, sigma, mu=1)
    with pytest.raises(ValueError, match="reserved"):
        save_statistics(tmp_path / "bad", mu, sigma, file="x")


def test_load_ttur_format(tmp_path):
    # TTUR's precomputed files: np.savez with keys 'mu' and 'sigma' (float32 here).
    path = tmp_path / "fid_stats_cifar10_train.npz"
    mu, sigma = np.arange(3, dtype=np.float32), np.eye(3, dtype=np.float32) * 2
    np.savez(path, mu=mu, sigma=sigma)
    loaded_mu, loaded_sigma = load_statistics(path)
    assert loaded_mu.dtype == np.float64 and loaded_sigma.dtype == np.float64
    np.testing.assert_array_equal(loaded_mu, mu)
    np.testing.assert_array_equal(loaded_sigma, sigma)


def test_load_statistics_errors_are_clear_one_liners(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz") as info:
        load_statistics(missing)
    messages = [str(info.value)]

    no_sigma = tmp_path / "no_sigma.npz"
    np.savez(no_sigma, mu=np.zeros(3), cov=np.eye(3))
    with pytest.raises(ValueError, match=r"missing key\(s\) \['sigma'\]") as info:
        load_statistics(no_sigma)
    messages.append(str(info.value))

    mismatched = tmp_path / "mismatched.npz"
    np.savez(mismatched, mu=np.zeros(3), sigma=np.eye(4))
    with pytest.raises(ValueError, match="mu must be") as info:
        load_statistics(mismatched)
    messages.append(str(info.value))

    good = tmp_path / "good.npz"
    np.savez(good, mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(ValueError, match="expected 2048") as info:
        load_statistics(good, feature_dim=2048)
    messages.append(str(info.value))
    assert all("\n" not in message for message in messages)


# ---------------------------------------------------------------- KID


def _loop_mmd2_unbiased(x, y):
    """Direct O(m^2) pairwise-loop unbiased MMD^2 with k = (x.y/D + 1)^3."""
    m, d = x.shape

    def kernel(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    xx = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m))
    return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (m * m)


def test_kid_matches_direct_pairwise_computation():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(25, 6))
    y = rng.normal(size=(25, 6)) * 1.2 + 0.3
    # subset_size 1000 clips to N = 25, so each subset is a permutation of its
    # set, and MMD^2 is permutation invariant: the estimate is exact.
    mean, std = kid_from_activations(x, y, num_subsets=2, subset_size=1000, seed=0)
    np.testing.assert_allclose(mean, _loop_mmd2_unbiased(x, y), rtol=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)
    # Unequal sizes clip to the smaller one (25 rows of the 40).
    y_big = rng.normal(size=(40, 6))
    assert np.isfinite(kid_from_activations(x, y_big, num_subsets=2)[0])
    with pytest.raises(ValueError, match="at least 2"):
        kid_from_activations(x[:1], y)


def test_kid_is_unbiased_for_equal_distributions():
    rng = np.random.default_rng(6)
    trials, m, d = 300, 20, 8
    unbiased, biased = [], []
    for _ in range(trials):
        x, y = rng.normal(size=(m, d)), rng.normal(size=(m, d))
        unbiased.append(kid_from_activations(x, y, num_subsets=1, subset_size=m)[0])
        k = lambda a, b: (a @ b.T / d + 1.0) ** 3  # noqa: E731
        biased.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
    unbiased, biased = np.array(unbiased), np.array(biased)
    standard_error = unbiased.std() / np.sqrt(trials)
    # Same distribution: the unbiased estimator averages to 0 within 4
    # standard errors, while the biased (V-statistic) one is clearly positive
    # (which shows this test can tell the two apart).
    assert abs(unbiased.mean()) < 4 * standard_error
    assert biased.mean() > 10 * (biased.std() / np.sqrt(trials))


def test_kid_subsets_same_vs_different_distribution():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    shifted = rng.normal(size=(600, 16)) + 0.5
    mean_same, std_same = kid_from_activations(x, y, num_subsets=50, subset_size=200)
    mean_diff, _ = kid_from_activations(x, shifted, num_subsets=50, subset_size=200)
    assert abs(mean_same) < 3 * std_same
    assert mean_diff > mean_same + 10 * std_same
    # Deterministic given the seed.
    assert kid_from_activations(x, y, num_subsets=5, subset_size=50, seed=3) == (
        kid_from_activations(x, y, num_subsets=5, subset_size=50, seed=3)
    )


# ---------------------------------------------------------------- IS


def _improved_gan_is(preds, splits):
    """openai/improved-gan's IS on probabilities (its formula, unchanged)."""
    scores = []
    for i in range(splits):
        part = preds[(i * preds.shape[0] // splits) : ((i + 1) * preds.shape[0] // splits), :]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return np.mean(scores), np.std(scores)


def test_inception_score_confident_uniform_classes_is_k():
    k, per_split, splits = 7, 21, 10
    labels = np.arange(per_split * splits) % k  # each split uses every class equally
    logits = 60.0 * np.eye(k)[labels]  # p(y|x) one-hot up to e^-60
    mean, std = inception_score_from_logits(logits, splits=splits)
    # KL per sample = log K exactly up to O(K e^-60).
    assert mean == pytest.approx(k, rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_identical_rows_is_one():
    logits = np.tile(np.random.default_rng(8).normal(size=(1, 12)), (50, 1))
    mean, std = inception_score_from_logits(logits, splits=5)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_matches_improved_gan_formula_with_uneven_splits():
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(103, 9)) * 2.0  # 103 rows: uneven split sizes
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = _improved_gan_is(probs, splits=10)
    np.testing.assert_allclose(inception_score_from_logits(logits, splits=10), expected, rtol=1e-12)


def test_inception_score_hand_computation_two_samples():
    # p1 = (1, 0), p2 = (1/2, 1/2) (logit -inf approximated by -1e3);
    # p(y) = (3/4, 1/4). KL1 = log(4/3); KL2 = 1/2 log(2/3) + 1/2 log 2.
    logits = np.array([[0.0, -1e3], [0.0, 0.0]])
    expected = np.exp(0.5 * (np.log(4 / 3) + 0.5 * np.log(2 / 3) + 0.5 * np.log(2.0)))
    mean, _ = inception_score_from_logits(logits, splits=1)
    assert mean == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="splits"):
        inception_score_from_logits(logits, splits=3)


# ---------------------------------------------------------------- extractors


def _fake_fid_graph_def(feature_dim=4, num_classes=5):
    """A GraphDef with the 2015 FID graph's tensor names, wiring and old ops,
    so the import / modernise / prune / batching logic is tested without the
    real 95 MB file:

      DecodeJpeg -> Cast -> ExpandDims -> ResizeBilinear 299 -> (x-128)/128
      -> Conv2D -> BatchNormWithGlobalNormalization (scaled, and unscaled)
      -> Relu -> old-style Concat -> pool_3 [1,1,1,2F]
      -> reshape to batch 1 -> softmax/logits/MatMul -> + bias -> softmax

    with producer version 5, as in the 2015 file (BatchNormWithGlobalNormalization
    was removed in GraphDef version 9 and cannot be created directly today, so
    placeholder Identity nodes are rewritten in the proto).
    """
    rng = np.random.default_rng(10)
    kernel = rng.normal(size=(3, 3, 3, feature_dim)).astype(np.float32) * 0.1
    weights = rng.normal(size=(2 * feature_dim, num_classes)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        contents = tf.compat.v1.placeholder(tf.string, [], name="DecodeJpeg/contents")
        decoded = tf.io.decode_jpeg(contents, channels=3, name="DecodeJpeg")
        cast = tf.cast(decoded, tf.float32, name="Cast")
        expanded = tf.expand_dims(cast, 0, name="ExpandDims")
        resized = tf.compat.v1.image.resize_bilinear(expanded, [299, 299], name="ResizeBilinear")
        normalised = tf.multiply(tf.subtract(resized, 128.0, name="Sub"), 1 / 128.0, name="Mul")
        conv = tf.nn.conv2d(normalised, kernel, strides=8, padding="VALID", name="conv")
        for prefix in ("bn_scaled", "bn_plain"):
            for stat in ("mean", "variance", "beta", "gamma"):
                low = 0.5 if stat in ("variance", "gamma") else -0.5
                values = rng.uniform(low, low + 1.0, feature_dim).astype(np.float32)
                tf.constant(values, name=f"{prefix}/{stat}")
        branches = [tf.nn.relu(tf.identity(conv, name=name)) for name in ("bn_scaled", "bn_plain")]
        concat = tf.concat(branches, axis=3, name="mixed")
        pool = tf.reduce_mean(concat, axis=[1, 2], keepdims=True, name="pool_3")
        flat = tf.reshape(pool, [1, 2 * feature_dim], name="pool_3/_reshape")
        softmax_weights = tf.constant(weights, name="softmax/weights")
        matmul = tf.matmul(flat, softmax_weights, name="softmax/logits/MatMul")
        logits = tf.nn.bias_add(matmul, tf.ones([num_classes]), name="softmax/logits")
        tf.nn.softmax(logits, name="softmax")
    graph_def = graph.as_graph_def()
    for node in graph_def.node:
        if node.name in ("bn_scaled", "bn_plain"):
            node.op = "BatchNormWithGlobalNormalization"
            del node.input[:]
            stats = ("mean", "variance", "beta", "gamma")
            node.input.extend(["conv"] + [f"{node.name}/{stat}" for stat in stats])
            node.attr["variance_epsilon"].f = 1e-3
            node.attr["scale_after_normalization"].b = node.name == "bn_scaled"
        elif node.name == "mixed":  # ConcatV2(values..., axis) -> Concat(axis, values...)
            inputs = list(node.input)
            del node.input[:]
            node.input.extend([inputs[-1]] + inputs[:-1])
            node.op = "Concat"
            del node.attr["Tidx"]
    graph_def.versions.producer = 5
    return graph_def


def test_fid_inception_graph_matches_ttur_style_session(tmp_path):
    graph_def = _fake_fid_graph_def()
    (tmp_path / inception.FID_INCEPTION_FILENAME).write_bytes(graph_def.SerializeToString())
    images = np.random.default_rng(11).uniform(size=(3, 40, 30, 3)).astype(np.float32)

    # A directory holding classify_image_graph_def.pb is accepted like the file.
    extractor = inception.FIDInceptionGraph(tmp_path)
    assert extractor.comparable_with_published and extractor.name == "fid_inception_2015"
    features, logits = extractor(images)  # batch of 3 through a batch-1 graph
    assert features.shape == (3, 8) and logits.shape == (3, 5)

    # Reference: the unmodified graph (genuine BatchNormWithGlobalNormalization
    # kernel) run TTUR / improved-gan style, one image at a time fed to
    # 'ExpandDims:0' in [0, 255] through a TF1 session.
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        for i in range(3):
            pool, matmul = session.run(
                ["pool_3:0", "softmax/logits/MatMul:0"],
                {"ExpandDims:0": images[i : i + 1] * 255.0},
            )
            # float32 round-off of a reordered but equivalent computation.
            np.testing.assert_allclose(features[i], pool.reshape(-1), rtol=1e-5, atol=1e-6)
            # Logits without the bias, as improved-gan computes them.
            np.testing.assert_allclose(logits[i], matmul[0], rtol=1e-5, atol=1e-5)
    assert np.ptp(features, axis=0).max() > 1e-3  # images give distinct features


def test_missing_inception_files_give_clear_errors(tmp_path):
    for path in (tmp_path / "classify_image_graph_def.pb", tmp_path):
        with pytest.raises(inception.InceptionWeightsNotFoundError) as info:
            inception.FIDInceptionGraph(path)
        message = str(info.value)
        assert isinstance(info.value, FileNotFoundError)
        assert inception.FID_INCEPTION_URL in message and "TTUR" in message
        assert "\n" not in message
    with pytest.raises(FileNotFoundError, match="InceptionV3 weights not found"):
        inception.KerasInceptionV3(tmp_path / "inception_v3.h5")
    not_a_graph = tmp_path / "garbage.pb"
    not_a_graph.write_bytes(b"\xff\xfe not a protobuf")
    with pytest.raises(ValueError, match="GraphDef"):
        inception.FIDInceptionGraph(not_a_graph)


def test_tiny_random_inception_end_to_end():
    rng = np.random.default_rng(12)
    real = rng.uniform(size=(40, 16, 16, 3)).astype(np.float32)
    fake = (rng.uniform(size=(40, 16, 16, 3)) ** 3).astype(np.float32)  # darker images
    extractor = inception.tiny_random_inception(seed=0, feature_dim=16, num_classes=6)
    assert not extractor.comparable_with_published

    batches = [real[:16], real[16:32], real[32:]]  # uneven last batch
    result = inception.extract_batches(extractor, batches, keep_features=True)
    assert result.features.shape == (40, 16) and result.logits.shape == (40, 6)
    assert result.features.dtype == np.float32 and np.all(result.features >= 0)
    mu, sigma = result.statistics.mean_cov()
    np.testing.assert_allclose(mu, result.features.astype(np.float64).mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(
        sigma, np.cov(result.features.astype(np.float64), rowvar=False), rtol=1e-7, atol=1e-12
    )

    # Batching does not change features; same seed -> same network.
    features_once, _ = inception.tiny_random_inception(seed=0, feature_dim=16, num_classes=6)(real)
    np.testing.assert_allclose(features_once, result.features, rtol=1e-5, atol=1e-6)
    other, _ = inception.tiny_random_inception(seed=1, feature_dim=16, num_classes=6)(real)
    assert not np.allclose(other, features_once)

    fake_batches = tf.data.Dataset.from_tensor_slices(fake).batch(16)
    fake_result = inception.extract_batches(extractor, fake_batches)
    fid_real_real = fid_from_statistics(mu, sigma, mu, sigma)
    fid_real_fake = fid_from_statistics(mu, sigma, *fake_result.statistics.mean_cov())
    assert abs(fid_real_real) < 1e-9 and fid_real_fake > 0
    is_mean, _ = inception_score_from_logits(result.logits, splits=4)
    assert 1.0 <= is_mean <= 6.0
    kid_mean, _ = kid_from_activations(
        result.features, result.features, num_subsets=3, subset_size=20
    )
    assert np.isfinite(kid_mean)

    # Grayscale is tiled to RGB; images outside [0, 1] are rejected.
    gray_features, _ = extractor(real[:4, :, :, :1])
    rgb_features, _ = extractor(np.repeat(real[:4, :, :, :1], 3, axis=-1))
    np.testing.assert_allclose(gray_features, rgb_features, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        extractor(real * 2.0 - 1.0)
    bf16_features, _ = extractor(tf.cast(real[:4], tf.bfloat16))  # mixed-precision samples
    assert bf16_features.shape == (4, 16)


def test_keras_inception_v3_with_user_weights_file(tmp_path):
    import keras

    # Random weights saved locally stand in for the ImageNet file (no download).
    base = keras.applications.InceptionV3(weights=None, classifier_activation=None)
    weights_path = tmp_path / "inception_v3.weights.h5"
    base.save_weights(weights_path)
    extractor = inception.KerasInceptionV3(weights_path)
    assert extractor.name == "keras_inception_v3" and not extractor.comparable_with_published

    images = np.random.default_rng(13).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    features, logits = extractor(images)
    assert features.shape == (2, 2048) and logits.shape == (2, 1000)
    # Reference: the documented preprocessing (bilinear to 299, [0,1] -> [-1,1]).
    inputs = tf.image.resize(images, [299, 299], method="bilinear") * 2.0 - 1.0
    pool_model = keras.Model(base.inputs, base.get_layer("avg_pool").output)
    np.testing.assert_allclose(features, pool_model(inputs), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(logits, base(inputs), rtol=1e-4, atol=1e-7)


def test_extractors_stay_float32_under_mixed_precision():
    import keras

    saved = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        extractor = inception.tiny_random_inception(seed=0, feature_dim=8, num_classes=3)
    finally:
        keras.config.set_dtype_policy(saved)
    assert keras.config.dtype_policy().name == saved.name
    assert all(layer.dtype_policy.name == "float32" for layer in extractor.model.layers)
