"""Representation similarity: CKA (linear, RBF, debiased, minibatch) and CCA (mean R², SVCCA, PWCCA).

Written here rather than borrowed because the public implementations carry known bugs (anatome's
debiased terms and its distance that is a similarity, google/svcca's `acts1`/`acts2` mix-up in PWCCA,
CCA silently run on fewer samples than neurons). Everything is float64 numpy and follows the
references term by term:

- CKA and its Gram-matrix centring (biased and unbiased) follow Kornblith et al. 2019 and their
  `representation_similarity` code; RBF bandwidth σ = threshold × median pairwise distance.
- Minibatch CKA follows Nguyen et al. 2021: the unbiased HSIC estimator of Song et al. 2012 is
  computed per batch and the three HSIC sums are accumulated; per-batch CKA values are never averaged.
- SVCCA (Raghu et al. 2017) and PWCCA (Morcos et al. 2018): PWCCA weights each canonical correlation
  by Σ_j |⟨h_i, x_j⟩|, the canonical variate's summed absolute correlation with the original neurons
  of the *first* representation.

Inputs are (samples × features) matrices with samples in the same order in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.core.errors import DeployError

METHODS = ("linear-cka", "rbf-cka", "debiased-cka", "svcca", "pwcca")
CCA_METHODS = ("svcca", "pwcca")


class SimilarityError(DeployError):
    """Activations that cannot be compared as asked (shape mismatch, too few samples for CCA)."""


def _as_features(x: np.ndarray, name: str = "x") -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise SimilarityError(f"{name} must be a (samples x features) matrix, got shape {arr.shape}; "
                              "flatten or pool spatial dimensions first")
    if not np.all(np.isfinite(arr)):
        raise SimilarityError(f"{name} contains NaN or infinite values")
    return arr


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_features(x, "x"), _as_features(y, "y")
    if x.shape[0] != y.shape[0]:
        raise SimilarityError(f"x has {x.shape[0]} samples and y has {y.shape[0]}; both must describe the same inputs")
    return x, y


# ---------------------------------------------------------------- Gram matrices and centring
def gram_linear(x: np.ndarray) -> np.ndarray:
    """Linear kernel K = X Xᵀ."""
    x = _as_features(x)
    return x @ x.T


def gram_rbf(x: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """RBF kernel with σ² = threshold² × median squared distance (Kornblith et al.'s convention)."""
    if threshold <= 0:
        raise SimilarityError(f"RBF threshold must be > 0, got {threshold}")
    x = _as_features(x)
    dots = x @ x.T
    sq_norms = np.diag(dots)
    sq_dist = -2 * dots + sq_norms[:, None] + sq_norms[None, :]
    sq_median = np.median(sq_dist)
    if sq_median <= 0:
        raise SimilarityError("RBF CKA is undefined: the median pairwise distance is 0 (most samples identical)")
    return np.exp(-sq_dist / (2 * threshold ** 2 * sq_median))


def center_gram(gram: np.ndarray, unbiased: bool = False) -> np.ndarray:
    """Centre a Gram matrix; unbiased=True gives the U-statistic form whose inner product is unbiased HSIC.

    The unbiased form zeroes the diagonal and subtracts row means computed over n−2, so that
    ⟨center(K), center(L)⟩ = n(n−3)·HSIC₁(K, L) (Song et al. 2012), with HSIC₁ the unbiased estimator.
    """
    gram = np.array(gram, dtype=np.float64, copy=True)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise SimilarityError(f"a Gram matrix must be square, got shape {gram.shape}")
    if not np.allclose(gram, gram.T):
        raise SimilarityError("a Gram matrix must be symmetric")
    n = gram.shape[0]
    if unbiased:
        if n < 4:
            raise SimilarityError(f"unbiased HSIC needs at least 4 samples, got {n}")
        np.fill_diagonal(gram, 0)
        means = np.sum(gram, 0) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
    else:
        means = np.mean(gram, 0)
        means -= np.mean(means) / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def cka_from_grams(gram_x: np.ndarray, gram_y: np.ndarray, debiased: bool = False) -> float:
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) on centred Gram matrices."""
    if gram_x.shape != gram_y.shape:
        raise SimilarityError(f"Gram matrices differ in shape: {gram_x.shape} vs {gram_y.shape}")
    kx, ky = center_gram(gram_x, debiased), center_gram(gram_y, debiased)
    norm = np.linalg.norm(kx) * np.linalg.norm(ky)
    if norm == 0:
        raise SimilarityError("CKA is undefined: one representation is constant over the samples")
    return float(kx.ravel() @ ky.ravel() / norm)


# ---------------------------------------------------------------- CKA
def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (biased HSIC): invariant to orthogonal transforms and isotropic scaling."""
    x, y = _pair(x, y)
    return cka_from_grams(x @ x.T, y @ y.T)


