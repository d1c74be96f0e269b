"""mirecall_jax.metrics: top-k against a full sort, merge and metrics on hand-made examples."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from mirecall_jax import metrics
from mirecall_jax.serving import merge as merge_lib


def _reference_top_k(q, items, k, valid):
    s = q.astype(np.float64) @ items.T.astype(np.float64)  # [Q, M]
    s[:, ~valid] = -np.inf
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]  # stable: ties lower id first
    return np.take_along_axis(s, ids, axis=1), ids


@pytest.mark.parametrize(("m", "k", "chunk"), [(1001, 10, 128), (50, 10, 3), (300, 7, 65536)])
def test_chunked_top_k_equals_full_sort(m, k, chunk):
    rng = np.random.default_rng(m)
    q = rng.normal(size=(9, 16)).astype(np.float32)
    items = rng.normal(size=(m, 16)).astype(np.float32)
    items[0] = 10 * q.mean(axis=0)  # padding row would win every query if it were not excluded
    valid = rng.random(m) > 0.2
    for item_valid in (None, valid):
        scores, ids = metrics.chunked_top_k(jnp.asarray(q), jnp.asarray(items), k, chunk, item_valid)
        want_valid = np.ones(m, bool) if item_valid is None else valid.copy()
        want_valid[0] = False
        want_s, want_ids = _reference_top_k(q, items, k, want_valid)
        assert ids.shape == (9, k) and ids.dtype == jnp.int32
        np.testing.assert_array_equal(np.asarray(ids), want_ids)
        np.testing.assert_allclose(np.asarray(scores), want_s, rtol=1e-5, atol=1e-5)


def test_chunked_top_k_ties_and_too_few_items():
    items = np.array([[9.0], [1.0], [2.0], [1.0], [2.0]], np.float32)  # ids 2 and 4 tie, 1 and 3 tie
    scores, ids = metrics.chunked_top_k(jnp.ones((1, 1)), jnp.asarray(items), k=6, chunk_size=2)
    np.testing.assert_array_equal(np.asarray(ids), [[2, 4, 1, 3, 0, 0]])  # 4 valid items, then pad
    np.testing.assert_array_equal(np.asarray(scores), [[2, 2, 1, 1, -np.inf, -np.inf]])


def _hand_made_interests():
    neg = -np.inf
    ids = np.array([
        [[5, 3, 9], [3, 7, 0], [11, 12, 13]],  # user 0: interest 2 is invalid (its high scores ignored)
        [[4, 6, 8], [4, 6, 8], [1, 0, 0]],  # user 1: same items in two interests
    ])
    scores = np.array([
        [[0.9, 0.5, 0.1], [0.8, 0.6, neg], [5.0, 4.0, 3.0]],
        [[0.3, 0.2, 0.1], [0.1, 0.7, 0.05], [0.3, neg, neg]],
    ])
    valid = np.array([[True, True, False], [True, True, True]])
    return scores, ids, valid


def test_score_merge_hand_made():
    scores, ids, valid = _hand_made_interests()
    got_ids, got_s = merge_lib.merge_score(scores, ids, valid, n=5)[:2]
    # user 0: 5 (0.9), 3 (max(0.5, 0.8)), 7 (0.6), 9 (0.1), then padding
    # user 1: 6 (max(0.2, 0.7)), then 1 and 4 tie at 0.3 (lower id first), 8 (max(0.1, 0.05)), pad
    np.testing.assert_array_equal(got_ids, [[5, 3, 7, 9, 0], [6, 1, 4, 8, 0]])
    np.testing.assert_allclose(got_s, [[0.9, 0.8, 0.6, 0.1, -np.inf], [0.7, 0.3, 0.3, 0.1, -np.inf]])
    got_ids3, _ = merge_lib.merge_score(scores, ids, valid, n=3)[:2]
    np.testing.assert_array_equal(got_ids3, [[5, 3, 7], [6, 1, 4]])
    got_ids12, _ = merge_lib.merge_score(scores, ids, valid, n=12)[:2]  # n > K * k = 9: padded
    assert got_ids12.shape == (2, 12) and np.all(got_ids12[:, 5:] == 0)


def test_score_merge_matches_the_obvious_loop():
    """10,000 users at once (the vectorised path; its speed is in bench/eval_speed.py)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 2000, size=(10_000, 4, 50))
    scores = rng.normal(size=(10_000, 4, 50)).astype(np.float32)
    valid = rng.random((10_000, 4)) > 0.2
    got, _ = merge_lib.merge_score(scores, ids, valid, n=50)[:2]
    # spot-check one user against the obvious loop (ComiRec's: sort desc, keep first occurrence)
    u = 17
    pairs = sorted(((float(s), int(i)) for kk in range(4) if valid[u, kk]
                    for s, i in zip(scores[u, kk], ids[u, kk])), key=lambda x: (-x[0], x[1]))
    seen = list(dict.fromkeys(i for _, i in pairs))[:50]
    np.testing.assert_array_equal(got[u, :len(seen)], seen)


