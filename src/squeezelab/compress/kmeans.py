"""One-dimensional k-means for weight sharing.

In one dimension every cluster is an interval of the sorted values, so a Lloyd iteration is a
``searchsorted`` of the k-1 midpoints plus prefix sums (O(k log n) after one sort), and the *optimal*
clustering is a dynamic programme over split points (Wang & Song's Ckmeans.1d.dp), solved here row by
row with a vectorised divide-and-conquer on the monotone split point: O(k n log n).

``init="optimal"`` (default) runs that programme on the distinct values, or on a fine histogram when
there are many, then polishes with Lloyd iterations on the raw values. Han et al.'s ``"linear"``
initialisation (centroids evenly spaced between the minimum and maximum, then Lloyd) is kept for
comparison: Lloyd from there stops in local optima with several times the squared error at 4-7 bits.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

KMEANS_INITS = ("optimal", "linear", "density")
# The dynamic programme runs on the distinct values when there are at most HISTOGRAM_BINS of them (exact,
# e.g. re-clustering an already weight-shared model), otherwise on a histogram with BINS_PER_CLUSTER bins
# per cluster; Lloyd's iterations on the raw values then settle the boundaries (within 0.5% of exact).
BINS_PER_CLUSTER = 4
HISTOGRAM_BINS = 4096


def kmeans_1d(
    values: np.ndarray, k: int, init: str = "optimal", max_iter: int = 300
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``values`` into at most ``k`` centroids.

    Empty clusters are dropped, so the returned codebook (float32, ascending) can be shorter than ``k``.
    Returns ``(codebook, labels)`` with ``labels[i]`` the codebook index of ``values[i]``; every
    centroid is the mean of its members.
    """
    return kmeans_1d_many([values], [k], init, max_iter)[0]


