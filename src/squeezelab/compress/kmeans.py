"""One-dimensional k-means for weight sharing, as Han et al.: linear initialisation, Lloyd iterations.

In one dimension every cluster is an interval of the sorted values, so an iteration is a
``searchsorted`` of the k-1 midpoints plus prefix sums: O(k log n) per iteration after one sort.
"""

from __future__ import annotations

import numpy as np

KMEANS_INITS = ("linear", "density")


def kmeans_1d(
    values: np.ndarray, k: int, init: str = "linear", max_iter: int = 300
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``values`` into at most ``k`` centroids.

    ``init="linear"`` spaces the initial centroids evenly between the minimum and maximum (Han et al.:
    keeps the rare large weights represented); ``"density"`` uses quantiles. Empty clusters are dropped,
    so the returned codebook (float32, ascending) can be shorter than ``k``. Returns ``(codebook,
    labels)`` with ``labels[i]`` the codebook index of ``values[i]``.
    """
    if init not in KMEANS_INITS:
        raise ValueError(f"k-means init must be one of {KMEANS_INITS}, got {init!r}")
    if k < 1:
        raise ValueError(f"k-means needs k >= 1 clusters, got {k}")
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    prefix = np.concatenate([[0.0], np.cumsum(ordered)])
    centroids = _initial_centroids(ordered, k, init)
    for _ in range(max_iter):
        starts, ends = _segments(ordered, centroids)
        sizes = ends - starts
        updated = np.where(sizes > 0, (prefix[ends] - prefix[starts]) / np.maximum(sizes, 1), centroids)
        if np.array_equal(updated, centroids):
            break
        # An empty cluster keeps its old centroid, which may now be out of order.
        centroids = np.sort(updated)
    starts, ends = _segments(ordered, centroids)
    used = ends > starts
    # Each shared value is exactly the mean of its members, converged or not.
    centroids = (prefix[ends] - prefix[starts]) / np.maximum(ends - starts, 1)
    sorted_labels = np.repeat(np.arange(int(used.sum())), (ends - starts)[used])
    labels = np.empty(values.size, dtype=np.int64)
    labels[order] = sorted_labels
    return centroids[used].astype(np.float32), labels


def _initial_centroids(ordered: np.ndarray, k: int, init: str) -> np.ndarray:
    if init == "linear":
        return np.linspace(ordered[0], ordered[-1], k)
    return np.quantile(ordered, (np.arange(k) + 0.5) / k)


def _segments(ordered: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start/end (exclusive) in the sorted values of each (ascending) centroid's cluster: nearest wins."""
    cuts = np.searchsorted(ordered, (centroids[1:] + centroids[:-1]) / 2)
    return np.concatenate([[0], cuts]), np.concatenate([cuts, [len(ordered)]])
