"""Image-quality metrics on Inception activations: FID, KID and Inception Score.

Pure numpy, float64 internally, so that the numbers are comparable with the
published reference implementations:

* FID: Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge
  to a Local Nash Equilibrium" (reference code: bioinf-jku/TTUR ``fid.py``).
* Inception Score: Salimans et al. 2016, "Improved Techniques for Training GANs"
  (reference code: openai/improved-gan ``inception_score/model.py``).
* KID: Binkowski et al. 2018, "Demystifying MMD GANs" (cubic polynomial kernel,
  unbiased MMD^2 averaged over random subsets).

The activations themselves come from `ncsn_tf.metrics.inception`; this module
never touches TensorFlow. scipy is deliberately not used (it is a test-only
dependency): the matrix square root in FID is computed with symmetric
eigendecompositions (see `fid_from_statistics`).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

# Keys of a statistics file. 'mu' and 'sigma' are the keys TTUR's precomputed
# statistics (fid_stats_cifar10_train.npz, ...) use, so those files load as-is.
_MU_KEY = "mu"
_SIGMA_KEY = "sigma"

# KID's cubic polynomial kernel k(x, y) = (x.y / D + coef0) ** degree
# (Binkowski et al. 2018, Sec. 3; sklearn's polynomial_kernel defaults).
_KID_DEGREE = 3
_KID_COEF0 = 1.0


def _as_activations(act: Any, name: str) -> np.ndarray:
    """Returns `act` as a float64 [N, D] array, or raises a one-line ValueError."""
    act = np.asarray(act, dtype=np.float64)
    if act.ndim != 2:
        raise ValueError(f"{name} must be a [N, D] array of activations, got shape {act.shape}")
    if not np.all(np.isfinite(act)):
        raise ValueError(f"{name} contains NaN or Inf values")
    return act


def activation_statistics(act: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of activations, as TTUR computes them.

    Args:
      act: [N, D] activations (N >= 2), any float dtype.

    Returns:
      (mu [D], sigma [D, D]) in float64; sigma is the unbiased sample covariance
      (`np.cov(act, rowvar=False)`, divisor N - 1), which is what TTUR's
      reference statistics contain.
    """
    act = _as_activations(act, "act")
    if act.shape[0] < 2:
        raise ValueError(f"need at least 2 activations for a covariance, got {act.shape[0]}")
    return act.mean(axis=0), np.cov(act, rowvar=False)