def kmeans_1d_many(
    values: Sequence[np.ndarray], ks: Sequence[int], init: str = "optimal", max_iter: int = 300
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`kmeans_1d` for several independent arrays (one per layer) at once: the dynamic programmes
    of all of them advance together, sharing each vectorised step."""
    if init not in KMEANS_INITS:
        raise ValueError(f"k-means init must be one of {KMEANS_INITS}, got {init!r}")
    if any(k < 1 for k in ks):
        raise ValueError(f"k-means needs k >= 1 clusters, got {list(ks)}")
    data = [_Sorted(v) for v in values]
    if init == "optimal":
        starts = _optimal_initial_centroids(data, ks)
    else:
        starts = [_simple_initial_centroids(d.ordered, k, init) for d, k in zip(data, ks)]
    return [d.lloyd(c, max_iter) for d, c in zip(data, starts)]


class _Sorted:
    """One array's values sorted once, with prefix sums, so cluster means are two lookups."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = np.asarray(values, dtype=np.float64).ravel()
        self.order = np.argsort(self.values, kind="stable")
        self.ordered = self.values[self.order]
        self.prefix = np.concatenate([[0.0], np.cumsum(self.ordered)])

    def means(self, starts: np.ndarray, ends: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        sizes = ends - starts
        return np.where(sizes > 0, (self.prefix[ends] - self.prefix[starts]) / np.maximum(sizes, 1), fallback)

    def lloyd(self, centroids: np.ndarray, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
        if self.values.size == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        for _ in range(max_iter):
            updated = self.means(*_segments(self.ordered, centroids), centroids)
            if np.array_equal(updated, centroids):
                break
            # An empty cluster keeps its old centroid, which may now be out of order.
            centroids = np.sort(updated)
        starts, ends = _segments(self.ordered, centroids)
        used = ends > starts
        # Each shared value is exactly the mean of its members, converged or not.
        centroids = self.means(starts, ends, centroids)
        labels = np.empty(self.values.size, dtype=np.int64)
        labels[self.order] = np.repeat(np.arange(int(used.sum())), (ends - starts)[used])
        return centroids[used].astype(np.float32), labels


def _simple_initial_centroids(ordered: np.ndarray, k: int, init: str) -> np.ndarray:
    if ordered.size == 0:
        return np.zeros(0)
    if init == "linear":
        return np.linspace(ordered[0], ordered[-1], k)
    return np.quantile(ordered, (np.arange(k) + 0.5) / k)


def _optimal_initial_centroids(data: list[_Sorted], ks: Sequence[int]) -> list[np.ndarray]:
    compressed = [_compressed_points(d.ordered, min(HISTOGRAM_BINS, BINS_PER_CLUSTER * k)) for d, k in zip(data, ks)]
    all_cuts = optimal_cuts_many([c[0] for c in compressed], [c[1] for c in compressed], ks)
    centroids = []
    for d, (_, _, first), cuts in zip(data, compressed, all_cuts):
        # Cuts between compressed points -> positions in the sorted raw values -> member means.
        starts, ends = first[cuts[:-1]], first[cuts[1:]]
        keep = ends > starts
        centroids.append(d.means(starts[keep], ends[keep], np.zeros(int(keep.sum()))))
    return centroids


def _compressed_points(ordered: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct values (or histogram bins when there are many) with their counts, and for each point the
    index of its first member in ``ordered`` (plus ``len(ordered)`` at the end)."""
    if ordered.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(1, dtype=np.int64)
    distinct, first = np.unique(ordered, return_index=True)
    if len(distinct) > HISTOGRAM_BINS:
        edges = np.linspace(ordered[0], ordered[-1], bins + 1)[1:-1]
        first = np.unique(np.concatenate([[0], np.searchsorted(ordered, edges)]))
    first = np.append(first, len(ordered))
    counts = np.diff(first).astype(np.float64)
    sums = np.add.reduceat(ordered, first[:-1])
    return sums / counts, counts, first


def optimal_cuts(points: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """The k+1 cut indices splitting sorted ``points`` (with ``weights``) into at most k contiguous
    groups of minimum weighted squared error (exact dynamic programme)."""
    return optimal_cuts_many([points], [weights], [k])[0]


def optimal_cuts_many(
    points: Sequence[np.ndarray], weights: Sequence[np.ndarray], ks: Sequence[int]
) -> list[np.ndarray]:
    """:func:`optimal_cuts` for several problems at once, laid end to end in one array.

    Row ``g`` of the programme holds, for every prefix ``[0, j)`` of a problem, the least error of
    splitting it into ``g`` groups; prefix sums over the concatenated points give every group's error
    in O(1) as long as a group stays inside its own problem, which the search ranges guarantee.
    """
    sizes = np.array([len(p) for p in points], dtype=np.int64)
    capped_ks = np.minimum(np.asarray(ks, dtype=np.int64), np.maximum(sizes, 1))  # no more groups than points
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    x = np.concatenate([np.asarray(p, dtype=np.float64) for p in points])
    w = np.concatenate([np.asarray(v, dtype=np.float64) for v in weights])
    cumulative = [np.concatenate([[0.0], np.cumsum(w * x**p)]) for p in (0, 1, 2)]
    boundaries = np.arange(len(x) + 1)
    best = _group_costs(cumulative, np.repeat(np.append(offsets, len(x)), np.append(sizes, 1)), boundaries)
    choices = np.zeros((int(capped_ks.max(initial=1)) + 1, len(x) + 1), dtype=np.int32)
    for groups in range(2, int(capped_ks.max(initial=1)) + 1):
        active = (capped_ks >= groups) & (sizes >= groups)
        first, last = offsets[active], offsets[active] + sizes[active]
        best, choices[groups] = _next_row(best, cumulative, first + groups, last, first + groups - 1, last - 1)
    all_cuts = []
    for offset, size, k in zip(offsets.tolist(), sizes.tolist(), capped_ks.tolist()):
        cuts = [offset + size]
        for groups in range(k, 1, -1):
            cuts.append(int(choices[groups, cuts[-1]]))
        cuts.append(offset)
        all_cuts.append(np.array(cuts[::-1]) - offset)
    return all_cuts


def _group_costs(cumulative: list[np.ndarray], start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Weighted squared error of points[start:end] around their mean (prefix sums of w, w x, w x^2)."""
    count, total, squares = (c[end] - c[start] for c in cumulative)
    return squares - np.where(count > 0, total * total / np.where(count > 0, count, 1.0), 0.0)


def _next_row(
    previous: np.ndarray,
    cumulative: list[np.ndarray],
    low_j: np.ndarray,
    high_j: np.ndarray,
    low_i: np.ndarray,
    high_i: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """best[j] = min over i in [low_i, min(high_i, j - 1)] of previous[i] + cost(i, j), and the argmin,
    for every j in each range [low_j, high_j].

    The argmin is non-decreasing in j, so j's are solved middle-first with shrinking ranges of i
    (divide and conquer); every level of that recursion, over all ranges, is one vectorised step.
    """
    best = np.full(len(previous), np.inf)
    choice = np.zeros(len(previous), dtype=np.int64)
    keep = low_j <= high_j
    low_j, high_j, low_i, high_i = low_j[keep], high_j[keep], low_i[keep], high_i[keep]
    while len(low_j):
        mid = (low_j + high_j) // 2
        lengths = np.minimum(high_i, mid - 1) - low_i + 1
        starts = np.cumsum(lengths) - lengths
        segment = np.repeat(np.arange(len(mid)), lengths)
        candidates = np.arange(lengths.sum()) - starts[segment] + low_i[segment]
        costs = previous[candidates] + _group_costs(cumulative, candidates, mid[segment])
        minima = np.minimum.reduceat(costs, starts)
        hits = np.flatnonzero(costs == minima[segment])
        hits = hits[np.concatenate([[True], segment[hits][1:] != segment[hits][:-1]])]  # first minimum per range
        argmin = candidates[hits]
        best[mid], choice[mid] = minima, argmin
        left, right = low_j < mid, mid < high_j
        low_j, high_j, low_i, high_i = (
            np.concatenate([low_j[left], mid[right] + 1]),
            np.concatenate([mid[left] - 1, high_j[right]]),
            np.concatenate([low_i[left], argmin[right]]),
            np.concatenate([argmin[left], high_i[right]]),
        )
    return best, choice


def _segments(ordered: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start/end (exclusive) in the sorted values of each (ascending) centroid's cluster: nearest wins."""
    cuts = np.searchsorted(ordered, (centroids[1:] + centroids[:-1]) / 2)
    return np.concatenate([[0], cuts]), np.concatenate([cuts, [len(ordered)]])