def rbf_cka(x: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> float:
    """RBF-kernel CKA, σ = threshold × median distance of each representation."""
    x, y = _pair(x, y)
    return cka_from_grams(gram_rbf(x, threshold), gram_rbf(y, threshold))


def debiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA with the unbiased HSIC estimator: near 0 for independent representations even when p ≫ n."""
    x, y = _pair(x, y)
    return cka_from_grams(x @ x.T, y @ y.T, debiased=True)


def unbiased_hsic(gram_x: np.ndarray, gram_y: np.ndarray) -> float:
    """HSIC₁ of Song et al. 2012 (eq. 5), written out term by term, independent of `center_gram`.

    HSIC₁ = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3)), K̃, L̃ with zeroed diagonals.
    """
    n = gram_x.shape[0]
    if n < 4:
        raise SimilarityError(f"unbiased HSIC needs at least 4 samples per batch, got {n}")
    k = np.array(gram_x, dtype=np.float64, copy=True)
    l_ = np.array(gram_y, dtype=np.float64, copy=True)
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l_, 0)
    ones_k, ones_l = k.sum(0), l_.sum(0)
    trace = float(np.sum(k * l_))  # tr(K̃L̃) for symmetric matrices
    term2 = ones_k.sum() * ones_l.sum() / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * float(ones_k @ ones_l)
    return (trace + term2 - term3) / (n * (n - 3))


@dataclass
class MinibatchCKA:
    """Accumulates unbiased HSIC terms over batches (Nguyen et al. 2021) for linear CKA.

    Call `update(x_batch, y_batch)` for every batch (same inputs, same order, in both), then `value()`.
    With one batch the result equals `debiased_cka` on that batch. Per-batch CKA values are never
    averaged: the ratio is taken of the summed HSIC terms, which is what makes the estimate consistent.
    """

    hsic_xy: float = 0.0
    hsic_xx: float = 0.0
    hsic_yy: float = 0.0
    batches: int = 0
    samples: int = 0
    sizes: list[int] = field(default_factory=list)

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = _pair(x, y)
        kx, ky = x @ x.T, y @ y.T
        self.hsic_xy += unbiased_hsic(kx, ky)
        self.hsic_xx += unbiased_hsic(kx, kx)
        self.hsic_yy += unbiased_hsic(ky, ky)
        self.batches += 1
        self.samples += x.shape[0]
        self.sizes.append(x.shape[0])

    def value(self) -> float:
        if self.batches == 0:
            raise SimilarityError("minibatch CKA has seen no batch")
        denom = self.hsic_xx * self.hsic_yy
        if denom <= 0:
            raise SimilarityError("minibatch CKA is undefined: a representation has no (positive) self-HSIC; "
                                  "use larger batches")
        return float(self.hsic_xy / np.sqrt(denom))


def minibatch_cka(x_batches, y_batches) -> float:
    """Linear CKA over paired batches via accumulated unbiased HSIC."""
    acc = MinibatchCKA()
    for xb, yb in zip(x_batches, y_batches, strict=True):
        acc.update(xb, yb)
    return acc.value()


# ---------------------------------------------------------------- CCA
def samples_needed(features: int) -> int:
    """The fewest samples for which CCA on `features` centred neurons is not degenerate (rank needs n−1 ≥ p)."""
    return features + 1


def _check_cca_samples(x: np.ndarray, y: np.ndarray, method: str) -> None:
    n, p = x.shape[0], max(x.shape[1], y.shape[1])
    if n < samples_needed(p):
        raise SimilarityError(
            f"{method} needs more samples than neurons: got {n} samples for {p} neurons; "
            f"use at least {samples_needed(p)} samples (ideally {10 * p}+), fewer neurons, or a CKA method")


def _basis(x: np.ndarray, rtol: float = 1e-10, center: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormal basis of the (centred) columns' span, dropping null directions (dead or duplicate neurons).

    Returns (Q, S, Vt) from the thin SVD of X, truncated to its numerical rank. The SVD rather than QR
    is what keeps dead ReLU channels (constant columns) from producing spurious correlations.
    """
    xc = x - x.mean(0, keepdims=True) if center else x
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        raise SimilarityError("CCA is undefined: a representation is constant over the samples")
    keep = s > rtol * s[0]
    return u[:, keep], s[keep], vt[keep]


