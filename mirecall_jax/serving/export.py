"""Checkpoint -> serving artifact: item embeddings + vocabulary, ScaNN index, portable user encoder.

`export_from_workdir(workdir, out, checkpoint)` restores a trained workdir and calls
`write_artifact`, which is family-agnostic: it takes the item matrix, the vocabulary / side tables
and a `UserEncoder`, i.e. any pure function

    encode(constants, history [b, L] int32, history_uploader [b, L] int32,
           history_tags [b, L, T] int32, mask [b, L] bool) -> (interests [b, K, D] float32, valid [b, K] bool)

plus its constant inputs (a list of arrays). Trained families get theirs from `model_encoder`
(constants = the model parameters [+ the capacity table]); a parameter-free family such as
PinnerSage passes its clustering + medoid function with e.g. the item embeddings as constants.

The encoder is exported with `jax.export` (StableHLO, symbolic batch dimension "b") and serialized
without the constants, which are stored next to it in an npz (a serialized module with a 1M-row
table baked in would be needlessly large and slow to load). A fresh process needs only jax, numpy
and these two files to run it: `jax.export.deserialize(bytes).call(constants, *inputs)`.

Dynamic capacity (config.model.prune_threshold > 0 with activation records) is applied *inside*
the exported encoder, so the returned validity mask is the one to query with. Serving users are
identified by their history only, so their activation share is the history share of
`models/capacity.py` (the share of history items whose closest interest is k, with the history
items' vectors computed by the item tower inside the encoder), falling back to the global share
(`activation_global`, an encoder constant) when the history is empty. For evaluation users of the
ComiRec split (never seen in training) this is exactly what `evaluate.evaluate` applies.

Recall: the index's recall@50 against exact search is measured on interest vectors that the
*deserialized* encoder produces for the test split's users (train users' histories if the dataset
has no evaluation users), and recorded in the manifest. The build follows ScaNN's rules by catalogue
size (index.py); when the search effort is left on "auto" and export.recall_target > 0, the
search-time effort (leaves searched / candidates reordered; no rebuild) is doubled until recall on
half of those vectors reaches the target, and the recall recorded is measured on the other half.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mirecall_jax.models import capacity
from mirecall_jax.serving import artifact as art
from mirecall_jax.serving import index as index_lib
from mirecall_jax.serving.encoder import encode_histories, load_encoder

def export_config() -> ml_collections.ConfigDict:
    """What `serve_export.py --export.a.b=v` can set (a workdir config's `export` section overrides too)."""
    c = ml_collections.ConfigDict()
    c.index = index_lib.index_config()  # ScaNN build parameters; 0 / "auto" = ScaNN's rules by catalogue size
    c.recall_k = 50  # the index's recall is measured at this k against exact search
    c.recall_max_queries = 2000  # interest vectors (of real evaluation users) used for that measurement
    c.recall_target = 0.95  # raise the search effort left on "auto" until recall@k reaches it (0 = no tuning)
    c.min_recall = 0.0  # > 0: fail the export when the measured recall is below it
    c.platforms = "cpu,cuda"  # comma-separated jax.export lowering platforms (serving hardware)
    return c


@dataclasses.dataclass
class UserEncoder:
    """A pure user encoder and its constant inputs (see the module docstring for the signature)."""

    fn: Callable
    constants: list[np.ndarray]
    constant_names: list[str]
    num_interests: int
    info: dict = dataclasses.field(default_factory=dict)  # recorded in the manifest (pruning, kind, ...)


def model_encoder(model, params, aux: dict, model_cfg) -> UserEncoder:
    """The user tower of a trained family (+ dynamic-capacity pruning when configured) as a UserEncoder."""
    from mirecall_jax.models import num_interests

    k = num_interests(model_cfg)
    threshold = float(model_cfg.prune_threshold)
    prune = threshold > 0 and "activation_global" in aux
    consts = {"params": params}
    if prune:
        consts["activation_global"] = jnp.asarray(aux["activation_global"], jnp.float32)  # [K]
    with_path, treedef = jax.tree_util.tree_flatten_with_path(jax.device_get(consts))
    names = [jax.tree_util.keystr(path) for path, _ in with_path]
    leaves = [np.asarray(leaf) for _, leaf in with_path]
    min_count = int(model_cfg.prune_min_count)

    def encode(constants, history, history_uploader, history_tags, mask):
        c = jax.tree.unflatten(treedef, list(constants))
        variables = {"params": c["params"]}
        batch = {"history": history, "history_uploader": history_uploader, "history_tags": history_tags, "mask": mask}
        out = model.apply(variables, batch, train=False, method=model.encode_users)
        interests = out.interests.astype(jnp.float32)  # [b, K, D]
        valid = out.mask.astype(bool)  # [b, K]
        if prune:
            hist_vecs = model.apply(variables, history, history_uploader, history_tags,
                                    method=model.encode_items)  # [b, L, D]
            fallback = capacity.history_share(interests, valid, hist_vecs, mask)  # [b, K]
            no_records = jnp.zeros((1, k), jnp.float32)  # serving users have no activation records
            users = jnp.zeros((history.shape[0],), jnp.int32)
            share = capacity.activation_share(no_records, c["activation_global"], users, min_count, fallback=fallback)
            valid = capacity.prune_interests(valid, share, threshold)
        return interests, valid

    info = {"kind": "model", "prune_threshold": threshold if prune else 0.0, "prune_min_count": min_count,
            "pruning": "history share in the encoder" if prune else "none"}
    return UserEncoder(encode, leaves, names, k, info)


def export_encoder(encoder: UserEncoder, max_len: int, max_tags: int, platforms: Sequence[str] = ("cpu",)):
    """jax.export the encoder with a symbolic batch dimension -> jax.export.Exported."""
    (b,) = jax.export.symbolic_shape("b")
    const_specs = [jax.ShapeDtypeStruct(c.shape, c.dtype) for c in encoder.constants]
    specs = (const_specs,
             jax.ShapeDtypeStruct((b, max_len), jnp.int32),
             jax.ShapeDtypeStruct((b, max_len), jnp.int32),
             jax.ShapeDtypeStruct((b, max_len, max_tags), jnp.int32),
             jax.ShapeDtypeStruct((b, max_len), jnp.bool_))
    return jax.export.export(jax.jit(encoder.fn), platforms=tuple(platforms))(*specs)


def _versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for pkg in ("jax", "jaxlib", "flax", "scann", "numpy", "mirecall_jax"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def recall_histories(dataset, max_users: int) -> tuple[list[np.ndarray], str]:
    """Histories of real users for the recall measurement: the test split's, else train prefixes."""
    split = dataset.test
    if len(split.users):
        users, ends, source = split.users, split.history_end, "test split histories"
    else:
        users = np.asarray(dataset.train_users)
        ends, source = dataset.train_end[users], "train user histories"
    rows = [(u, e) for u, e in zip(users, ends) if e > 0][:max_users]
    return [dataset.sequence(int(u))[: int(e)] for u, e in rows], source


def _side_tables(dataset, activation_global) -> dict:
    tables = {
        "item_uploader": np.asarray(dataset.item_uploader, np.int32),
        "item_tags": np.asarray(dataset.item_tags, np.int32),
        "item_category": np.asarray(dataset.item_category, np.int32),
        "category_ids": np.asarray([str(c) for c in dataset.category_ids], dtype=str),
        "item_count": np.asarray(dataset.item_count, np.int64),
        "activation_global": np.asarray(activation_global if activation_global is not None else [], np.float32),
    }
    if getattr(dataset, "item_topic", None) is not None:
        tables["item_topic"] = np.asarray(dataset.item_topic, np.int32)
    return tables


def write_artifact(out: str, *, embeddings: np.ndarray, dataset, encoder: UserEncoder, family: str, config: dict,
                   checkpoint_step: int | None, max_len: int, export_cfg=None, activation_global=None,
                   overwrite: bool = False, log=print) -> dict:
    """Write the artifact directory `out` (see artifact.py for the layout); returns the manifest.

    Built in a sibling temporary directory and renamed into place at the end, so `out` never holds a
    half-written artifact. `embeddings` [M, D] is the item matrix aligned with dataset.item_ids.
    """
    ecfg = export_config()
    if export_cfg is not None:
        ecfg.update(dict(export_cfg))
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
    embeddings = np.ascontiguousarray(embeddings, np.float32).copy()
    num_rows, dim = embeddings.shape
    if num_rows != dataset.num_items:
        raise ValueError(f"embeddings have {num_rows} rows, the vocabulary {dataset.num_items}")
    if not np.isfinite(embeddings).all():
        raise ValueError("item embeddings contain non-finite values; refusing to export")
    embeddings[0] = 0.0  # padding row: never indexed, never a query target
    max_tags = int(dataset.item_tags.shape[1])
    platforms = [p.strip() for p in str(ecfg.platforms).split(",") if p.strip()]

    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out) + ".partial-", dir=parent)
    try:
        t0 = time.perf_counter()
        np.save(os.path.join(tmp, "item_embeddings.npy"), embeddings)
        with open(os.path.join(tmp, "item_ids.json"), "w") as fh:
            json.dump([str(i) for i in dataset.item_ids], fh)
        side = _side_tables(dataset, activation_global)
        np.savez(os.path.join(tmp, "side_tables.npz"), **side)

        # Encoder: export, serialize, and from here on use only the deserialized copy.
        exported = export_encoder(encoder, max_len, max_tags, platforms)
        os.makedirs(os.path.join(tmp, "encoder"))
        with open(os.path.join(tmp, "encoder", "encoder.bin"), "wb") as fh:
            fh.write(exported.serialize())
        np.savez(os.path.join(tmp, "encoder", "constants.npz"),
                 **{f"c{i:04d}": c for i, c in enumerate(encoder.constants)})
        call, constants = load_encoder(os.path.join(tmp, "encoder"))
        log(f"encoder exported ({len(constants)} constants, platforms {platforms})")

        # Index over items 1..M-1.
        params = index_lib.resolve_params(num_rows - 1, dim, ecfg.index)
        index, build_s = index_lib.build_index(embeddings[1:], params)
        index.save(os.path.join(tmp, "index"))
        log(f"ScaNN index built in {build_s:.1f} s: {params}")

        # Recall@k of the index against exact search, on real users' exported interest vectors. With a
        # recall target and the search effort left on "auto", the effort is raised on half the queries
        # until it reaches the target; the recall recorded is measured on the other half.
        hists, source = recall_histories(dataset, int(ecfg.recall_max_queries))
        queries = np.zeros((0, dim), np.float32)
        if hists:
            interests, valid = encode_histories(call, constants, hists, max_len, side["item_uploader"],
                                                side["item_tags"])
            queries = interests[valid][: int(ecfg.recall_max_queries)]
        k = min(int(ecfg.recall_k), num_rows - 1)
        effort_key = {"tree_ah": "num_leaves_to_search", "ah": "reorder_num_neighbors"}.get(params["kind"])
        tune = ecfg.recall_target > 0 and effort_key is not None and not ecfg.index[effort_key] and len(queries) >= 2
        tuning = None
        held_out = queries
        if tune:
            tuning = index_lib.tune_search(index, embeddings, queries[0::2], k, float(ecfg.recall_target))
            held_out = queries[1::2]
            log(f"search effort tuned on {len(queries[0::2])} queries: {tuning}")
        recall = index_lib.measure_recall(index, embeddings, held_out, k) if len(held_out) else None
        log(f"index recall@{k} vs exact search: {recall} over {len(held_out)} interest vectors ({source})")
        if recall is not None and ecfg.min_recall > 0 and recall < ecfg.min_recall:
            raise RuntimeError(f"index recall@{k} = {recall:.4f} < export.min_recall = {ecfg.min_recall}; "
                               f"raise export.index.num_leaves_to_search / reorder_num_neighbors")

        manifest = {
            "family": family,
            "config": config,
            "export_config": ecfg.to_dict(),
            "versions": _versions(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "checkpoint_step": checkpoint_step,
            "embed_dim": int(dim),
            "num_interests": int(encoder.num_interests),
            "max_len": int(max_len),
            "max_tags": max_tags,
            "num_items": int(num_rows - 1),  # catalogue size (items 1..M-1)
            "vocab_size": int(num_rows),  # rows of item_embeddings.npy / entries of item_ids.json
            "num_categories": int(len(side["category_ids"])),
            "has_item_topic": "item_topic" in side,
            "index": {**index.params, "build_seconds": round(build_s, 3),
                      "position_to_item": "item index = position + 1",
                      f"recall@{k}": recall, "recall_k": k, "recall_queries": int(len(held_out)),
                      "recall_source": source + (", held out from tuning" if tuning else ""),
                      "tuning": tuning},
            "encoder": {
                "file": "encoder/encoder.bin", "constants_file": "encoder/constants.npz",
                "constants": [{"name": n, "shape": list(c.shape), "dtype": str(c.dtype)}
                              for n, c in zip(encoder.constant_names, encoder.constants)],
                "inputs": {"history": ["b", max_len, "int32"], "history_uploader": ["b", max_len, "int32"],
                           "history_tags": ["b", max_len, max_tags, "int32"], "mask": ["b", max_len, "bool"]},
                "outputs": {"interests": ["b", encoder.num_interests, dim, "float32"],
                            "valid": ["b", encoder.num_interests, "bool"]},
                "call": "jax.export.deserialize(encoder.bin).call(constants, history, history_uploader, "
                        "history_tags, mask)",
                "platforms": platforms,
                "calling_convention_version": int(exported.calling_convention_version),
                **encoder.info,
            },
            "export_seconds": round(time.perf_counter() - t0, 2),
        }
        manifest = art.write_manifest(tmp, manifest)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def export_from_workdir(workdir: str, out: str, checkpoint: str = "best", export_cfg=None, overwrite: bool = False,
                        log=print) -> dict:
    """Restore checkpoint `checkpoint` ("best" | "latest" | step) of a trained workdir and export it."""
    from mirecall_jax.evaluate import item_vectors
    from mirecall_jax.train.loop import restore_for_inference

    run = restore_for_inference(workdir, str(checkpoint))
    try:
        cfg = export_config()
        if "export" in run.config:  # a workdir config may carry its own export section
            cfg.update(run.config.export.to_dict())
        if export_cfg is not None:
            cfg.update(dict(export_cfg))
        state = run.state
        emb = np.asarray(jax.device_get(item_vectors(run.model, state.params, state.tables, run.dataset.num_items,
                                                     run.config.eval.chunk_size)), np.float32)
        encoder = model_encoder(run.model, state.params, dict(state.aux), run.config.model)
        glob = state.aux.get("activation_global")
        return write_artifact(out, embeddings=emb, dataset=run.dataset, encoder=encoder,
                              family=str(run.config.model.family), config=run.config.to_dict(),
                              checkpoint_step=int(run.step), max_len=int(run.config.model.max_len), export_cfg=cfg,
                              activation_global=None if glob is None else np.asarray(jax.device_get(glob)),
                              overwrite=overwrite, log=log)
    finally:
        run.checkpointer.close()
