"""Export: the portable encoder of every trained family, the artifact written by serve_export.py."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from serving_support import ROOT, exported_artifact, manifest, subprocess_env, tiny_config, trained_workdir

from mirecall_jax.data.pipeline import load_dataset
from mirecall_jax.data.sampler import eval_batches
from mirecall_jax.evaluate import MODEL_INPUTS, _encode_users, interest_share, item_vectors
from mirecall_jax.models import build_model, capacity
from mirecall_jax.serving import artifact as art
from mirecall_jax.serving.encoder import ENCODER_INPUTS
from mirecall_jax.serving.export import export_encoder, model_encoder, write_artifact

# Every trainable family (moe twice: "max" gives E interests, "gated" one gated vector). The
# single-activation transformer is checked on a trained checkpoint with pruning further down.
FAMILIES = {
    "single_vector": {},
    "comirec_sa": {"model.use_uploader": True, "model.use_tags": True},
    "mind": {},
    "moe": {"model.moe.aggregation": "max"},
    "moe_gated": {"model.moe.aggregation": "gated"},
    "pinnersage": {},  # no training: its "params" are a frozen item table (random here)
}


def _worker(out: Path, pairs, env) -> dict:
    args = [sys.executable, str(ROOT / "tests" / "encoder_worker.py"), str(out)] + [f"{d}:{i}" for d, i in pairs]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """Each family with fresh (untrained) parameters, exported, and run by one fresh-process worker."""
    base = tmp_path_factory.getbasetemp()
    tmp = tmp_path_factory.mktemp("families")
    config = tiny_config(base / "cache")
    ds = load_dataset(config)
    batch = next(eval_batches(ds, "test", config.model.max_len, 7))  # odd batch size: the dim is symbolic
    inputs = tmp / "inputs.npz"
    np.savez(inputs, **{k: batch[k] for k in ENCODER_INPUTS})
    expected, pairs = {}, []
    for i, (name, overrides) in enumerate(FAMILIES.items()):
        cfg = tiny_config(base / "cache", **{"model.family": name.replace("_gated", ""), **overrides})
        model = build_model(cfg.model, ds)
        target = batch["targets"][:, 0]
        init_batch = dict(batch, target=target, target_uploader=ds.item_uploader[target],
                          target_tags=ds.item_tags[target])
        init = jax.jit(lambda rngs, b: model.init(rngs, b, train=False))  # jit: faster than op-by-op
        params = init({"params": jax.random.PRNGKey(i), "dropout": jax.random.PRNGKey(99)}, init_batch)["params"]
        if name == "pinnersage":  # a random table, so the clustering has structure to find
            table = params["item_embedding"]
            params = {**params, "item_embedding": jax.random.normal(jax.random.PRNGKey(i), table.shape, table.dtype)}
        enc = model_encoder(model, params, {}, cfg.model)
        d = tmp / name
        d.mkdir()
        (d / "encoder.bin").write_bytes(export_encoder(enc, cfg.model.max_len, ds.max_tags).serialize())
        np.savez(d / "constants.npz", **{f"c{j:04d}": c for j, c in enumerate(enc.constants)})
        interests, mask, _ = _encode_users(model, params, {k: batch[k] for k in MODEL_INPUTS})
        expected[name] = (np.asarray(interests), np.asarray(mask))
        pairs.append((d, inputs))
    got = _worker(tmp / "out.npz", pairs, subprocess_env(base))
    return {name: (expected[name], (got[f"{i}/interests"], got[f"{i}/valid"])) for i, name in enumerate(FAMILIES)}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_exported_encoder_matches_model_in_fresh_process(families, name):
    (want_i, want_m), (got_i, got_m) = families[name]
    assert got_i.shape == want_i.shape and got_i.shape[0] == 7
    np.testing.assert_allclose(got_i, want_i, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(got_m, want_m)
    assert np.abs(want_i).max() > 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from mirecall_jax.train.loop import restore_for_inference

    base = tmp_path_factory.getbasetemp()
    workdir = trained_workdir(base)
    artifact = exported_artifact(base)  # written by the serve_export.py CLI
    run = restore_for_inference(str(workdir), "best")
    run.checkpointer.close()
    return run, artifact


def test_artifact_layout_and_manifest(trained):
    run, artifact = trained
    m = manifest(artifact)
    assert m["format_version"] == art.FORMAT_VERSION
    assert m["family"] == "single_activation" and m["checkpoint_step"] == run.step
    assert m["embed_dim"] == 16 and m["num_interests"] == 4 and m["max_len"] == 20
    assert m["num_items"] == run.dataset.num_items - 1 and m["vocab_size"] == run.dataset.num_items
    assert m["config"]["model"]["family"] == "single_activation"
    for pkg in ("jax", "jaxlib", "flax", "scann"):
        assert m["versions"][pkg], pkg
    # every file (and only files that exist) is listed with its sha256
    listed = set(m["files"])
    assert listed == set(art.list_files(str(artifact)))
    assert set(art.REQUIRED_FILES) <= listed
    for rel, digest in m["files"].items():
        assert art.sha256_file(str(artifact / rel)) == digest
    # ScaNN rule for a small catalogue, and recall measured on real exported user vectors
    idx = m["index"]
    assert idx["kind"] == "brute_force" and idx["recall_queries"] > 50
    assert idx["recall@50"] >= 0.95 and idx["recall_source"].startswith("test split")
    assert m["encoder"]["prune_threshold"] == 0.2 and len(m["encoder"]["constants"]) > 10
    assert m["export_config"]["recall_max_queries"] == 400  # the CLI override reached the export
    assets = (artifact / "index" / "scann_assets.pbtxt").read_text()
    paths = re.findall(r'asset_path: "([^"]*)"', assets)
    assert paths and not any(os.path.isabs(p) for p in paths)  # relative: the directory can move
    assert m["encoder"]["platforms"] == ["cpu", "cuda"]


def test_embeddings_and_vocabulary_are_the_item_tower(trained):
    run, artifact = trained
    emb = np.load(artifact / "item_embeddings.npy")
    want = np.asarray(item_vectors(run.model, run.state.params, run.state.tables, run.dataset.num_items))
    assert emb.dtype == np.float32 and emb.shape == want.shape
    np.testing.assert_allclose(emb[1:], want[1:], atol=1e-6)
    assert not emb[0].any()  # padding row
    ids = json.loads((artifact / "item_ids.json").read_text())
    assert ids == [str(x) for x in run.dataset.item_ids] and ids[0] == ""
    with np.load(artifact / "side_tables.npz") as z:
        np.testing.assert_array_equal(z["item_tags"], run.dataset.item_tags)
        np.testing.assert_array_equal(z["item_uploader"], run.dataset.item_uploader)
        np.testing.assert_array_equal(z["item_topic"], run.dataset.item_topic)
        np.testing.assert_allclose(z["activation_global"], np.asarray(run.state.aux["activation_global"]))


def test_checkpoint_and_fresh_process_encoder_agree_with_pruning(trained, tmp_path):
    """The artifact's encoder, run where no model code is imported, equals the checkpoint's user tower
    plus evaluate's dynamic-capacity pruning (history share for these unseen users)."""
    run, artifact = trained
    config, ds = run.config, run.dataset
    batch = next(eval_batches(ds, "test", config.model.max_len, 32))
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, **{k: batch[k] for k in ENCODER_INPUTS})
    got = _worker(tmp_path / "out.npz", [(artifact / "encoder", inputs)], subprocess_env(tmp_path))
    interests, mask, _ = _encode_users(run.model, run.state.params, {k: batch[k] for k in MODEL_INPUTS})
    mask = np.asarray(mask)
    vecs = item_vectors(run.model, run.state.params, run.state.tables, ds.num_items)
    share = interest_share(run.state, batch["user"], interests, mask, vecs[batch["history"]], batch["mask"],
                           config.model.prune_min_count)
    pruned = capacity.prune_interests(mask, share, config.model.prune_threshold)
    np.testing.assert_allclose(got["0/interests"], np.asarray(interests), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(got["0/valid"], pruned)
    assert (pruned.sum(1) < mask.sum(1)).any(), "pruning should drop some interests of some users"


def test_write_artifact_refuses_existing_dir_and_bad_embeddings(trained, tmp_path):
    run, _ = trained
    enc = model_encoder(run.model, run.state.params, {}, run.config.model)
    emb = np.zeros((run.dataset.num_items, 16), np.float32)
    kwargs = dict(dataset=run.dataset, encoder=enc, family="x", config={}, checkpoint_step=0, max_len=20)
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        write_artifact(str(tmp_path / "exists"), embeddings=emb, **kwargs)
    bad = emb.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        write_artifact(str(tmp_path / "new"), embeddings=bad, **kwargs)
    with pytest.raises(ValueError, match="rows"):
        write_artifact(str(tmp_path / "new"), embeddings=emb[:-1], **kwargs)
    assert not (tmp_path / "new").exists()


def test_tree_index_export_tunes_on_half_and_reports_the_other_half(trained, tmp_path):
    from mirecall_jax.serving import Retriever

    run, artifact = trained
    emb = np.load(artifact / "item_embeddings.npy")
    enc = model_encoder(run.model, run.state.params, dict(run.state.aux), run.config.model)
    m = write_artifact(str(tmp_path / "tree"), embeddings=emb, dataset=run.dataset, encoder=enc,
                       family="single_activation", config=run.config.to_dict(), checkpoint_step=run.step, max_len=20,
                       export_cfg={"index": {"kind": "tree_ah", "num_leaves": 60}, "platforms": "cpu",
                                   "recall_target": 0.999}, log=lambda *_: None)
    idx = m["index"]
    assert idx["kind"] == "tree_ah" and idx["num_leaves"] == 60 and "held out" in idx["recall_source"]
    tuned = [s["num_leaves_to_search"] for s in idx["tuning"]]
    assert tuned[0] == 32 and tuned == sorted(tuned) and idx["num_leaves_to_search"] == tuned[-1]
    assert idx["recall@50"] >= 0.95 and idx["recall_queries"] > 20
    r = Retriever.load(str(tmp_path / "tree"))
    assert r.index.params["num_leaves_to_search"] == tuned[-1]
    h = [str(x) for x in run.dataset.item_ids[1:15]]
    assert len(r.recommend([h], n=30)[0].items) == 30
