import numpy as np
import pytest

from squeezelab.compress.kmeans import kmeans_1d, kmeans_1d_many


@pytest.mark.parametrize("init", ["optimal", "linear", "density"])
def test_lloyd_fixed_point(init):
    values = np.random.default_rng(0).laplace(size=20_000).astype(np.float32)
    codebook, labels = kmeans_1d(values, 16, init=init)
    assert len(codebook) <= 16 and np.all(np.diff(codebook) > 0)
    # Every value sits with its nearest centroid, and every centroid is its members' mean.
    nearest = np.abs(values[:, None] - codebook[None, :]).argmin(1)
    assert (nearest == labels).mean() > 0.99  # Lloyd's iterations stop before the last few boundary moves
    means = np.array([values[labels == k].astype(np.float64).mean() for k in range(len(codebook))])
    np.testing.assert_allclose(codebook, means, rtol=1e-5, atol=1e-6)


def test_linear_init_keeps_the_extremes_represented():
    values = np.concatenate([np.random.default_rng(1).normal(0, 0.01, 10_000), [1.0, -1.0]])
    linear, _ = kmeans_1d(values, 8, init="linear")
    assert linear.max() == pytest.approx(1.0) and linear.min() == pytest.approx(-1.0)


def test_fewer_distinct_values_than_clusters():
    codebook, labels = kmeans_1d(np.array([0.5, 0.5, -1.0, 2.0]), 256)
    np.testing.assert_array_equal(codebook, [-1.0, 0.5, 2.0])
    np.testing.assert_array_equal(codebook[labels], [0.5, 0.5, -1.0, 2.0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="init"):
        kmeans_1d(np.ones(3), 2, init="random")
    with pytest.raises(ValueError, match="k >= 1"):
        kmeans_1d(np.ones(3), 0)


def test_optimal_init_finds_the_exact_optimum_where_lloyd_from_linear_does_not():
    # An already weight-shared layer: 256 distinct values with very uneven counts.
    rng = np.random.default_rng(3)
    levels = np.sort(rng.laplace(size=256))
    values = levels[rng.choice(256, 30_000, p=rng.dirichlet(np.full(256, 0.3)))]
    distinct, counts = np.unique(values, return_counts=True)
    exact = _brute_force_dp(distinct, counts, 12)
    optimal, labels = kmeans_1d(values, 12)
    error = ((optimal[labels] - values) ** 2).sum()
    assert error == pytest.approx(exact, rel=1e-9)
    linear, labels = kmeans_1d(values, 12, init="linear")
    assert ((linear[labels] - values) ** 2).sum() > error


def test_many_layers_at_once_equal_one_by_one():
    rng = np.random.default_rng(4)
    layers = [rng.normal(size=n) for n in (50, 5000, 20_000)]
    together = kmeans_1d_many(layers, [4, 64, 16])
    for values, k, (codebook, labels) in zip(layers, [4, 64, 16], together):
        alone = kmeans_1d(values, k)
        np.testing.assert_array_equal(codebook, alone[0])
        np.testing.assert_array_equal(labels, alone[1])


def _brute_force_dp(points, weights, k):
    """O(k n^2) textbook dynamic programme for the optimal weighted 1-D k-means error."""
    n = len(points)
    cost = np.zeros((n + 1, n + 1))
    for i in range(n):
        for j in range(i + 1, n + 1):
            x, w = points[i:j], weights[i:j]
            cost[i, j] = (w * (x - (w * x).sum() / w.sum()) ** 2).sum()
    best = cost[0].copy()
    for _ in range(2, k + 1):
        best = np.array([min(best[i] + cost[i, j] for i in range(j)) if j else 0.0 for j in range(n + 1)])
    return best[n]
