"""Retriever: equals the evaluation pipeline, handles unknown / empty / long histories, merges, and
refuses corrupt or incomplete artifacts at load."""

import json
import shutil

import numpy as np
import pytest

from serving_support import exported_artifact, trained_workdir

from mirecall_jax import metrics
from mirecall_jax.data.sampler import eval_batches
from mirecall_jax.evaluate import MODEL_INPUTS, _encode_users, interest_share, item_vectors
from mirecall_jax.models import capacity
from mirecall_jax.serving import ArtifactError, Retriever
from mirecall_jax.serving import artifact as art
from mirecall_jax.serving import merge as merge_lib


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from mirecall_jax.train.loop import restore_for_inference

    base = tmp_path_factory.getbasetemp()
    artifact = exported_artifact(base)
    run = restore_for_inference(str(trained_workdir(base)), "best")
    run.checkpointer.close()
    return run, artifact, Retriever.load(str(artifact))


def _external(ds, idx):
    return [str(ds.item_ids[i]) for i in idx]


def test_recommendations_equal_the_evaluation_pipeline(setup):
    """Exact (brute-force) index, score merge, history kept: the evaluation's exact top-50 per user."""
    run, _, retriever = setup
    ds, cfg = run.dataset, run.config
    batch = next(eval_batches(ds, "test", cfg.model.max_len, 64))
    users = batch["valid"]
    interests, mask, _ = _encode_users(run.model, run.state.params, {k: batch[k] for k in MODEL_INPUTS})
    vecs = item_vectors(run.model, run.state.params, run.state.tables, ds.num_items)
    share = interest_share(run.state, batch["user"], interests, np.asarray(mask), vecs[batch["history"]],
                           batch["mask"], cfg.model.prune_min_count)
    mask = capacity.prune_interests(np.asarray(mask), share, cfg.model.prune_threshold)
    b, k, d = interests.shape
    s, i = metrics.chunked_top_k(interests.reshape(b * k, d), vecs, 50)
    want, _ = metrics.merge_interests(np.asarray(s).reshape(b, k, 50), np.asarray(i).reshape(b, k, 50), mask, 50)
    want = np.asarray(want)[users]

    split = ds.test
    histories = [_external(ds, ds.sequence(u)[:h]) for u, h in zip(split.users, split.history_end)][: users.sum()]
    recs = retriever.recommend(histories, n=50, exclude_seen=False, merge="score")
    got = np.array([r.item_indices for r in recs])
    same = (got == want).all(1).mean()
    overlap = np.mean([len(set(g) & set(w)) / 50 for g, w in zip(got, want)])
    assert same >= 0.9 and overlap >= 0.99, (same, overlap)
    assert [r.num_interests for r in recs] == list(mask.sum(1)[users])
    for r in recs:
        assert not r.fallback and r.scores == sorted(r.scores, reverse=True)
        assert set(r.interests) <= set(range(4))
        assert r.items == _external(ds, r.item_indices)


def test_seen_unknown_long_and_empty_histories(setup):
    run, _, retriever = setup
    ds = run.dataset
    seq = max((ds.sequence(int(u)) for u in ds.test.users), key=len)
    hist = _external(ds, seq)
    base = retriever.recommend([hist], n=30)[0]
    assert len(base.items) == 30 and not set(base.item_indices) & set(seq.tolist())  # exclude_seen

    noisy = ["nope-1"] + hist[:5] + ["nope-2", "nope-3"] + hist[5:]
    r = retriever.recommend([noisy], n=30)[0]
    assert r.unknown_items == 3 and r.history_length == len(noisy) and r.items == base.items

    assert len(seq) > 20  # longer than max_len: the last 20 known items are encoded
    long = retriever.recommend([hist], n=30, exclude_seen=False)[0]
    last = retriever.recommend([hist[-20:]], n=30, exclude_seen=False)[0]
    assert long.truncated == len(seq) - 20 and long.history_used == 20 and last.truncated == 0
    assert long.items == last.items

    popular = np.argsort(-ds.item_count[1:], kind="stable")[:10] + 1
    for h in ([], ["unknown-a", "unknown-b"]):
        fb = retriever.recommend([h], n=10)[0]
        assert fb.fallback and fb.num_interests == 0 and fb.interests == [-1] * 10
        assert fb.item_indices == popular.tolist() and fb.unknown_items == len(h)
    assert not base.fallback


