"""Ward clustering speed: batched, jitted JAX (`ward_merges` / `cluster_users`) vs a Python loop over
`scipy.cluster.hierarchy.linkage(x, 'ward')`, same users, same process.

Data: U users x L items x D dims, each user a Gaussian mixture of 1..5 components (centres ~ 3 N(0, I),
unit noise), every position valid. Full linkage is timed with exact ("direct") and dot-product
("gram") initial distances. JAX times are after compilation: one warm-up call, then the
median of `--repeats` calls. scipy is timed on every user when a first 500-user probe predicts
< 60 s for all of them; otherwise on the first `--scipy-users` users, extrapolated linearly (the
output says which). Labels: `cluster_users(threshold)` must equal `fcluster(linkage(x), threshold,
'distance')` up to renumbering on every user scipy was run on; mismatches are counted.

    python bench/ward_speed.py [--users 10000] [--max-len 50] [--dim 64] [--chunk 256]
                               [--threshold 60] [--pin-core N]
Writes bench/results/ward_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from record import write_result

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GOAL = 10.0  # wanted speed-up of JAX over the scipy loop, after compilation


def mixtures(seed: int, users: int, length: int, dim: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    k = rng.integers(1, 6, size=users)  # components per user
    centres = rng.normal(size=(users, 5, dim)) * 3.0
    which = rng.integers(0, 5, size=(users, length)) % k[:, None]
    emb = np.take_along_axis(centres, which[..., None], axis=1) + rng.normal(size=(users, length, dim))
    return emb.astype(np.float32), k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--threshold", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scipy-users", type=int, default=1000)
    ap.add_argument("--pin-core", type=int, default=None, help="run the whole process on this one core")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.pin_core is not None:  # before JAX starts its thread pools
        os.sched_setaffinity(0, {args.pin_core})

    import jax
    import numpy as np
    from scipy.cluster.hierarchy import fcluster, linkage

    from mirecall_jax.pinnersage.ward import cluster_users, ward_merges

    U, L, D = args.users, args.max_len, args.dim
    emb, k = mixtures(args.seed, U, L, D)
    mask = np.ones((U, L), bool)
    e, m = jax.device_put(emb), jax.device_put(mask)

    def timed(fn) -> float:
        jax.block_until_ready(fn())  # compile + warm up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    jax_link = timed(lambda: ward_merges(e, m, chunk=args.chunk))
    jax_gram = timed(lambda: ward_merges(e, m, chunk=args.chunk, distances="gram"))
    jax_label = timed(lambda: cluster_users(e, m, args.threshold, chunk=args.chunk))
    labels = np.asarray(cluster_users(e, m, args.threshold, chunk=args.chunk))

    def scipy_loop(n: int) -> tuple[float, list]:
        t0 = time.perf_counter()
        trees = [linkage(emb[u].astype(np.float64), "ward") for u in range(n)]
        return time.perf_counter() - t0, trees

    probe = min(U, 500)
    t_probe, _ = scipy_loop(probe)
    timed_all = t_probe / probe * U < 60.0
    n_scipy = U if timed_all else min(U, args.scipy_users)
    t_scipy, trees = scipy_loop(n_scipy)
    scipy_total = t_scipy / n_scipy * U

    def canon(v) -> list:
        seen: dict = {}
        return [seen.setdefault(int(x), len(seen)) for x in v]

    mismatches = sum(canon(fcluster(z, args.threshold, "distance")) != labels[u].tolist()
                     for u, z in enumerate(trees))
    clusters = labels.max(1) + 1
    how = "measured on all users" if timed_all else f"timed on {n_scipy} users, extrapolated linearly to {U}"
    print(f"{U} users x {L} items x {D} dims; JAX {jax.__version__} on {jax.devices()[0].platform}, "
          f"chunk {args.chunk}, cores {sorted(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f}")
    print(f"JAX ward_merges (full linkage):     {jax_link:8.3f} s  ({jax_link / U * 1e6:6.1f} us/user)")
    print(f"JAX ward_merges, gram distances:    {jax_gram:8.3f} s  ({jax_gram / U * 1e6:6.1f} us/user)")
    print(f"JAX cluster_users (t={args.threshold:g}):       {jax_label:8.3f} s  ({jax_label / U * 1e6:6.1f} us/user)")
    print(f"scipy linkage loop:                 {scipy_total:8.3f} s  ({scipy_total / U * 1e6:6.1f} us/user; {how})")
    print(f"speed-up, full linkage: {scipy_total / jax_link:.2f}x (gram distances {scipy_total / jax_gram:.2f}x); "
          f"with labels: {scipy_total / jax_label:.2f}x "
          f"(goal >= {GOAL:g}x: {'met' if scipy_total / jax_link >= GOAL else 'NOT met'})")
    print(f"labels vs fcluster(t={args.threshold:g}): {mismatches} mismatching users of {n_scipy}; "
          f"mean clusters/user {clusters.mean():.2f} (true components {k.mean():.2f}, "
          f"exact count on {np.mean(clusters == k):.1%} of users)")

    result = {
        "benchmark": "ward_speed", "users": U, "max_len": L, "dim": D, "chunk": args.chunk,
        "threshold": args.threshold, "repeats": args.repeats,
        "jax_full_linkage_s": round(jax_link, 4), "jax_full_linkage_gram_s": round(jax_gram, 4),
        "jax_cluster_users_s": round(jax_label, 4),
        "scipy_loop_s": round(scipy_total, 4), "scipy_users_timed": n_scipy, "scipy_extrapolated": not timed_all,
        "speedup_full_linkage": round(scipy_total / jax_link, 2),
        "speedup_full_linkage_gram": round(scipy_total / jax_gram, 2),
        "speedup_cluster_users": round(scipy_total / jax_label, 2),
        "goal_speedup": GOAL, "goal_met": bool(scipy_total / jax_link >= GOAL),
        "label_mismatch_users": int(mismatches), "label_users_checked": n_scipy,
        "mean_clusters_per_user": round(float(clusters.mean()), 3), "mean_true_components": round(float(k.mean()), 3),
        "cores": sorted(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(), "load_average_1m": os.getloadavg()[0],
        "jax": jax.__version__, "python": platform.python_version(), "machine": platform.machine(),
    }
    print(f"wrote {write_result('ward_speed', result)}")


if __name__ == "__main__":
    main()