def test_ranking_metrics_hand_made():
    rec = np.array([
        [3, 1, 7, 2, 9],  # user A: targets {4, 7, 2}; hits 7 at r=2 and 2 at r=3
        [4, 5, 6, 5, 0],  # user B: targets {6, 5}; 5 repeated at r=3 must count once
        [1, 2, 3, 4, 5],  # user C: no targets -> skipped
    ])
    tgt = np.array([[4, 7, 2, 0], [6, 6, 5, 0], [0, 0, 0, 0]])
    got = metrics.ranking_metrics(rec, tgt, ns=(2, 5))
    l = lambda r: 1 / math.log2(r + 2)  # noqa: E731  1, 0.63093, 0.5, 0.43068 for r = 0..3
    # @2: A has no hit; B hits 5 at r=1 -> recall 1/2, ndcg l(1)/(l(0)+l(1)) = 0.386853,
    #     ComiRec: 5 is target t=1 of [6, 5] -> dcg l(1), idcg over 1 hit = l(0) = 1 -> 0.630930
    # @5: A recall 2/3, ndcg (l(2)+l(3))/(l(0)+l(1)+l(2)) = 0.930677/2.130930 = 0.436747,
    #     ComiRec: 7, 2 are targets t=1, 2 of [4, 7, 2] -> (l(1)+l(2))/(l(0)+l(1)) = 0.693426;
    #     B recall 2/2, ndcg (l(1)+l(2))/(l(0)+l(1)) = 0.693426, ComiRec: t=0, 1 both hit -> 1
    want = {
        "recall@2": (0 + 1 / 2) / 2,  # 0.25
        "hitrate@2": (0 + 1) / 2,  # 0.5
        "ndcg@2": (0 + 0.386853) / 2,  # 0.193426
        "ndcg_comirec@2": (0 + 0.630930) / 2,  # 0.315465
        "recall@5": (2 / 3 + 1) / 2,  # 0.833333
        "hitrate@5": 1.0,
        "ndcg@5": (0.436747 + 0.693426) / 2,  # 0.565087
        "ndcg_comirec@5": (0.693426 + 1.0) / 2,  # 0.846713
    }
    assert set(got) == set(want) and all(type(v) is float for v in got.values())
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert got["ndcg@5"] == pytest.approx(((l(2) + l(3)) / (l(0) + l(1) + l(2)) + 0.693426) / 2, abs=1e-6)
    with pytest.raises(ValueError):
        metrics.ranking_metrics(rec, tgt, ns=(6,))