class RunningStatistics:
    """Streaming mean and covariance of [B, D] batches, for FID over 50k samples.

    Keeps the count, the sum and the sum of outer products in float64, so
    memory is O(D^2) whatever the number of samples. The sums are taken about
    a fixed shift (the mean of the first batch): `cov = (S2 - n m m^T)/(n-1)`
    computed from raw sums cancels catastrophically when |mean| >> std, and
    centring on a rough mean estimate removes that cancellation at no cost.

    Example:
      stats = RunningStatistics()
      for batch in batches:          # each [B, D]
        stats.update(batch)
      mu, sigma = stats.mean_cov()   # == np.mean / np.cov of the concatenation
    """

    def __init__(self, feature_dim: int | None = None):
        """Args: feature_dim: D, or None to take it from the first batch."""
        self.feature_dim = feature_dim
        self.count = 0
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._sum_outer: np.ndarray | None = None

    def update(self, batch: Any) -> None:
        """Adds a [B, D] batch of activations (numpy array or tf.Tensor)."""
        batch = _as_activations(batch, "batch")
        if self.feature_dim is None:
            self.feature_dim = batch.shape[1]
        if batch.shape[1] != self.feature_dim:
            raise ValueError(
                f"batch has feature dimension {batch.shape[1]}, expected {self.feature_dim}"
            )
        if batch.shape[0] == 0:
            return
        if self._shift is None:
            self._shift = batch.mean(axis=0)
            self._sum = np.zeros(self.feature_dim, np.float64)
            self._sum_outer = np.zeros((self.feature_dim, self.feature_dim), np.float64)
        centred = batch - self._shift
        self._sum += centred.sum(axis=0)
        self._sum_outer += centred.T @ centred
        self.count += batch.shape[0]

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns (mu [D], sigma [D, D]) float64, sigma with divisor N - 1."""
        if self.count < 2:
            raise ValueError(f"need at least 2 samples for a covariance, got {self.count}")
        centred_mean = self._sum / self.count
        sigma = (self._sum_outer - self.count * np.outer(centred_mean, centred_mean)) / (
            self.count - 1
        )
        # Exact symmetry: the rank-one update can leave round-off asymmetry.
        sigma = 0.5 * (sigma + sigma.T)
        return self._shift + centred_mean, sigma


def _clip_psd_eigvals(eigvals: np.ndarray) -> np.ndarray:
    """Zeroes eigenvalues that are round-off noise of a symmetric PSD matrix.

    eigh returns the zero eigenvalues of a singular PSD matrix (covariances
    from N < D samples) as +-(D * machine eps * largest eigenvalue) noise. The
    square root is not Lipschitz at 0, so each noisy value would add
    sqrt(noise) ~ 1e-8 * scale to a trace, and thousands of them a visible
    bias (e.g. FID(x, x) = -2e-4 instead of 0 for N = 200, D = 2048). Values
    below the usual rank tolerance (as in np.linalg.matrix_rank) are
    therefore set to 0: a true eigenvalue that small is indistinguishable
    from round-off anyway.
    """
    tolerance = eigvals.shape[0] * np.finfo(np.float64).eps * max(eigvals.max(initial=0.0), 0.0)
    return np.where(eigvals > tolerance, eigvals, 0.0)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix via eigh."""
    eigvals, eigvecs = np.linalg.eigh(matrix)
    return (eigvecs * np.sqrt(_clip_psd_eigvals(eigvals))) @ eigvecs.T


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr(sqrt(sigma1 @ sigma2)) for symmetric PSD sigma1, sigma2.

    TTUR calls scipy.linalg.sqrtm on the non-symmetric product sigma1 @ sigma2
    (Schur method), which can return complex values and is inaccurate when the
    product is singular (N < D: every FID on fewer than 2048 samples). Here:
    sigma1 @ sigma2 = A^-1 (A sigma2 A) A with A = sqrt(sigma1), so the product
    has the same eigenvalues as M = A sigma2 A (for singular A too: AB and BA
    always share eigenvalues). M is symmetric PSD, so its eigenvalues are real
    and >= 0, and the trace of the principal square root of sigma1 @ sigma2 is
    sum(sqrt(eig(M))). Both steps are symmetric eigendecompositions, which are
    backward stable; eigenvalues at round-off level (including those pushed
    slightly below 0) are zeroed, see `_clip_psd_eigvals`.
    """
    sqrt_sigma1 = _sqrt_psd(sigma1)
    middle = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    middle = 0.5 * (middle + middle.T)
    eigvals = np.linalg.eigvalsh(middle)
    return float(np.sqrt(_clip_psd_eigvals(eigvals)).sum())


def fid_from_statistics(
    mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (FID).

      d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2))

    Args:
      mu1, mu2: [D] means. sigma1, sigma2: [D, D] symmetric PSD covariances
        (e.g. from `activation_statistics`, `RunningStatistics` or a TTUR .npz).
      eps: as in TTUR, if the square-root term is not finite, eps * I is added
        to both covariances and the term recomputed (with a warning).

    Returns:
      The FID as a Python float (>= 0 up to round-off).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    dim = mu1.shape[0]
    for name, value, shape in (
        ("mu1", mu1, (dim,)),
        ("mu2", mu2, (dim,)),
        ("sigma1", sigma1, (dim, dim)),
        ("sigma2", sigma2, (dim, dim)),
    ):
        if value.shape != shape:
            raise ValueError(f"{name} has shape {value.shape}, expected {shape} (D = {dim})")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} contains NaN or Inf values")

    diff = mu1 - mu2
    try:
        tr_covmean = _trace_sqrt_product(sigma1, sigma2)
    except np.linalg.LinAlgError:
        tr_covmean = float("nan")
    if not np.isfinite(tr_covmean):
        # Same remedy as TTUR for a (near-)singular product: regularise both
        # covariances. With finite inputs the eigh route rarely gets here (eigh
        # failing to converge), but the fallback keeps TTUR's contract.
        warnings.warn(
            f"FID: square root of the covariance product is not finite; adding {eps} "
            "to the diagonal of both covariances",
            RuntimeWarning,
        )
        offset = eps * np.eye(dim)
        tr_covmean = _trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def fid_from_activations(act1: Any, act2: Any) -> float:
    """FID between two sets of activations, [N1, D] and [N2, D] (N1, N2 >= 2)."""
    act1 = _as_activations(act1, "act1")
    act2 = _as_activations(act2, "act2")
    if act1.shape[1] != act2.shape[1]:
        raise ValueError(
            f"act1 and act2 have different feature dimensions: {act1.shape[1]} vs {act2.shape[1]}"
        )
    mu1, sigma1 = activation_statistics(act1)
    mu2, sigma2 = activation_statistics(act2)
    return fid_from_statistics(mu1, sigma1, mu2, sigma2)


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / D + 1)^3 for all pairs: [m, D] x [n, D] -> [m, n]."""
    return (x @ y.T / x.shape[1] + _KID_COEF0) ** _KID_DEGREE


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 estimate between equally sized samples x, y: [m, D].

    Within-set kernel sums exclude the diagonal (k(x_i, x_i) terms bias the
    estimate upward), divided by m (m - 1); the cross term uses all m^2 pairs,
    as in Binkowski et al.'s reference code.
    """
    m = x.shape[0]
    k_xx = _polynomial_kernel(x, x)
    k_yy = _polynomial_kernel(y, y)
    k_xy = _polynomial_kernel(x, y)
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kid_from_activations(
    act1: Any,
    act2: Any,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018).

    For each of `num_subsets` subsets, `subset_size` rows are drawn without
    replacement from each set, and the unbiased MMD^2 with the cubic kernel
    k(x, y) = (x.y / D + 1)^3 is computed. KID is the mean over subsets
    (unbiased, so it can be slightly negative when the distributions match);
    the std over subsets is reported with it, as in the paper.

    Args:
      act1: [N1, D] activations. act2: [N2, D] activations.
      num_subsets: number of random subsets (>= 1).
      subset_size: rows per subset; clipped to min(N1, N2); must end >= 2.
      seed: seed of the numpy Generator choosing the subsets (deterministic).

    Returns:
      (mean, std) of the subset MMD^2 estimates, Python floats. Published KIDs
      are often quoted x 1000.
    """
    act1 = _as_activations(act1, "act1")
    act2 = _as_activations(act2, "act2")
    if act1.shape[1] != act2.shape[1]:
        raise ValueError(
            f"act1 and act2 have different feature dimensions: {act1.shape[1]} vs {act2.shape[1]}"
        )
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    size = min(subset_size, act1.shape[0], act2.shape[0])
    if size < 2:
        raise ValueError(f"KID needs subsets of at least 2 rows, got {size}")
    rng = np.random.default_rng(seed)
    estimates = np.empty(num_subsets, np.float64)
    for i in range(num_subsets):
        x = act1[rng.choice(act1.shape[0], size, replace=False)]
        y = act2[rng.choice(act2.shape[0], size, replace=False)]
        estimates[i] = _unbiased_mmd2(x, y)
    return float(estimates.mean()), float(estimates.std())


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def inception_score_from_logits(logits: Any, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016) from classifier logits.

    p(y|x) = softmax(logits); the N rows are cut into `splits` contiguous parts
    exactly as openai/improved-gan does (part i = rows [i N // splits,
    (i + 1) N // splits)), and per part IS = exp(mean_x KL(p(y|x) || p(y)))
    with p(y) the part's mean prediction. Logs are taken via log-softmax, so
    classes with probability underflowing to 0 contribute 0, not NaN.

    Args:
      logits: [N, K] unnormalised log-probabilities (N >= splits).
      splits: number of parts (10 in every published number).

    Returns:
      (mean, std) over the parts; std is numpy's population std, as published.
      1 <= IS <= K.
    """
    logits = _as_activations(logits, "logits")
    num = logits.shape[0]
    if splits < 1 or num < splits:
        raise ValueError(f"need 1 <= splits <= N, got splits={splits} and N={num}")
    log_p = _log_softmax(logits)
    scores = np.empty(splits, np.float64)
    for i in range(splits):
        part_log_p = log_p[i * num // splits : (i + 1) * num // splits]
        part_p = np.exp(part_log_p)
        log_marginal = np.log(part_p.mean(axis=0, keepdims=True))
        kl = (part_p * (part_log_p - log_marginal)).sum(axis=1).mean()
        scores[i] = np.exp(kl)
    return float(scores.mean()), float(scores.std())


def save_statistics(path: str | os.PathLike, mu: Any, sigma: Any, /, **meta: Any) -> str:
    """Saves FID statistics to a .npz file readable by TTUR (keys 'mu', 'sigma').

    Args:
      path: destination; '.npz' is appended if missing (numpy's behaviour).
      mu: [D] mean. sigma: [D, D] covariance.
      **meta: extra arrays/scalars/strings stored alongside (e.g.
        extractor='fid_inception_2015', num_samples=50000); not read back by
        `load_statistics`, inspect with `np.load`.

    Returns:
      The path actually written.
    """
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    _check_statistics_shapes(mu, sigma, str(path))
    # 'file' and 'allow_pickle' are np.savez's own keyword arguments.
    clash = {_MU_KEY, _SIGMA_KEY, "file", "allow_pickle"} & set(meta)
    if clash:
        raise ValueError(f"metadata keys {sorted(clash)} are reserved")
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    np.savez(path, **{_MU_KEY: mu, _SIGMA_KEY: sigma}, **meta)
    return path


def _check_statistics_shapes(mu: np.ndarray, sigma: np.ndarray, where: str) -> None:
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"{where}: mu must be [D] and sigma [D, D]; got mu {mu.shape}, sigma {sigma.shape}"
        )


def load_statistics(
    path: str | os.PathLike, feature_dim: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Loads (mu [D], sigma [D, D]) float64 from a .npz file.

    Reads files from `save_statistics` and TTUR's precomputed statistics
    (keys 'mu' and 'sigma').

    Args:
      path: the .npz file.
      feature_dim: if given, D must equal it (e.g. 2048 for the FID Inception).

    Raises:
      FileNotFoundError: no such file.
      ValueError: keys missing, or shapes inconsistent / not matching feature_dim.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FID statistics file not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        missing = [key for key in (_MU_KEY, _SIGMA_KEY) if key not in data.files]
        if missing:
            raise ValueError(
                f"{path}: missing key(s) {missing}; a statistics .npz needs 'mu' and 'sigma' "
                f"(found {sorted(data.files)})"
            )
        mu = np.asarray(data[_MU_KEY], dtype=np.float64)
        sigma = np.asarray(data[_SIGMA_KEY], dtype=np.float64)
    _check_statistics_shapes(mu, sigma, path)
    if feature_dim is not None and mu.shape[0] != feature_dim:
        raise ValueError(f"{path}: statistics have D = {mu.shape[0]}, expected {feature_dim}")
    return mu, sigma