def cca(x: np.ndarray, y: np.ndarray, center: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Canonical correlations (descending) and the canonical variates of x, h_i (samples × k, unit norm)."""
    x, y = _pair(x, y)
    _check_cca_samples(x, y, "CCA")
    qx, _, _ = _basis(x, center=center)
    qy, _, _ = _basis(y, center=center)
    u, rho, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    return np.clip(rho, 0.0, 1.0), qx @ u


def mean_squared_cca(x: np.ndarray, y: np.ndarray, center: bool = False) -> float:
    """R²_CCA: Σρ² / min(p_x, p_y), exactly as Kornblith et al.'s `cca` computes it.

    Their function (and so the reference value 0.54312 of their demo) does not centre the features; pass
    center=True for the textbook CCA on centred data. The two agree when the features have zero mean.
    """
    x, y = _pair(x, y)
    rho, _ = cca(x, y, center=center)
    return float(np.sum(rho ** 2) / min(x.shape[1], y.shape[1]))


def _svd_reduce(x: np.ndarray, keep: float) -> np.ndarray:
    """Project the centred representation onto its top singular directions explaining `keep` of the variance."""
    q, s, _ = _basis(x)
    var = np.cumsum(s ** 2) / np.sum(s ** 2)
    k = int(np.searchsorted(var, keep - 1e-12) + 1)
    return q[:, :k] * s[:k]


def svcca(x: np.ndarray, y: np.ndarray, keep: float = 0.99) -> float:
    """SVCCA: SVD to the directions explaining `keep` of the variance, then mean canonical correlation."""
    if not 0 < keep <= 1:
        raise SimilarityError(f"SVCCA's kept variance must be in (0, 1], got {keep}")
    x, y = _pair(x, y)
    _check_cca_samples(x, y, "SVCCA")
    rho, _ = cca(_svd_reduce(x, keep), _svd_reduce(y, keep))
    return float(np.mean(rho))


def pwcca(x: np.ndarray, y: np.ndarray) -> float:
    """PWCCA (Morcos et al. 2018): canonical correlations weighted by how much of x each variate accounts for.

    α_i ∝ Σ_j |⟨h_i, x_j⟩| over x's centred neurons x_j, with h_i x's canonical variates. Asymmetric by
    design: the weights come from the first representation (x), never from y.
    """
    x, y = _pair(x, y)
    _check_cca_samples(x, y, "PWCCA")
    rho, h = cca(x, y)
    xc = x - x.mean(0, keepdims=True)
    weights = np.sum(np.abs(h.T @ xc), axis=1)
    total = weights.sum()
    if total == 0:
        raise SimilarityError("PWCCA is undefined: the canonical variates carry none of x's variance")
    return float(np.sum(weights / total * rho))


def similarity(x: np.ndarray, y: np.ndarray, method: str, *, rbf_threshold: float = 0.5) -> float:
    """One similarity value by method name (see METHODS); all are similarities, 1 = identical."""
    if method == "linear-cka":
        return linear_cka(x, y)
    if method == "rbf-cka":
        return rbf_cka(x, y, rbf_threshold)
    if method == "debiased-cka":
        return debiased_cka(x, y)
    if method == "svcca":
        return svcca(x, y)
    if method == "pwcca":
        return pwcca(x, y)
    raise SimilarityError(f"unknown similarity method {method!r}; known: {', '.join(METHODS)}")
