"""Train-step throughput (examples/s) of the partitioned, donated step against a bare jax.jit step.

Model: single-vector baseline (base_config: sampled softmax, 1280 popularity negatives, logQ;
Adam) with model.max_len = 20, model.embed_dim = 64, on the synthetic dataset from
`pipeline.load_dataset`. Three figures per batch size, all in the same process:
  project     `Partitioner().partition_step(make_train_step(...))`, state from `partitioner.init`,
              donated through the loop; batches pre-generated with TrainSampler and sharded
              before timing, rng keys precomputed (the device step only).
  reference   a minimal hand-written `jax.jit` step: value_and_grad of the same `make_loss_fn`
              loss, optax update, no partitioner, no donation; same pre-built batches.
  end-to-end  the project step as train/loop.py drives it: sampler.batch(t) + shard_batch +
              fold_in inside the timed loop (host batch generation included).
Each figure: median (and the best, less sensitive to other processes' load) over `--repeats`
repeats of `--steps` steps after compilation and warm-up, block_until_ready at the end of each
repeat. The three run interleaved, in alternating order, so load drifts hit them alike; the
per-repeat (paired) ratio project/reference is reported too, and, as a load-independent
cross-check, XLA's cost analysis (flops, bytes accessed) of both compiled steps. Before timing, one step of project
and reference from the same initial params, batch and rng must agree (same loss, same params).

    python bench/train_throughput.py [--batches 128,1024] [--steps 50] [--repeats 5]
Writes bench/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from mirecall_jax.config import base_config  # noqa: E402
from mirecall_jax.data.pipeline import load_dataset  # noqa: E402
from mirecall_jax.data.sampler import TrainSampler  # noqa: E402
from mirecall_jax.models import build_model  # noqa: E402
from mirecall_jax.train.loop import device_tables, initial_aux  # noqa: E402
from mirecall_jax.train.partitioner import Partitioner  # noqa: E402
from mirecall_jax.train.state import create_state, make_optimizer  # noqa: E402
from mirecall_jax.train.step import make_loss_fn, make_train_step  # noqa: E402
from record import write_result  # noqa: E402  (bench/ is on sys.path when run as a script)


def bench_config():
    config = base_config()
    config.model.max_len = 20
    config.model.embed_dim = 64
    return config


def make_reference_step(model, tx, config):
    """What one would write by hand: jit(value_and_grad + optax), nothing else."""
    loss_fn = make_loss_fn(model, config)

    @jax.jit
    def ref_step(params, opt_state, tables_state, batch, rng):
        # loss_fn reads only `.tables` from its state argument.
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, tables_state, batch, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return ref_step


def check_same_step(p_step, ref_step, state, ref_state, tables, batch, ref_batch, key):
    """One step of each from identical params/batch/rng must give the same loss and params."""
    ref_params, ref_opt, ref_loss = ref_step(ref_state.params, ref_state.opt_state, tables, ref_batch, key)
    state, metrics = p_step(state, batch, key)
    np.testing.assert_allclose(float(metrics["loss"]), float(ref_loss), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6),
                 state.params, ref_params)
    return state, ref_state.replace(params=ref_params, opt_state=ref_opt)


def compiled_cost(lowered) -> dict:
    """XLA's static cost of one step: a load-independent cross-check of the timed ratio."""
    c = lowered.compile()
    cost = c.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    mem = c.memory_analysis()
    return {"flops": float(cost.get("flops", 0.0)), "bytes_accessed": float(cost.get("bytes accessed", 0.0)),
            "temp_bytes": int(mem.temp_size_in_bytes), "donated_alias_bytes": int(mem.alias_size_in_bytes)}


