"""Retriever: equals the evaluation pipeline, handles unknown / empty / long histories, merges, and
refuses corrupt or incomplete artifacts at load."""

import json
import shutil

import numpy as np
import pytest

from serving_support import exported_artifact, trained_workdir

from mirecall_jax import metrics
from mirecall_jax.data.sampler import eval_batches
from mirecall_jax.evaluate import item_vectors, user_interests
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


@pytest.mark.parametrize("merge", ["score", "mixture"])
def test_recommendations_equal_the_evaluation_pipeline(setup, merge):
    """Exact (brute-force) index, history kept: the evaluation's exact top-50 per user, for the
    ComiRec score merge and the mixture merge (its shares: the history share in both, since test
    users have no activation records; its log-partitions: exact over the catalogue in both)."""
    run, _, retriever = setup
    ds, cfg = run.dataset, run.config
    batch = next(eval_batches(ds, "test", cfg.model.max_len, 64))
    users = batch["valid"]
    vecs = item_vectors(run.model, run.state.params, run.state.tables, ds.num_items)
    assert cfg.model.prune_threshold > 0  # the pruned mask and the shares among the kept interests
    interests, mask, _, share = user_interests(run.model, run.state, batch, vecs, cfg, cfg.model.prune_threshold,
                                              with_share=True)
    b, k, d = interests.shape
    s, i = metrics.chunked_top_k(interests.reshape(b * k, d), vecs, 50)
    log_z = metrics.log_partition(interests.reshape(b * k, d), vecs, cfg.loss.temperature).reshape(b, k)
    want, want_s, _ = merge_lib.merge(merge, np.asarray(s).reshape(b, k, 50), np.asarray(i).reshape(b, k, 50), mask,
                                      50, share=share, log_z=log_z, mixture_uniform=cfg.eval.mixture_uniform,
                                      temperature=cfg.loss.temperature)
    want, want_s = np.asarray(want)[users], np.asarray(want_s)[users]

    split = ds.test
    histories = [_external(ds, ds.sequence(u)[:h]) for u, h in zip(split.users, split.history_end)][: users.sum()]
    recs = retriever.recommend(histories, n=50, exclude_seen=False, merge=merge)
    got = np.array([r.item_indices for r in recs])
    same = (got == want).all(1).mean()
    overlap = np.mean([len(set(g) & set(w)) / 50 for g, w in zip(got, want)])
    assert same >= 0.9 and overlap >= 0.99, (same, overlap)
    np.testing.assert_allclose([r.scores[0] for r in recs], want_s[:, 0], rtol=1e-4, atol=1e-4)
    assert [r.num_interests for r in recs] == list(mask.sum(1)[users])
    for r in recs:
        assert not r.fallback and r.scores == sorted(r.scores, reverse=True)
        assert set(r.interests) <= set(range(4))
        assert r.items == _external(ds, r.item_indices)
    # The artifact's default: the rule its run chose on the valid split (eval.merge "auto", resolved).
    assert retriever.default_merge == cfg.eval.merge in ("score", "mixture")
    if merge == cfg.eval.merge:
        assert [r.items for r in retriever.recommend(histories, n=50, exclude_seen=False)] == [r.items for r in recs]


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
    for merge, lam in (("score", 0.0), ("mixture", 0.0), ("round_robin", 0.0), ("diversity", 0.7)):
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
    got_i, got_s, got_k = merge_lib.merge_score(scores, ids, valid, 10)
    for u in range(6):
        for i, s, k in zip(got_i[u], got_s[u], got_k[u]):
            if i:
                assert valid[u, k] and s == scores[u, k][ids[u, k] == i].max()
            else:
                assert k == -1

    # Mixture: interest 0 lists items 5, 6, 7 (scores 3, 1, 0), interest 1 items 6, 8 (10, 9) and
    # padding, in a catalogue of items 5..9 where interest 0 scores 9 at -2 and interest 1 scores
    # 5, 7 at 0 and 9 at -1; shares 0.75 / 0.25, uniform 0.2, temperature 2: pi = 0.8 * share + 0.1.
    s = np.array([[[3.0, 1.0, 0.0], [10.0, 9.0, -np.inf]]])
    i = np.array([[[5, 6, 7], [6, 8, 0]]])
    all0, all1 = np.array([3.0, 1.0, 0.0, -2.0]) / 2, np.array([10.0, 9.0, 0.0, 0.0, -1.0]) / 2
    log_z = np.log([[np.exp(all0).sum(), np.exp(all1).sum()]])
    pi = 0.8 * np.array([0.75, 0.25]) + 0.1
    p0, p1 = np.exp(all0[:3] - log_z[0, 0]), np.exp(all1[:2] - log_z[0, 1])
    want = {5: pi[0] * p0[0], 6: pi[0] * p0[1] + pi[1] * p1[0], 7: pi[0] * p0[2], 8: pi[1] * p1[1]}
    order = sorted(want, key=lambda x: -want[x])
    got_i, got_s, got_k = merge_lib.merge_mixture(s, i, np.ones((1, 2), bool), 5, np.array([[0.75, 0.25]]), log_z,
                                                  uniform=0.2, temperature=2.0)
    assert got_i.tolist() == [order + [0]]
    np.testing.assert_allclose(got_s[0, :4], np.log([want[x] for x in order]), rtol=1e-6)
    assert got_k[0, order.index(6)] == 1 and got_k[0, 4] == -1  # item 6: interest 1 contributes the most
    # An invalid interest neither lists items nor takes prior mass; one interest = the score order.
    got_i, _, _ = merge_lib.merge_mixture(s, i, np.array([[True, False]]), 5, np.array([[0.75, 0.25]]), log_z)
    assert got_i.tolist() == [[5, 6, 7, 0, 0]]
    with pytest.raises(ValueError, match="shares"):
        merge_lib.merge("mixture", s, i, np.ones((1, 2), bool), 5)

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
