"""MovieTweetings read + preprocess time, cold (empty cache) vs cached; median of 5 repeats.

The reference for the cached load is the cold path in the same process (ratio = cold / cached).
Writes bench/results/preprocess_speed.json.

  .venv/bin/python bench/preprocess_speed.py [--path ../shared/data/movietweetings-100k]
"""

import argparse
import json
import os
import statistics
import tempfile
import time

from mirecall_jax.config import base_config
from mirecall_jax.data.pipeline import load_dataset
from record import write_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--path", default=os.path.join(ROOT, "..", "shared", "data", "movietweetings-100k"))
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if not os.path.exists(os.path.join(args.path, "ratings.dat")):
        raise SystemExit(f"{args.path}/ratings.dat not found")
    c = base_config()
    c.data.format, c.data.path = "movietweetings", args.path
    cold, cached = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            c.data.cache_dir = cache
            t0 = time.perf_counter()
            ds = load_dataset(c)
            cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            again = load_dataset(c)
            cached.append(time.perf_counter() - t0)
            assert not ds.stats["cached"] and again.stats["cached"]
    result = {
        "rows": ds.stats["rows"], "users": ds.stats["users"], "items": ds.stats["items"],
        "cold_seconds_median": statistics.median(cold), "cached_seconds_median": statistics.median(cached),
        "cold_over_cached": statistics.median(cold) / statistics.median(cached), "repeats": args.repeats,
    }
    print(f"MovieTweetings -> {result['users']} users, {result['items']} items, {result['rows']} rows")
    print(f"cold (read + preprocess + write cache): {result['cold_seconds_median']:.3f} s  "
          f"cached: {result['cached_seconds_median']:.4f} s  ratio {result['cold_over_cached']:.1f}x")
    write_result("preprocess_speed", result)


if __name__ == "__main__":
    main()
