"""Ward clustering against scipy (the oracle): `linkage(x, 'ward')` and `fcluster(..., 'distance')`.

Exact comparison (same rows, ids, sizes; heights to 1e-4 relative) is only meaningful where the
merge order is unambiguous. With equal heights, which tied merge comes first is a legitimate
choice, and our float32 arithmetic can break or create ties differently from scipy's float64.
Then:
* If the tied merges do not interact (duplicate points: whatever the order, the same groups of
  identical points form at height 0), the tree is still unique up to the order of tied rows: the
  sorted heights agree and cutting both trees at any threshold strictly between two distinct
  heights gives the same partition.
* If they interact (grids, equally spaced points), a different choice changes later clusters, so
  even those partitions may legitimately differ from scipy's. We check instead that our tree is a
  valid greedy Ward tree: replaying its rows in float64, every merge joins a pair at the minimal
  Ward distance among the clusters present at that moment, at the reported height.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, is_monotonic, is_valid_linkage, linkage

from mirecall_jax.pinnersage import cluster_users, ward_linkage, ward_merges
from mirecall_jax.pinnersage.ward import _to_scipy

RTOL = 1e-4


def canon(labels) -> np.ndarray:
    """Renumber clusters 0, 1, ... in order of first appearance."""
    seen: dict = {}
    return np.array([seen.setdefault(int(v), len(seen)) for v in labels], dtype=np.int64)


def gap_thresholds(heights: np.ndarray, scale: float) -> list[float]:
    """Midpoints between consecutive distinct heights (distinct: farther apart than tolerance)."""
    h = np.sort(heights)
    tol = RTOL * scale + 1e-6
    return [0.5 * (a + b) for a, b in zip(h[:-1], h[1:]) if b - a > 4 * tol] + [-1.0, h[-1] + 1.0]


def assert_same_tree(zj: np.ndarray, zs: np.ndarray) -> bool:
    """Tie-robust equality of two linkages; returns True when the rows could be compared exactly."""
    assert zj.shape == zs.shape
    assert is_valid_linkage(zj) and is_monotonic(zj)
    scale = max(float(zs[:, 2].max()), 1e-12)
    np.testing.assert_allclose(np.sort(zj[:, 2]), np.sort(zs[:, 2]), rtol=RTOL, atol=RTOL * scale * 1e-2)
    for t in gap_thresholds(zs[:, 2], scale):
        np.testing.assert_array_equal(canon(fcluster(zj, t, "distance")), canon(fcluster(zs, t, "distance")))
    h = np.sort(zs[:, 2])
    unambiguous = bool(np.all(np.diff(h) > RTOL * np.maximum(h[1:], 1e-12)))
    if unambiguous:  # no (near-)ties: scipy's rows, ids and sizes exactly, heights to 1e-4
        np.testing.assert_array_equal(zj[:, [0, 1, 3]], zs[:, [0, 1, 3]])
        np.testing.assert_allclose(zj[:, 2], zs[:, 2], rtol=RTOL)
    return unambiguous


def assert_greedy_ward(x: np.ndarray, z: np.ndarray) -> None:
    """Replay z in float64: each row merges a closest pair (Ward distance from the definition
    d(A, B)^2 = 2 |A| |B| / (|A| + |B|) ||mean_A - mean_B||^2, which scipy's update equals)."""
    n = len(x)
    assert is_valid_linkage(z) and is_monotonic(z)
    members = {i: [i] for i in range(n)}
    scale = max(float(z[:, 2].max()), float(np.abs(x).max()))  # absolute tolerance unit
    for k, (a, b, h, size) in enumerate(z):
        ids = sorted(members)
        mean = np.array([x[members[i]].mean(0) for i in ids])
        cnt = np.array([len(members[i]) for i in ids], float)
        d2 = 2 * np.outer(cnt, cnt) / np.add.outer(cnt, cnt) * ((mean[:, None] - mean[None]) ** 2).sum(-1)
        np.fill_diagonal(d2, np.inf)
        chosen = np.sqrt(d2[ids.index(int(a)), ids.index(int(b))])
        assert chosen <= np.sqrt(d2.min()) * (1 + RTOL) + 1e-6 * scale  # a closest pair
        assert abs(h - chosen) <= RTOL * chosen + 1e-6 * scale  # at its height
        members[n + k] = members.pop(int(a)) + members.pop(int(b))
        assert size == len(members[n + k])


def test_ward_linkage_matches_scipy_on_random_inputs():
    rng = np.random.default_rng(0)
    sizes = [2, 3, 64] + [int(n) for n in rng.integers(4, 64, size=19)]
    exact = 0
    for i, n in enumerate(sizes):
        d = (2, 16, 64)[i % 3]
        k = int(rng.integers(1, 5))  # Gaussian mixture with k components
        x = rng.normal(size=(k, d))[rng.integers(0, k, n)] * 3 + rng.normal(size=(n, d))
        exact += assert_same_tree(ward_linkage(x, pad_to=64), linkage(x, "ward"))
    assert exact >= 18  # almost every random input has distinct heights and is compared row by row


def test_ward_linkage_default_padding_and_scale():
    x = np.random.default_rng(1).normal(size=(5, 16)) * 1e3 + 50.0  # padded to L = 8; far from 0
    assert assert_same_tree(ward_linkage(x), linkage(x, "ward"))


@pytest.mark.parametrize("case", ["grid", "duplicates", "identical", "line"])
def test_ward_linkage_ties_and_duplicates(case):
    rng = np.random.default_rng(2)
    if case == "grid":  # 5 x 5 integer grid: many exactly equal distances
        x = np.array([(i, j) for i in range(5) for j in range(5)], float)
    elif case == "duplicates":  # 12 points, each repeated 1..4 times, shuffled: zero heights
        base = rng.normal(size=(12, 16))
        x = rng.permutation(np.repeat(base, rng.integers(1, 5, size=12), axis=0))
    elif case == "identical":
        x = np.tile(rng.normal(size=(1, 16)), (7, 1))
    else:  # equally spaced points on a line
        x = np.outer(np.arange(20.0), [3.0, 4.0])
    zj, zs = ward_linkage(x, pad_to=64), linkage(x, "ward")
    assert_greedy_ward(x, zj)
    if case in ("duplicates", "identical"):  # ties that do not interact: same tree as scipy
        assert_same_tree(zj, zs)
        assert np.sum(zj[:, 2] == 0) == np.sum(zs[:, 2] == 0) > 0  # exactly 0, like scipy


def test_ward_linkage_rejects_bad_input():
    with pytest.raises(ValueError):
        ward_linkage(np.zeros((1, 3)))
    with pytest.raises(ValueError):
        ward_linkage(np.array([[0.0, 1.0], [np.nan, 2.0]]))
    with pytest.raises(ValueError):
        ward_linkage(np.zeros((9, 2)), pad_to=8)


def padded_batch(seed: int, B: int = 20, L: int = 32, D: int = 16):
    """Users with different history lengths (0, 1, 2, ... L) at scattered valid positions."""
    rng = np.random.default_rng(seed)
    emb = np.zeros((B, L, D), np.float32)
    mask = np.zeros((B, L), bool)
    for b in range(B):
        n = [0, 1, 2, L][b] if b < 4 else int(rng.integers(3, L))
        mask[b, np.sort(rng.choice(L, n, replace=False))] = True
        k = int(rng.integers(1, 5))
        emb[b] = rng.normal(size=(k, D))[rng.integers(0, k, L)] * 3 + rng.normal(size=(L, D))
    links = [linkage(emb[b][mask[b]].astype(np.float64), "ward") if mask[b].sum() >= 2 else None for b in range(B)]
    return emb, mask, links


def expected_labels(z, n: int, t: float, max_clusters: int | None = None) -> np.ndarray:
    if z is None:
        return np.zeros(n, np.int64)
    lab = fcluster(z, t, "distance")
    if max_clusters is not None and lab.max() > max_clusters:
        lab = fcluster(z, max_clusters, "maxclust")
    return canon(lab)


def safe_thresholds(links, candidates) -> list[float]:
    """Thresholds not within 0.1% of any merge height (there float32 vs float64 could disagree)."""
    hs = np.concatenate([z[:, 2] for z in links if z is not None])
    return [t for t in candidates if np.min(np.abs(hs - t)) > 1e-3 * t]


def check_labels(labels: np.ndarray, mask: np.ndarray, links, thresholds, max_clusters=None):
    for b in range(mask.shape[0]):
        assert np.all(labels[b][~mask[b]] == -1)
        got = labels[b][mask[b]]
        want = expected_labels(links[b], int(mask[b].sum()), float(thresholds[b]), max_clusters)
        np.testing.assert_array_equal(got, want)  # == canon(...): numbered by first member


def test_cluster_users_matches_fcluster_per_threshold():
    emb, mask, links = padded_batch(3)
    m = ward_merges(emb, mask, chunk=8)  # 3 chunks, the last one padded
    np.testing.assert_array_equal(np.asarray(m.n_merges), np.maximum(mask.sum(1) - 1, 0))
    thresholds = safe_thresholds(links, [0.5, 2.0, 4.0, 6.0, 8.0, 11.0, 16.0, 30.0, 80.0])
    assert len(thresholds) >= 6
    for t in thresholds:  # one compiled function: the threshold is traced ([B] array)
        labels = np.asarray(cluster_users(emb, mask, jnp.full(20, t), chunk=8))
        assert labels.dtype == np.int32 and labels.shape == mask.shape
        check_labels(labels, mask, links, np.full(20, t))
    per_user = np.resize(thresholds, 20)  # a different threshold for each user
    check_labels(np.asarray(cluster_users(emb, mask, per_user, chunk=8)), mask, links, per_user)


def test_cluster_users_cut_keeps_merges_at_exactly_the_threshold():
    # fcluster(criterion='distance') splits where height > t, so a merge of height == t is kept.
    emb, mask, _ = padded_batch(3)
    emb[2] = 0.0
    emb[2, mask[2].nonzero()[0][1], :2] = (3.0, 4.0)  # user 2: two points exactly 5 apart
    z = linkage(emb[2][mask[2]].astype(np.float64), "ward")
    assert z[0, 2] == 5.0
    for t, want in ((5.0, [0, 0]), (np.nextafter(np.float32(5.0), 0), [0, 1])):
        labels = np.asarray(cluster_users(emb, mask, jnp.full(20, t), chunk=8))
        np.testing.assert_array_equal(labels[2][mask[2]], want)
        np.testing.assert_array_equal(want, canon(fcluster(z, t, "distance")))


def test_cluster_users_max_clusters():
    emb, mask, links = padded_batch(4)
    for t in safe_thresholds(links, [0.5, 9.0, 1e6]):
        labels = np.asarray(cluster_users(emb, mask, t, max_clusters=3))
        assert labels.max() <= 2
        check_labels(labels, mask, links, np.full(20, t), max_clusters=3)
    with pytest.raises(ValueError):
        cluster_users(emb, mask, 1.0, max_clusters=0)


def test_gram_distances_agree_with_scipy():
    # The faster dot-product distances (centred, clamped) still give scipy's tree on random data.
    emb, mask, links = padded_batch(5)
    m = ward_merges(emb, mask, chunk=8, distances="gram")
    for b in range(20):
        n = int(mask[b].sum())
        if n >= 2:  # slots are positions in L: renumber the valid ones 0..n-1 for scipy's format
            rank = np.cumsum(mask[b]) - 1
            lo, hi = rank[np.asarray(m.lo[b, : n - 1])], rank[np.asarray(m.hi[b, : n - 1])]
            assert assert_same_tree(_to_scipy(lo, hi, np.asarray(m.height[b, : n - 1]), n), links[b])
    with pytest.raises(ValueError):
        ward_merges(emb, mask, distances="cosine")
