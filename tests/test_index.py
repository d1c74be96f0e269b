"""ScaNN index: the parameter rule, recall against exact search, padding, tuning, relocatable serialization."""

import os
import re
import shutil

import numpy as np
import pytest

from mirecall_jax.serving import index as ix


def clustered(n: int, dim: int = 32, topics: int = 200, queries: int = 300, seed: int = 0):
    """Item matrix [n + 1, dim] (row 0 = padding) and queries shaped like trained towers: topic clusters."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((topics, dim)).astype(np.float32)
    items = centers[rng.integers(topics, size=n + 1)] + 0.8 * rng.standard_normal((n + 1, dim)).astype(np.float32)
    items *= np.exp(0.2 * rng.standard_normal((n + 1, 1))).astype(np.float32)  # popularity-like norm spread
    items[0] = 0
    q = centers[rng.integers(topics, size=queries)] + 0.8 * rng.standard_normal((queries, dim)).astype(np.float32)
    return items, q


def test_params_follow_scann_rules_and_overrides():
    assert ix.resolve_params(10_000, 64)["kind"] == "brute_force"
    assert ix.resolve_params(19_999, 64)["kind"] == "brute_force"
    p = ix.resolve_params(50_000, 64)
    assert p["kind"] == "ah" and p["dimensions_per_block"] == 2 and p["reorder_num_neighbors"] > 0
    p = ix.resolve_params(1_000_000, 64)
    assert p["kind"] == "tree_ah" and p["num_leaves"] == 1000 and 0 < p["num_leaves_to_search"] < 1000
    assert p["training_sample_size"] == 250_000
    p = ix.resolve_params(1_000_000, 64, {"num_leaves": 400, "num_leaves_to_search": 50, "reorder_num_neighbors": 300})
    assert (p["num_leaves"], p["num_leaves_to_search"], p["reorder_num_neighbors"]) == (400, 50, 300)
    assert ix.resolve_params(5_000, 64, {"kind": "tree_ah"})["num_leaves"] == 71
    with pytest.raises(ValueError, match="index.kind"):
        ix.resolve_params(100, 8, {"kind": "hnsw"})
    with pytest.raises(ValueError, match="empty"):
        ix.resolve_params(0, 8)


def test_default_params_on_10k_catalogue_reach_recall_095():
    items, q = clustered(10_000, dim=64)
    params = ix.resolve_params(10_000, 64)
    index, _ = ix.build_index(items[1:], params)
    assert ix.measure_recall(index, items, q, 50) >= 0.95
    scores, ids = index.search(q[:5], 50)
    exact_s, exact_i = ix.exact_top_k(q[:5], items, 50)
    assert (ids > 0).all()  # item indices (position + 1), never the padding row
    np.testing.assert_allclose(scores, exact_s, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose((items[ids] * q[:5, None]).sum(-1), scores, rtol=1e-5, atol=1e-4)


def test_ah_reorder_path_reaches_recall_095():
    items, q = clustered(25_000)
    params = ix.resolve_params(25_000, 32)
    assert params["kind"] == "ah"
    index, _ = ix.build_index(items[1:], params)
    assert ix.measure_recall(index, items, q, 50) >= 0.95


def test_tree_index_moves_with_its_directory(tmp_path):
    items, q = clustered(30_000)
    params = ix.resolve_params(30_000, 32, {"kind": "tree_ah", "num_leaves": 60, "num_leaves_to_search": 15})
    index, _ = ix.build_index(items[1:], params)
    assert ix.measure_recall(index, items, q, 50) >= 0.95
    index.save(str(tmp_path / "a" / "index"))
    text = (tmp_path / "a" / "index" / "scann_assets.pbtxt").read_text()
    assert re.findall(r'asset_path: "([^"/]+)"', text)  # bare file names
    shutil.move(tmp_path / "a", tmp_path / "b")  # the old location no longer exists
    cwd = os.getcwd()
    try:
        os.chdir("/")
        loaded = ix.ItemIndex.load(str(tmp_path / "b" / "index"), params)
    finally:
        os.chdir(cwd)
    s0, i0 = index.search(q, 20)
    s1, i1 = loaded.search(q, 20)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_allclose(s0, s1)


def test_missing_slots_are_padding_and_nothing_else():
    items, q = clustered(30, dim=8, topics=3, queries=4)
    index, _ = ix.build_index(items[1:], ix.resolve_params(30, 8))
    scores, ids = index.search(q, 50)  # more than the catalogue
    assert ids.shape == (4, 50)
    assert (ids[:, :30] > 0).all() and (ids[:, 30:] == 0).all()
    assert np.isfinite(scores[:, :30]).all() and np.isneginf(scores[:, 30:]).all()
    assert all(len(set(row[:30])) == 30 for row in ids)
    with pytest.raises(FileNotFoundError, match="scann_assets"):
        ix.ItemIndex.load(os.getcwd(), {})


def test_tuning_raises_search_effort_until_target():
    rng = np.random.default_rng(1)
    items = rng.standard_normal((20_001, 16)).astype(np.float32)  # no cluster structure: hard for a tree
    items[0] = 0
    q = rng.standard_normal((200, 16)).astype(np.float32)
    params = ix.resolve_params(20_000, 16, {"kind": "tree_ah", "num_leaves": 64, "num_leaves_to_search": 2})
    index, _ = ix.build_index(items[1:], params)
    steps = ix.tune_search(index, items, q, 50, target=0.95)
    assert steps[0]["recall"] < 0.9 and len(steps) > 1
    assert steps[-1]["recall"] >= 0.95 and index.params["num_leaves_to_search"] == steps[-1]["num_leaves_to_search"]
    assert [s["num_leaves_to_search"] for s in steps] == sorted(s["num_leaves_to_search"] for s in steps)


def test_recall_against_exact():
    exact = np.array([[1, 2, 3, 4], [5, 6, 0, 0]])
    approx = np.array([[4, 3, 9, 8], [6, 5, 7, 0]])
    assert ix.recall_against_exact(approx, exact) == pytest.approx((2 / 4 + 2 / 2) / 2)
