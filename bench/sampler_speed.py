"""Training-sampler throughput (examples/s) against a naive per-example Python loop, same process.

Dataset: the default synthetic log run through the real preprocessing (`pipeline.preprocess`) when
that module is importable, else a random CSR dataset of the same size (5000 users, 20000 items,
lengths 20..80, T = 4). Requirement: >= 50,000 examples/s at L = 50 on one core.

    python bench/sampler_speed.py [--batch 1024] [--max-len 50] [--batches 50] [--repeats 5]
Writes bench/results/sampler_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the requirement is per core; numpy gathers are serial anyway
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from mirecall_jax.config import base_config  # noqa: E402
from mirecall_jax.data.dataset import Dataset, EvalSplit  # noqa: E402
from mirecall_jax.data.sampler import TrainSampler  # noqa: E402
from record import write_result  # noqa: E402  (bench/ is on sys.path when run as a script)

REQUIRED = 50_000  # examples/s


def random_dataset(seed: int = 0, users: int = 5000, items: int = 20000, T: int = 4) -> Dataset:
    """Fallback: random CSR sequences of realistic size; every user trains on the full sequence."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 81, size=users)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(offsets[-1])
    empty = EvalSplit(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int32))
    item_tags = rng.integers(1, 500, size=(items, T)).astype(np.int32)
    item_uploader = rng.integers(1, 2000, size=items).astype(np.int32)
    item_tags[0], item_uploader[0] = 0, 0
    return Dataset(
        item_ids=np.array([""] + [f"v{i}" for i in range(1, items)]), user_ids=np.array([f"u{i}" for i in range(users)]),
        uploader_ids=np.array([""] + [f"up{i}" for i in range(1, 2000)]), tag_ids=np.array([""] + [f"t{i}" for i in range(1, 500)]),
        category_ids=np.array(["c0"]), offsets=offsets, items=rng.integers(1, items, size=n).astype(np.int32),
        timestamps=np.arange(n, dtype=np.int64), item_uploader=item_uploader, item_tags=item_tags,
        item_category=np.zeros(items, np.int32), item_count=np.ones(items, np.int64),
        train_users=np.arange(users, dtype=np.int32), train_end=lengths.astype(np.int32), valid=empty, test=empty)


def build_dataset(seed: int) -> tuple[Dataset, str]:
    try:
        from mirecall_jax.data.pipeline import preprocess
        from mirecall_jax.data.synthetic import generate_event_log
    except ImportError:
        return random_dataset(seed), "random CSR (pipeline not importable)"
    cfg = base_config()
    return preprocess(generate_event_log(cfg.data.synthetic, seed), cfg.data, seed), "synthetic via pipeline.preprocess"


def naive_batch(sampler: TrainSampler, step: int) -> dict[str, np.ndarray]:
    """Reference: the same batch built one example at a time in Python (what a simple loader does)."""
    ds, L = sampler.dataset, sampler.max_len
    users, cuts = sampler.examples(step)
    B, T = len(users), ds.max_tags
    out = {"user": np.zeros(B, np.int32), "history": np.zeros((B, L), np.int32),
           "history_uploader": np.zeros((B, L), np.int32), "history_tags": np.zeros((B, L, T), np.int32),
           "mask": np.zeros((B, L), bool), "target": np.zeros(B, np.int32),
           "target_uploader": np.zeros(B, np.int32), "target_tags": np.zeros((B, T), np.int32)}
    for i in range(B):
        u, c = int(users[i]), int(cuts[i])
        seq = ds.items[ds.offsets[u]: ds.offsets[u + 1]]
        hist = seq[max(0, c - L): c]
        n = len(hist)
        out["user"][i] = u
        out["history"][i, L - n:] = hist
        out["history_uploader"][i, L - n:] = ds.item_uploader[hist]
        out["history_tags"][i, L - n:] = ds.item_tags[hist]
        out["mask"][i, L - n:] = True
        out["target"][i] = seq[c]
        out["target_uploader"][i] = ds.item_uploader[seq[c]]
        out["target_tags"][i] = ds.item_tags[seq[c]]
    return out


def examples_per_s(fn, batches: int, batch_size: int, repeats: int) -> float:
    fn(0)  # warm up (first-touch of the arrays)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        for t in range(batches):
            fn(1 + r * batches + t)
        times.append(time.perf_counter() - t0)
    return batches * batch_size / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    ds, source = build_dataset(args.seed)
    sampler = TrainSampler(ds, args.batch, args.max_len, seed=args.seed)
    ref, got = naive_batch(sampler, 123), sampler.batch(123)
    for k in ref:  # the reference must build the very same batch, or the ratio means nothing
        np.testing.assert_array_equal(ref[k], got[k], err_msg=k)

    fast = examples_per_s(sampler.batch, args.batches, args.batch, args.repeats)
    naive_batches = max(1, args.batches // 10)  # the naive loop is slow; fewer batches, same median
    slow = examples_per_s(lambda t: naive_batch(sampler, t), naive_batches, args.batch, args.repeats)
    ratio = fast / slow
    print(f"dataset: {source}: {ds.num_users} users, {ds.num_items - 1} items, {len(ds.items)} events, T={ds.max_tags}")
    print(f"TrainSampler.batch  B={args.batch} L={args.max_len}: {fast:12,.0f} examples/s "
          f"({'PASS' if fast >= REQUIRED else 'FAIL'} >= {REQUIRED:,})")
    print(f"naive Python loop  (reference):     {slow:12,.0f} examples/s")
    print(f"ratio project/naive: {ratio:.1f}x")

    result = {"benchmark": "sampler_speed", "dataset": source, "batch_size": args.batch, "max_len": args.max_len,
              "batches_per_repeat": args.batches, "repeats": args.repeats,
              "examples_per_s": round(fast), "naive_examples_per_s": round(slow), "ratio_vs_naive": round(ratio, 2),
              "required_examples_per_s": REQUIRED, "meets_requirement": bool(fast >= REQUIRED),
              "numpy": np.__version__, "python": platform.python_version(), "machine": platform.machine()}
    path = write_result("sampler_speed", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
