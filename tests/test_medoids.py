"""Medoids, importance and interest selection against brute-force numpy (float64)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from mirecall_jax.pinnersage import cluster_importance, medoids, select_interests

B, L, D, M = 6, 20, 5, 8


def random_user_batch(seed: int):
    """Labels 0..k-1 per user (k varies, some users with empty ids), -1 on scattered padding."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(B, L, D)).astype(np.float32)
    labels = np.full((B, L), -1, np.int32)
    for b in range(B):
        n = int(rng.integers(1, L + 1))
        k = int(rng.integers(1, min(n, M) + 1))
        lab = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])  # every id 0..k-1 used
        labels[b, np.sort(rng.choice(L, n, replace=False))] = rng.permutation(lab)
    ages = rng.uniform(0, 30, size=(B, L)).astype(np.float32)
    return emb, labels, ages


def brute_force_medoids(emb, labels):
    idx = np.full((B, M), -1)
    cost_of = {}
    for b in range(B):
        x = emb[b].astype(np.float64)
        for m in range(M):
            members = np.nonzero(labels[b] == m)[0]
            if len(members):
                cost = ((x[members][:, None] - x[members][None]) ** 2).sum(-1).sum(1)  # summed sq dist
                idx[b, m] = members[np.argmin(cost)]
                cost_of[b, m] = dict(zip(members, cost))
    return idx, cost_of


def test_medoids_match_brute_force():
    for seed in range(3):
        emb, labels, _ = random_user_batch(seed)
        got, valid = map(np.asarray, medoids(emb, labels, M))
        want, cost_of = brute_force_medoids(emb, labels)
        np.testing.assert_array_equal(valid, want >= 0)
        np.testing.assert_array_equal(got[~valid], -1)
        for b, m in zip(*np.nonzero(valid)):
            costs = cost_of[b, m]
            assert labels[b, got[b, m]] == m
            # the chosen member's summed squared distance is minimal (tie-robust: a two-member
            # cluster has two equally good medoids); with distinct costs it is scipy's/numpy's pick
            assert costs[got[b, m]] <= min(costs.values()) * (1 + 1e-5) + 1e-6
            if len(costs) > 2:
                assert got[b, m] == want[b, m]


def test_cluster_importance_formula():
    emb, labels, ages = random_user_batch(5)
    for lam in (0.0, 0.1, 2.0):
        got = np.asarray(cluster_importance(labels, ages, lam, M))
        w = np.exp(-lam * ages.astype(np.float64))
        want = np.array([[w[b][labels[b] == m].sum() for m in range(M)] for b in range(B)])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-30)
    assert np.all(np.asarray(cluster_importance(labels, ages, 0.0, M)).sum(1) == (labels >= 0).sum(1))


def test_select_top_interests():
    emb, labels, ages = random_user_batch(6)
    K = 4
    interests, valid = map(np.asarray, select_interests(emb, labels, ages, 0.1, K, max_clusters=M))
    med, _ = brute_force_medoids(emb, labels)
    imp = np.asarray(cluster_importance(labels, ages, 0.1, M))
    assert interests.shape == (B, K, D) and valid.shape == (B, K)
    for b in range(B):
        present = np.nonzero(med[b] >= 0)[0]
        order = present[np.argsort(-imp[b, present], kind="stable")][:K]  # most important first
        np.testing.assert_array_equal(valid[b], np.arange(K) < len(order))
        np.testing.assert_allclose(interests[b, : len(order)], emb[b, med[b, order]])
        assert np.all(interests[b, len(order):] == 0)


def test_select_top_ranks_clusters_whose_weights_underflow():
    # exp(-lam * age) underflows to 0 for both clusters, yet the newer one must still rank first;
    # asking for more interests (6) than cluster ids (4) leaves the extra slots invalid.
    emb = np.eye(4, dtype=np.float32)[None]
    labels = np.array([[0, 0, 1, -1]], np.int32)
    ages = np.array([[200.0, 210.0, 150.0, 0.0]], np.float32)
    assert np.all(np.asarray(cluster_importance(labels, ages, 1.0, 4)) == 0)
    interests, valid = map(np.asarray, select_interests(emb, labels, ages, 1.0, 6))  # K=6 > M=L=4
    np.testing.assert_array_equal(valid[0], [True, True, False, False, False, False])
    np.testing.assert_array_equal(interests[0, 0], emb[0, 2])


def test_sample_interests_proportional_to_importance():
    # 4000 copies of one user: each row draws its own Gumbel noise, i.e. 4000 independent samples.
    n = 4000
    weights = np.array([4.0, 2.0, 1.0, 1.0])  # importance of clusters 0..3 (ages 0, lam 0: counts)
    lab = np.repeat(np.arange(4), weights.astype(int)).astype(np.int32)  # 8 members
    emb = np.tile(np.arange(8, dtype=np.float32)[:, None], (n, 1, 3)).reshape(n, 8, 3)
    labels, ages = np.tile(lab, (n, 1)), np.zeros((n, 8), np.float32)
    key = jax.random.key(0)
    interests, valid = map(np.asarray, select_interests(emb, labels, ages, 0.0, 2, mode="sample", rng=key))
    assert valid.all()
    first, second = lab[interests[:, 0, 0].astype(int)], lab[interests[:, 1, 0].astype(int)]
    assert np.all(first != second)  # without replacement
    p = weights / weights.sum()
    np.testing.assert_allclose(np.bincount(first, minlength=4) / n, p, atol=0.03)
    # second draw given first = 0: proportional to the remaining weights (2, 1, 1) / 4
    after0 = second[first == 0]
    np.testing.assert_allclose(np.bincount(after0, minlength=4)[1:] / len(after0), [0.5, 0.25, 0.25], atol=0.05)
    # deterministic per key, different across keys
    again = np.asarray(select_interests(emb, labels, ages, 0.0, 2, mode="sample", rng=key)[0])
    other = np.asarray(select_interests(emb, labels, ages, 0.0, 2, mode="sample", rng=jax.random.key(1))[0])
    np.testing.assert_array_equal(again, interests)
    assert np.any(other != interests)


def test_select_interests_rejects_bad_mode():
    emb, labels, ages = random_user_batch(0)
    with pytest.raises(ValueError):
        select_interests(emb, labels, ages, 0.1, 2, mode="sample")
    with pytest.raises(ValueError):
        select_interests(emb, labels, ages, 0.1, 2, mode="best")
