"""Run PinnerSage end to end: load the frozen table, checkpoint it, evaluate with the shared `evaluate`.

`evaluate_pinnersage(config, workdir)` is the PinnerSage counterpart of `train.loop.train_and_evaluate`
(there is nothing to train) and writes the same outputs, so the evaluate CLI, `restore_for_inference`
and export treat the workdir like any other:
  config.json   the resolved config, with model.embed_dim set to the table's D
  checkpoints/  one Orbax checkpoint at step 0 whose params are {"item_embedding": table}
  metrics.jsonl the valid and test metrics at step 0;  summary.json  as the loop's, plus "embeddings"
Run again on the same workdir, it re-evaluates the saved checkpoint (the source is not read again).
"""

from __future__ import annotations

import copy
import json
import os
import time

import jax
import ml_collections

from mirecall_jax.data.pipeline import load_dataset
from mirecall_jax.evaluate import evaluate
from mirecall_jax.pinnersage.embeddings import load_embeddings
from mirecall_jax.train.loop import BEST_METRIC, setup
from mirecall_jax.train.metrics_log import MetricsLog


def _saved_embed_dim(workdir: str) -> int | None:
    """model.embed_dim of a previous run in `workdir` that left a checkpoint, else None."""
    path, ckpts = os.path.join(workdir, "config.json"), os.path.join(workdir, "checkpoints")
    if not (os.path.exists(path) and os.path.isdir(ckpts) and any(n.isdigit() for n in os.listdir(ckpts))):
        return None
    with open(path) as fh:
        return int(json.load(fh)["model"]["embed_dim"])


def evaluate_pinnersage(config: ml_collections.ConfigDict, workdir: str) -> dict:
    if config.model.family != "pinnersage":
        raise ValueError(f"evaluate_pinnersage: config.model.family is {config.model.family!r}, not 'pinnersage'")
    wall0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    config = copy.deepcopy(config)
    table, info = None, {}
    dim = _saved_embed_dim(workdir)
    if dim is None:
        table, info = load_embeddings(config.model.pinnersage, load_dataset(config))
        dim = table.shape[1]
    if dim != config.model.embed_dim:
        print(f"pinnersage: model.embed_dim set to the table's D = {dim} (was {config.model.embed_dim})")
        config.model.embed_dim = dim
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as fh:
            fh.write(config.to_json_best_effort(indent=2, sort_keys=True))

    dataset, model, _, partitioner, ckpt, abstract, init_fn, init_args = setup(config, workdir)
    print(f"data: {json.dumps(dataset.stats, sort_keys=True)}")
    log = MetricsLog(workdir)
    if table is None:  # a previous run's checkpoint: re-evaluate it
        state, meta = ckpt.restore(ckpt.latest_step(), abstract)
        info = meta.get("embeddings", {})
        valid = evaluate(model, state, dataset, "valid", config)
    else:
        state = partitioner.init(init_fn, *init_args)  # zeros table, optimizer state (unused), aux, tables
        sharding = partitioner.state_sharding.params["item_embedding"]
        state = state.replace(params={**state.params, "item_embedding": jax.device_put(table, sharding)})
        print(f"pinnersage: embeddings {json.dumps(info, sort_keys=True)}")
        valid = evaluate(model, state, dataset, "valid", config)
        ckpt.save(0, state, metrics=valid, meta={"embeddings": info, "best_so_far": valid[BEST_METRIC]}, force=True)
    log.write(0, "valid", valid)
    test = evaluate(model, state, dataset, "test", config)
    log.write(0, "test", test)
    ckpt.wait_until_finished()
    summary = {
        "best_step": 0,
        "last_step": 0,
        "valid": valid,
        "test": test,
        "wall_seconds": round(time.time() - wall0, 1),
        "data": dataset.stats,
        "embeddings": info,
    }
    log.close()
    ckpt.close()
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w") as fh:
            json.dump(summary, fh, indent=2, sort_keys=True)
    print(f"pinnersage: valid {BEST_METRIC}={valid[BEST_METRIC]:.4f}, test {BEST_METRIC}={test[BEST_METRIC]:.4f}, "
          f"interests per user {test['active_interests']:.2f}")
    return summary
