import numpy as np
import pytest

from squeezelab.compress.kmeans import kmeans_1d


@pytest.mark.parametrize("init", ["linear", "density"])
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