def run_batch_size(dataset, model, tx, config, batch_size: int, steps: int, repeats: int) -> dict:
    seed = config.seed
    partitioner = Partitioner()
    sampler = TrainSampler(dataset, batch_size, config.model.max_len, seed)
    init_fn = functools.partial(create_state, model, tx)
    init_args = (sampler.batch(0), jax.random.PRNGKey(seed), initial_aux(config, dataset),
                 device_tables(dataset, config.loss))
    state = partitioner.init(init_fn, *init_args)
    ref_state = jax.jit(init_fn)(*init_args)  # same values, default (single-device) placement
    tables = ref_state.replace(params=None, opt_state=None)  # what the reference passes as `state`
    p_step = partitioner.partition_step(make_train_step(model, tx, config))
    ref_step = make_reference_step(model, tx, config)

    key = jax.random.PRNGKey(seed)
    host = [sampler.batch(t) for t in range(1, steps + 1)]
    batches = [partitioner.shard_batch(b) for b in host]  # project: global arrays on the mesh
    ref_batches = [jax.device_put(b) for b in host]  # reference: plain device_put
    keys = [jax.random.fold_in(key, t) for t in range(1, steps + 1)]
    jax.block_until_ready((batches, ref_batches, keys))

    compiled = {"project": compiled_cost(p_step.lower(state, batches[0], keys[0])),
                "reference": compiled_cost(ref_step.lower(ref_state.params, ref_state.opt_state, tables,
                                                          ref_batches[0], keys[0]))}

    with warnings.catch_warnings(record=True) as caught:  # e.g. "donated buffers were not usable"
        warnings.simplefilter("always")
        state, ref_state = check_same_step(p_step, ref_step, state, ref_state, tables,
                                           batches[0], ref_batches[0], keys[0])
        for b, rb, k in zip(batches, ref_batches, keys):  # warm-up (compilation done above)
            state, _ = p_step(state, b, k)
            rp, ro, _ = ref_step(ref_state.params, ref_state.opt_state, tables, rb, k)
            ref_state = ref_state.replace(params=rp, opt_state=ro)
        jax.block_until_ready((state, ref_state))

        def project():
            nonlocal state
            metrics = None
            for b, k in zip(batches, keys):
                state, metrics = p_step(state, b, k)
            jax.block_until_ready((state, metrics))

        def reference():
            nonlocal ref_state
            params, opt, loss = ref_state.params, ref_state.opt_state, None
            for b, k in zip(ref_batches, keys):
                params, opt, loss = ref_step(params, opt, tables, b, k)
            jax.block_until_ready((params, opt, loss))
            ref_state = ref_state.replace(params=params, opt_state=opt)

        next_step = steps + 1

        def end_to_end():  # as train/loop.py: host batch + shard + fold_in + step, every step
            nonlocal state, next_step
            metrics = None
            for t in range(next_step, next_step + steps):
                batch = partitioner.shard_batch(sampler.batch(t))
                state, metrics = p_step(state, batch, jax.random.fold_in(key, t))
            next_step += steps
            jax.block_until_ready((state, metrics))

        end_to_end()  # warm-up (fold_in / shard paths)
        times = {"project": [], "reference": [], "end_to_end": []}
        order = [("project", project), ("reference", reference), ("end_to_end", end_to_end)]
        for r in range(repeats):  # alternate the order so slow drifts in machine load cancel out
            for name, fn in (order if r % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    donation_warnings = sorted({str(w.message)[:200] for w in caught})

    rate = {name: steps * batch_size / statistics.median(ts) for name, ts in times.items()}
    best = {name: steps * batch_size / min(ts) for name, ts in times.items()}
    return {
        "batch_size": batch_size,
        "examples_per_s": {k: round(v) for k, v in rate.items()},
        "examples_per_s_best_repeat": {k: round(v) for k, v in best.items()},
        "ratio_project_vs_reference_best_repeat": round(best["project"] / best["reference"], 3),
        "ms_per_step_median": {k: round(1e3 * statistics.median(ts) / steps, 3) for k, ts in times.items()},
        "ms_per_step_all": {k: [round(1e3 * t / steps, 3) for t in ts] for k, ts in times.items()},
        "ratio_project_vs_reference": round(rate["project"] / rate["reference"], 3),
        # Same repeat, adjacent in time: the least load-sensitive estimate of the overhead.
        "ratio_project_vs_reference_paired_median": round(statistics.median(
            r / p for p, r in zip(times["project"], times["reference"])), 3),
        "ratio_end_to_end_vs_project": round(rate["end_to_end"] / rate["project"], 3),
        "compiled": compiled,
        "warnings": donation_warnings,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="128,1024", help="comma-separated batch sizes")
    ap.add_argument("--steps", type=int, default=50, help="steps per timed repeat")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    config = bench_config()
    t0 = time.perf_counter()
    dataset = load_dataset(config)
    load_s = time.perf_counter() - t0
    model = build_model(config.model, dataset)
    tx = make_optimizer(config.train)
    print(f"dataset: synthetic via load_dataset ({load_s:.1f}s, cached={dataset.stats.get('cached')}): "
          f"{dataset.num_users} users, {dataset.num_items - 1} items; devices: {jax.devices()}")
    print(f"model: single_vector D={config.model.embed_dim} L={config.model.max_len} "
          f"loss={config.loss.kind} N={config.loss.num_negatives} opt={config.train.optimizer}; "
          f"{args.repeats} repeats x {args.steps} steps, median")

    load_before = os.getloadavg()
    rows = []
    for b in (int(x) for x in args.batches.split(",")):
        rows.append(run_batch_size(dataset, model, tx, config, b, args.steps, args.repeats))

    print(f"load average (1 min) before / after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'B':>6} {'project ex/s':>14} {'reference ex/s':>15} {'ratio':>6} {'end-to-end ex/s':>16} "
          f"{'e2e/proj':>8}   ms/step (proj / ref / e2e)")
    for r in rows:
        e, ms = r["examples_per_s"], r["ms_per_step_median"]
        print(f"{r['batch_size']:>6} {e['project']:>14,} {e['reference']:>15,} {r['ratio_project_vs_reference']:>6.2f} "
              f"{e['end_to_end']:>16,} {r['ratio_end_to_end_vs_project']:>8.2f}   "
              f"{ms['project']:.2f} / {ms['reference']:.2f} / {ms['end_to_end']:.2f}   "
              f"paired ratio {r['ratio_project_vs_reference_paired_median']:.2f}")
        cp, cr = r["compiled"]["project"], r["compiled"]["reference"]
        print(f"{'':>6} compiled step (XLA cost analysis) project/reference: flops {cp['flops'] / cr['flops']:.3f}x, "
              f"bytes accessed {cp['bytes_accessed'] / cr['bytes_accessed']:.3f}x; "
              f"donated (aliased) {cp['donated_alias_bytes'] / 2**20:.1f} MiB")
        b = r["examples_per_s_best_repeat"]
        print(f"{'(best)':>6} {b['project']:>14,} {b['reference']:>15,} {r['ratio_project_vs_reference_best_repeat']:>6.2f} "
              f"{b['end_to_end']:>16,} {b['end_to_end'] / b['project']:>8.2f}")
        for w in r["warnings"]:
            print(f"  warning (B={r['batch_size']}): {w}")

    result = {"benchmark": "train_throughput", "dataset": "synthetic via pipeline.load_dataset(base_config())",
              "num_users": int(dataset.num_users), "num_items": int(dataset.num_items - 1),
              "model": "single_vector", "embed_dim": config.model.embed_dim, "max_len": config.model.max_len,
              "loss": config.loss.kind, "num_negatives": config.loss.num_negatives,
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "steps_per_repeat": args.steps, "repeats": args.repeats, "results": rows,
              "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
              "python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count()}
    path = write_result("train_throughput", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
