"""The one train loop: data -> sharded init or resume -> jitted steps -> eval + checkpoints -> summary.

`train_and_evaluate(config, workdir)` is what train.py calls. Outputs in WORKDIR:
  config.json      the resolved config (written at start; what `restore_for_inference` reads back)
  metrics.jsonl    one JSON object per log / eval event;  tensorboard/  the same as event files
  checkpoints/     Orbax checkpoints (latest N + the best by valid recall@50)
  summary.json     at the end: best step, its valid and test metrics, the merge rule chosen
                   (eval.merge = "auto"), wall time, data summary
Running it again on the same workdir resumes from the latest checkpoint; since batch t and the step
rng are pure functions of (seed, t), a resumed run computes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from mirecall_jax import losses
from mirecall_jax.data.pipeline import load_dataset
from mirecall_jax.data.sampler import TrainSampler
from mirecall_jax.config import base_config
from mirecall_jax.evaluate import evaluate
from mirecall_jax.models import build_model, num_interests
from mirecall_jax.train.checkpoint import Checkpointer
from mirecall_jax.train.metrics_log import MetricsLog
from mirecall_jax.train.partitioner import Partitioner
from mirecall_jax.train.state import create_state, make_optimizer
from mirecall_jax.train.step import make_train_step

BEST_METRIC = "recall@50"


def device_tables(dataset, loss_cfg) -> dict:
    """Constant per-item arrays the step reads on device (side ids, sampling distribution)."""
    probs = losses.negative_sampling_probs(dataset.item_count, loss_cfg.negative_sampling, loss_cfg.popularity_alpha)
    return {
        "item_uploader": jnp.asarray(dataset.item_uploader),  # [I]
        "item_tags": jnp.asarray(dataset.item_tags),  # [I, T]
        "neg_probs": jnp.asarray(probs, jnp.float32),  # [I], 0 at padding
        # Training-part item frequency, for in-batch logQ from precomputed counts (floored, never 0).
        "item_freq": jnp.asarray(np.maximum(dataset.item_count, 1) / max(dataset.item_count.sum(), 1), jnp.float32),
    }


def initial_aux(config, dataset) -> dict:
    """Non-trainable state updated inside the step: activation records, streaming item frequencies."""
    aux = {}
    if config.loss.kind == "in_batch" and config.loss.logq_correction and config.loss.logq_source == "streaming":
        aux["item_frequency"] = losses.init_frequency_state(config.loss.frequency_buckets)._asdict()
    k = num_interests(config.model)
    if k == 1:
        return aux
    aux["activation_global"] = jnp.zeros((k,), jnp.float32)  # [K] wins per interest slot
    if config.model.record_per_user:
        aux["activation_user"] = jnp.zeros((dataset.num_users, k), jnp.float32)  # [U, K]
    return aux


@dataclasses.dataclass
class Run:
    """Everything needed to use a trained model: built by training or restored from a workdir."""

    config: ml_collections.ConfigDict
    dataset: Any
    model: Any
    state: Any
    step: int
    checkpointer: Checkpointer


def setup(config, workdir: str, partitioner: Partitioner | None = None):
    """Dataset, model, optimizer, abstract state and checkpointer for `config` (no params yet)."""
    dataset = load_dataset(config)
    model = build_model(config.model, dataset)
    tx = make_optimizer(config.train)
    partitioner = partitioner or Partitioner()
    example = TrainSampler(dataset, partitioner.local_data_shards, config.model.max_len, config.seed).batch(0)
    init_fn = functools.partial(create_state, model, tx)
    init_args = (example, jax.random.PRNGKey(config.seed), initial_aux(config, dataset), device_tables(dataset, config.loss))
    abstract = partitioner.abstract_state(init_fn, *init_args)
    ckpt = Checkpointer(os.path.join(os.path.abspath(workdir), "checkpoints"), keep_latest=config.train.keep_checkpoints,
                        save_every=config.train.eval_every, best_metric=BEST_METRIC,
                        async_save=config.train.async_checkpoint)
    return dataset, model, tx, partitioner, ckpt, abstract, init_fn, init_args


def _check_finite(step: int, values: dict, ckpt: Checkpointer) -> None:
    bad = {k: v for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        ckpt.wait_until_finished()  # the last good checkpoint is safe on disk before we stop
        raise FloatingPointError(f"non-finite training metrics at step {step}: {bad}; last good checkpoint: "
                                 f"step {ckpt.latest_step()} in {ckpt.directory}. Lower train.learning_rate "
                                 f"or set train.grad_clip_norm, then rerun to resume from it.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    if config.model.family == "pinnersage":  # nothing to train: load the table, checkpoint it, evaluate
        from mirecall_jax.pinnersage.run import evaluate_pinnersage  # run.py imports this module

        return evaluate_pinnersage(config, workdir)
    wall0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as fh:
            fh.write(config.to_json_best_effort(indent=2, sort_keys=True))
    dataset, model, tx, partitioner, ckpt, abstract, init_fn, init_args = setup(config, workdir)
    print(f"data: {json.dumps(dataset.stats, sort_keys=True)}")
    if dataset.stats.get("skipped_rows"):
        print(f"skipped rows by reason: {dataset.stats['skipped_rows']}")

    start = ckpt.latest_step()
    best, evals_since_best = -math.inf, 0
    if start is None:
        state, start = partitioner.init(init_fn, *init_args), 0
    else:
        state, meta = ckpt.restore(start, abstract)
        best, evals_since_best = meta.get("best_so_far", -math.inf), int(meta.get("evals_since_best", 0))
        print(f"resumed from step {start} (best valid {BEST_METRIC} so far {best:.4f})")
    tc = config.train
    end = tc.max_steps
    if tc.patience and evals_since_best >= tc.patience:  # the run had already stopped early: no more steps
        end = start

    p_step = partitioner.partition_step(make_train_step(model, tx, config))
    sampler = TrainSampler(dataset, config.train.batch_size, config.model.max_len, config.seed,
                           jax.process_index(), jax.process_count())
    key = jax.random.PRNGKey(config.seed)
    log = MetricsLog(workdir)
    bar = tqdm(range(start, end), initial=start, total=tc.max_steps, disable=jax.process_index() != 0,
               dynamic_ncols=True, mininterval=1.0)
    t_log, n_log = time.perf_counter(), 0
    for step in bar:
        batch = partitioner.shard_batch(sampler.batch(step))
        state, metrics = p_step(state, batch, jax.random.fold_in(key, step))
        n_log += 1
        done = step + 1
        if done % tc.log_every == 0 or done == tc.max_steps:
            values = {k: float(v) for k, v in jax.device_get(metrics).items()}
            values["examples_per_s"] = n_log * tc.batch_size / (time.perf_counter() - t_log)
            _check_finite(done, values, ckpt)
            log.write(done, "train", values)
            bar.set_postfix(loss=f"{values['loss']:.4f}", ex_s=f"{values['examples_per_s']:.0f}")
            t_log, n_log = time.perf_counter(), 0
        if done % tc.eval_every == 0 or done == tc.max_steps:
            loss = float(jax.device_get(metrics["loss"]))
            _check_finite(done, {"loss": loss}, ckpt)  # never checkpoint a NaN state
            result = evaluate(model, state, dataset, "valid", config)
            if result[BEST_METRIC] > best:
                best, evals_since_best = result[BEST_METRIC], 0
            else:
                evals_since_best += 1
            log.write(done, "valid", {"loss": loss, **result})
            ckpt.save(done, state, metrics=result, meta={"best_so_far": best, "evals_since_best": evals_since_best},
                      force=True)
            bar.write(f"step {done}: valid {BEST_METRIC}={result[BEST_METRIC]:.4f} "
                      f"ndcg@50={result['ndcg@50']:.4f} (best {best:.4f})")
            if tc.patience and evals_since_best >= tc.patience:
                bar.write(f"early stopping at step {done}: no better valid {BEST_METRIC} in {tc.patience} evaluations")
                break
    bar.close()
    ckpt.wait_until_finished()

    best_step = ckpt.best_step() or ckpt.latest_step()
    state, _ = ckpt.restore(best_step, abstract)
    merge_choice = None
    if config.eval.merge == "auto":  # pick the merge on the valid split, then record it for export
        merge_choice, valid = choose_merge(model, state, dataset, config)
        config.eval.merge = merge_choice["merge"]
        if jax.process_index() == 0:
            with open(os.path.join(workdir, "config.json"), "w") as fh:
                fh.write(config.to_json_best_effort(indent=2, sort_keys=True))
        print(f"eval.merge auto -> {merge_choice['merge']} (valid {BEST_METRIC}: {merge_choice['valid']})")
    else:
        valid = evaluate(model, state, dataset, "valid", config)
    summary = {
        "best_step": int(best_step),
        "last_step": int(ckpt.latest_step()),
        "merge_choice": merge_choice,
        "valid": valid,
        "test": evaluate(model, state, dataset, "test", config),
        "wall_seconds": round(time.time() - wall0, 1),
        "data": dataset.stats,
    }
    log.write(best_step, "test", summary["test"])
    log.close()
    ckpt.close()
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w") as fh:
            json.dump(summary, fh, indent=2, sort_keys=True)
    return summary


def choose_merge(model, state, dataset, config) -> tuple[dict, dict]:
    """eval.merge = "auto": the merge rule with the higher valid recall@50 on the selected checkpoint
    ("score" on ties) -> ({"merge", "valid": {rule: recall}}, the chosen rule's valid metrics).
    One interest ranks alike under both rules, so "score" is kept without evaluating "mixture"."""
    rules = ("score",) if num_interests(config.model) == 1 else ("score", "mixture")
    results = {}
    for rule in rules:
        trial = ml_collections.ConfigDict(config.to_dict())
        trial.eval.merge = rule
        results[rule] = evaluate(model, state, dataset, "valid", trial)
    best = max(rules, key=lambda rule: results[rule][BEST_METRIC])  # first on ties: "score"
    return {"merge": best, "valid": {rule: r[BEST_METRIC] for rule, r in results.items()}}, results[best]


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The workdir's resolved config, laid over today's defaults.

    Fields added to base_config after the run was trained take today's defaults, so older workdirs
    still evaluate and export (model fields added later default to the old behaviour; evaluation
    fields such as eval.merge are today's protocol).
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not found; is {workdir!r} a training workdir?")
    with open(path) as fh:
        saved = json.load(fh)
    config = base_config()
    _merge(config, saved)
    return config


def _merge(node: ml_collections.ConfigDict, saved: dict) -> None:
    for key, value in saved.items():
        if isinstance(value, dict) and key in node and isinstance(node[key], ml_collections.ConfigDict):
            _merge(node[key], value)
        elif key in node and isinstance(node[key], tuple) and isinstance(value, list):
            node[key] = tuple(value)  # JSON turns tuples into lists
        else:
            with node.ignore_type():
                node[key] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value


def restore_for_inference(workdir: str, which: str = "best") -> Run:
    """The model and state of `workdir`'s checkpoint `which` ("best" | "latest" | a step number)."""
    config = load_config(workdir)
    dataset, model, _, _, ckpt, abstract, _, _ = setup(config, workdir, Partitioner(jax.local_devices()[:1]))
    steps = ckpt.all_steps()
    if not steps:
        raise FileNotFoundError(f"{ckpt.directory}: no checkpoints")
    if which == "best":
        step = ckpt.best_step() or ckpt.latest_step()
    elif which == "latest":
        step = ckpt.latest_step()
    elif which.isdigit() and int(which) in steps:
        step = int(which)
    else:
        raise ValueError(f"--checkpoint: expected best, latest or one of the saved steps {sorted(steps)}, got {which!r}")
    state, _ = ckpt.restore(step, abstract)
    return Run(config, dataset, model, state, int(step), ckpt)