def test_ranking_metrics_match_reference_loops():
    """Random data (unique targets, as in ComiRec's files) against ComiRec's loop and textbook NDCG."""
    rng = np.random.default_rng(5)
    n_users, n, num_items = 200, 20, 60
    rec = np.stack([rng.permutation(np.arange(1, num_items))[:n] for _ in range(n_users)])
    lens = rng.integers(1, 12, size=n_users)
    tgt = np.zeros((n_users, 12), np.int64)
    for u in range(n_users):
        tgt[u, :lens[u]] = rng.permutation(np.arange(1, num_items))[:lens[u]]
    got = metrics.ranking_metrics(rec, tgt, ns=(10, 20))
    for big_n in (10, 20):
        recall = ndcg = comi = 0.0
        for u in range(n_users):
            iid_list, item_set = list(tgt[u, :lens[u]]), set(rec[u, :big_n])
            hits, dcg = 0, 0.0  # ComiRec evaluate_full, verbatim logic
            for no, iid in enumerate(iid_list):
                if iid in item_set:
                    hits += 1
                    dcg += 1.0 / math.log(no + 2, 2)
            idcg = sum(1.0 / math.log(no + 2, 2) for no in range(hits))
            recall += hits / len(iid_list)
            comi += dcg / idcg if hits > 0 else 0.0
            std = sum(1 / math.log2(r + 2) for r, i in enumerate(rec[u, :big_n]) if i in set(iid_list))
            ndcg += std / sum(1 / math.log2(r + 2) for r in range(min(len(iid_list), big_n)))
        assert got[f"recall@{big_n}"] == pytest.approx(recall / n_users, abs=1e-9)
        assert got[f"ndcg_comirec@{big_n}"] == pytest.approx(comi / n_users, abs=1e-9)
        assert got[f"ndcg@{big_n}"] == pytest.approx(ndcg / n_users, abs=1e-9)


def test_coverage():
    rec = np.array([[1, 2, 0], [2, 3, 9]])
    assert metrics.coverage(rec, num_items=10) == pytest.approx(4 / 9)  # {1, 2, 3, 9} of ids 1..9


def test_diversity_hand_made():
    category = np.array([-1, 0, 0, 1, 2, -1, 1])  # per id 0..6; ids 0 and 5 have no category
    rec = np.array([
        [1, 2, 3, 4, 0],  # cats 0 0 1 2: 6 pairs, 1 same-category -> 5/6
        [3, 6, 5, 0, 0],  # cats 1 1 (5 unknown): 1 pair, same -> 0
        [5, 0, 0, 0, 0],  # no known category -> skipped
        [1, 2, 3, 6, 4],  # first 4 only: cats 0 0 1 1: 6 pairs, 2 same -> 4/6 (id 4 cut by n)
    ])
    assert metrics.diversity(rec, category, n=4) == pytest.approx((5 / 6 + 0 + 4 / 6) / 3)  # 0.5


def test_diversity_matches_comirec_loop():
    rng = np.random.default_rng(2)
    category = rng.integers(0, 5, size=100)
    rec = rng.integers(1, 100, size=(50, 8))
    want = np.mean([
        sum(category[r[i]] != category[r[j]] for i in range(8) for j in range(i + 1, 8)) / 28 for r in rec
    ])
    assert metrics.diversity(rec, category, n=8) == pytest.approx(want)


def test_log_partition_equals_the_full_log_sum_exp():
    """Chunked (M - 1 = 10 items in chunks of 4: a ragged last chunk), item 0 left out, temperature."""
    rng = np.random.default_rng(1)
    items = rng.normal(size=(11, 5)).astype(np.float32)
    items[0] = 100.0  # padding row: would dominate if it were counted
    queries = rng.normal(size=(3, 5)).astype(np.float32)
    s = queries.astype(np.float64) @ items[1:].astype(np.float64).T / 0.5
    want = np.log(np.exp(s - s.max(1, keepdims=True)).sum(1)) + s.max(1)
    np.testing.assert_allclose(metrics.log_partition(queries, items, 0.5, chunk_size=4), want, rtol=1e-5)
    np.testing.assert_allclose(metrics.log_partition(queries, jnp.asarray(items), 0.5), want, rtol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        metrics.log_partition(queries, items, 0.0)
