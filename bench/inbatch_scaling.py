"""MoE two-tower with global in-batch negatives: train-step examples/s and memory, 1 vs 8 devices.

For global batch B in {1k, 4k, 16k} the same partitioned, donated step runs on 1 CPU device and on
8 fake CPU devices (one subprocess each, since the device count is fixed when JAX starts). On this
2-core machine the 8 "devices" share the same cores, so the comparison shows that sharding keeps
the math identical and the per-device memory falling as 1/n — not a speed-up. Memory per device:
XLA's compiled temp allocation (`memory_analysis()`) and the [B/n, B] logits block it must hold.

  .venv/bin/python bench/inbatch_scaling.py [--batches 1024 4096 16384] [--repeats 3]

Writes bench/results/inbatch_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from record import write_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(batch_size: int, devices: int, repeats: int, steps: int) -> dict:
    import jax

    from mirecall_jax.config import base_config, use_dataset
    from mirecall_jax.train.loop import setup
    from mirecall_jax.train.step import make_train_step

    assert len(jax.devices()) == devices, jax.devices()
    config = use_dataset(base_config(), "synthetic")
    config.model.family, config.model.num_interests = "moe", 4
    config.model.use_uploader = config.model.use_tags = True
    config.loss.kind, config.loss.temperature, config.loss.focal_gamma = "in_batch", 0.1, 1.0
    config.train.batch_size = batch_size
    dataset, model, tx, part, ckpt, abstract, init_fn, init_args = setup(config, "/tmp/mirecall_inbatch_bench")
    state = part.init(init_fn, *init_args)
    step = part.partition_step(make_train_step(model, tx, config))
    from mirecall_jax.data.sampler import TrainSampler

    sampler = TrainSampler(dataset, batch_size, config.model.max_len, config.seed)
    batches = [part.shard_batch(sampler.batch(t)) for t in range(steps)]
    key = jax.random.PRNGKey(0)
    compiled = step.lower(state, batches[0], key).compile()
    temp_bytes = compiled.memory_analysis().temp_size_in_bytes
    state, m = step(state, batches[0], key)  # warm-up
    jax.block_until_ready(m)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in batches:
            state, m = step(state, b, key)
        jax.block_until_ready(m)
        times.append((time.perf_counter() - t0) / steps)
    return {"batch": batch_size, "devices": devices, "seconds_per_step": statistics.median(times),
            "examples_per_s": batch_size / statistics.median(times),
            "xla_temp_bytes_per_device": temp_bytes,  # an SPMD executable reports per-device sizes
            "logits_bytes_per_device": 4 * batch_size * batch_size // devices, "loss": float(m["loss"])}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batches", nargs="+", type=int, default=[1024, 4096, 16384])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.repeats, args.steps)))
        return
    rows = []
    for b in args.batches:
        for n in (1, 8):
            env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
            out = subprocess.run([sys.executable, __file__, "--worker", str(b), str(n), "--repeats", str(args.repeats),
                                  "--steps", str(args.steps)], env=env, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"B={b:>6} devices={n}: {r['examples_per_s']:>9,.0f} examples/s  "
                  f"logits/device {r['logits_bytes_per_device'] / 2**20:>7.1f} MiB  "
                  f"XLA temp/device {r['xla_temp_bytes_per_device'] / 2**20:>8.1f} MiB  loss {r['loss']:.4f}", flush=True)
        one, eight = rows[-2], rows[-1]
        print(f"          8-device / 1-device throughput: {eight['examples_per_s'] / one['examples_per_s']:.2f}x; "
              f"logits memory per device: {one['logits_bytes_per_device'] / eight['logits_bytes_per_device']:.0f}x smaller")
    write_result("inbatch_scaling", rows)


if __name__ == "__main__":
    main()