def test_batching_does_not_change_answers(setup):
    run, _, retriever = setup
    ds = run.dataset
    histories = [_external(ds, ds.sequence(int(u))[:h]) for u, h in zip(ds.test.users[:5], ds.test.history_end[:5])]
    histories.insert(2, [])
    histories.append(histories[0] * 4)  # a long history: more seen items, a deeper search for the batch
    for merge, lam in (("score", 0.0), ("round_robin", 0.0), ("diversity", 0.7)):
        together = retriever.recommend(histories, n=20, merge=merge, diversity_lambda=lam)
        alone = [retriever.recommend([h], n=20, merge=merge, diversity_lambda=lam)[0] for h in histories]
        assert [r.items for r in together] == [r.items for r in alone], merge
        assert together[2].fallback and not together[0].fallback


def test_merges_on_the_artifact(setup):
    run, _, retriever = setup
    ds = run.dataset
    histories = [_external(ds, ds.sequence(int(u))[:h]) for u, h in zip(ds.test.users, ds.test.history_end)]
    score = retriever.recommend(histories, n=20, merge="score")
    div0 = retriever.recommend(histories, n=20, merge="diversity", diversity_lambda=0.0)
    assert [r.items for r in score] == [r.items for r in div0]
    div = retriever.recommend(histories, n=20, merge="diversity", diversity_lambda=100.0)
    cats = lambda r: len(set(ds.item_category[r.item_indices]))  # noqa: E731
    assert np.mean([cats(r) for r in div]) > np.mean([cats(r) for r in score])
    rr = retriever.recommend(histories, n=20, merge="round_robin")
    for r in rr:
        assert len(r.items) == 20 and len(set(r.items)) == 20
        counts = np.bincount(r.interests, minlength=4)[np.bincount(r.interests, minlength=4) > 0]
        assert counts.max() - counts.min() <= 1  # equal quota per queried interest
        assert len(counts) == r.num_interests
    with pytest.raises(ValueError, match="merge"):
        retriever.recommend(histories[:1], n=5, merge="best")
    with pytest.raises(ValueError, match="diversity_lambda"):
        retriever.recommend(histories[:1], n=5, merge="diversity", diversity_lambda=-1.0)
    with pytest.raises(ValueError, match="n must be"):
        retriever.recommend(histories[:1], n=0)


def test_merge_functions_by_hand():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((6, 3, 8)).astype(np.float32)
    ids = rng.integers(0, 12, size=(6, 3, 8))
    valid = rng.random((6, 3)) < 0.7
    want_i, want_s = metrics.merge_interests(scores, ids, valid, 10)
    got_i, got_s, got_k = merge_lib.merge_score(scores, ids, valid, 10)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_array_equal(got_s, want_s)
    for u in range(6):
        for i, s, k in zip(got_i[u], got_s[u], got_k[u]):
            if i:
                assert valid[u, k] and s == scores[u, k][ids[u, k] == i].max()
            else:
                assert k == -1

    # interest 0: items 1,2,3 (0.9, 0.8, 0.7); interest 1: items 4,2,5 (0.6, 0.5, 0.1)
    s = np.array([[[0.9, 0.8, 0.7], [0.6, 0.5, 0.1]]], np.float32)
    i = np.array([[[1, 2, 3], [4, 2, 5]]])
    v = np.ones((1, 2), bool)
    ids_rr, _, k_rr = merge_lib.merge_round_robin(s, i, v, 5)
    assert ids_rr.tolist() == [[1, 4, 2, 5, 3]] and k_rr.tolist() == [[0, 1, 0, 1, 0]]
    # categories: 1, 2, 3 -> A; 4 -> B; 5 -> C. Greedy gain = f + lambda * (#selected of another category)
    cat = np.array([-1, 0, 0, 0, 1, 2])
    ids_d, s_d, _ = merge_lib.merge_diversity(s, i, v, 3, cat, 0.25)
    assert ids_d.tolist() == [[1, 4, 2]]  # 1 (0.9); 4 (0.6 + 0.25 > 0.8); 2 (0.8 + 0.25 > 5: 0.1 + 0.5)
    np.testing.assert_allclose(s_d, [[0.9, 0.6, 0.8]])  # reported scores are f(u, i), not the gains
    ids_d, _, _ = merge_lib.merge_diversity(s, i, v, 3, cat, 1.0)
    assert ids_d.tolist() == [[1, 4, 5]]  # 5: 0.1 + 2 * 1.0 beats 2: 0.8 + 1.0
    cat_unknown = np.array([-1, 0, 0, 0, -1, -1])  # unknown categories never count as different
    ids_d, _, _ = merge_lib.merge_diversity(s, i, v, 3, cat_unknown, 1.0)
    assert ids_d.tolist() == [[1, 2, 3]]


@pytest.fixture()
def artifact_copy(setup, tmp_path):
    _, artifact, _ = setup
    dst = tmp_path / "moved"
    shutil.copytree(artifact, dst)
    return dst


def test_moved_artifact_loads_and_answers_the_same(setup, artifact_copy):
    run, artifact, retriever = setup
    shutil.rmtree(artifact_copy / "encoder" / "__pycache__", ignore_errors=True)
    moved = Retriever.load(str(artifact_copy))
    h = _external(run.dataset, run.dataset.sequence(int(run.dataset.test.users[1])))
    assert moved.recommend([h], n=25)[0] == retriever.recommend([h], n=25)[0]


@pytest.mark.parametrize("damage, message", [
    ("missing_file", "missing"),
    ("flipped_byte", "sha256 mismatch"),
    ("newer_format", "newer"),
    ("no_manifest", "manifest missing"),
    ("bad_manifest", "not valid JSON"),
    ("unlisted_required", "not listed"),
    ("missing_dir", "not found"),
])
def test_corrupt_or_incomplete_artifact_is_refused(artifact_copy, damage, message):
    a = artifact_copy
    m = json.loads((a / "manifest.json").read_text())
    if damage == "missing_file":
        (a / "index" / "dataset.npy").unlink()
    elif damage == "flipped_byte":
        raw = bytearray((a / "item_embeddings.npy").read_bytes())
        raw[-5] ^= 0x01  # one bit of one float: the artifact would silently answer differently
        (a / "item_embeddings.npy").write_bytes(bytes(raw))
    elif damage == "newer_format":
        m["format_version"] = art.FORMAT_VERSION + 1
        (a / "manifest.json").write_text(json.dumps(m))
    elif damage == "no_manifest":
        (a / "manifest.json").unlink()
    elif damage == "bad_manifest":
        (a / "manifest.json").write_text("{ not json")
    elif damage == "unlisted_required":
        del m["files"]["encoder/encoder.bin"]
        (a / "manifest.json").write_text(json.dumps(m))
    elif damage == "missing_dir":
        shutil.rmtree(a)
    with pytest.raises(ArtifactError, match=message):
        Retriever.load(str(a))


def test_demo_report_prints_planted_topics(setup):
    from mirecall_jax.serving.showcase import recommendation_report

    run, _, retriever = setup
    ds = run.dataset
    lines = recommendation_report(retriever, ds, [0, 1, 2], n=5)
    users = [line for line in lines if line.startswith("user ")]
    items = [line.split() for line in lines if line.startswith("    ") and "topic" in line and "->" not in line]
    assert len(users) == 3 and len(items) == 15
    for parts in items:
        item, topic = parts[0], int(parts[2])
        assert topic == ds.item_topic[retriever.id_to_index[item]]
        planted = "planted" in parts
        user_line = users[items.index(parts) // 5]
        listed = user_line.split("planted topics [")[1].split("]")[0].replace(" ", "").split(",")
        assert planted == (str(topic) in listed)
