"""Exact retrieval for evaluation (users/s, peak memory): `chunked_top_k` against the unchunked computation.

Setup: a 1M-item catalogue of random float32 vectors (D = 64; id 0 is padding and never returned),
random users with K = 4 interest vectors each. Per batch of users: exact top-50 per interest over
the whole catalogue, then `serving.merge.merge_score` to one top-50 list per user (what
`evaluate.evaluate` does per batch).
  chunked     `metrics.chunked_top_k` (lax.scan over 65,536-item chunks, running top-k), batches
              of `--batch` users (Q = batch * K queries per call).
  reference   the unchunked computation: `queries @ items.T` (HIGHEST precision, id 0 masked),
              then `jax.lax.top_k`; it materialises Q x M x 4 bytes of scores per batch (8 GiB at
              512 users), so it runs on batches of `--ref-batch` users (default 128 -> 2 GiB).
Each variant runs in its own subprocess (`--variant NAME`), so its peak RSS (ru_maxrss at the end,
minus the RSS right after the item matrix and queries were created) is its own retrieval's peak,
compilation included. Right after creating them the subprocess calls malloc_trim(0) and resets the
kernel's peak-RSS mark (/proc/self/clear_refs), so neither the generator's transient peak nor
freed-but-resident heap (which the retrieval would reuse unseen) distorts the figure; XLA's planned
temp memory of each variant is printed beside it. users/s: median of `--repeats` passes over all
users after one compiling pass. The parent checks that both variants return the same per-interest
and merged ids on the first `--check-users` users.

    python bench/eval_speed.py [--users 512] [--batch 512] [--ref-batch 128] [--repeats 3]
Writes bench/results/eval_speed.json.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mirecall_jax.metrics import chunked_top_k  # noqa: E402
from mirecall_jax.serving.merge import merge_score  # noqa: E402
from record import write_result  # noqa: E402  (bench/ is on sys.path when run as a script)

MIB = 1024 * 1024


def rss_now_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def release_and_reset_peak() -> bool:
    """Return freed heap memory to the OS, then reset the peak-RSS mark to the current RSS.

    Without this, memory freed while building the items (XLA temporaries of the generator,
    compilation) stays resident in malloc arenas, inflates the baseline and is then reused by the
    retrieval, hiding part of its peak; and the creation's own transient peak would stay in
    ru_maxrss. Returns False where /proc/self/clear_refs is not writable (peak not reset).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM, which ru_maxrss reports, to the current RSS
        return True
    except OSError:
        return False


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def make_items(seed: int, num_items: int, dim: int, gen_chunk: int = 62_500) -> jax.Array:
    """[num_items, dim] N(0, 1) float32 built on device gen_chunk rows at a time (no full-size temporaries)."""
    n_chunks = -(-num_items // gen_chunk)

    @jax.jit
    def build(key):
        keys = jax.random.split(key, n_chunks)
        parts = jax.lax.map(lambda k: jax.random.normal(k, (gen_chunk, dim), jnp.float32), keys)
        return parts.reshape(n_chunks * gen_chunk, dim)[:num_items]

    return build(jax.random.PRNGKey(seed))


@functools.partial(jax.jit, static_argnames=("k",))
def full_top_k(queries: jax.Array, items: jax.Array, k: int):
    """Reference: all Q x M scores at once (padding id 0 masked), then lax.top_k."""
    s = jnp.matmul(queries, items.T, precision=jax.lax.Precision.HIGHEST,
                   preferred_element_type=jnp.float32)  # [Q, M]
    s = s.at[:, 0].set(-jnp.inf)
    scores, ids = jax.lax.top_k(s, k)
    return scores, ids.astype(jnp.int32)


def xla_temp_mib(args) -> dict:
    """XLA's planned temporary memory per call of each variant (static; a cross-check of the RSS peaks)."""
    items = jax.ShapeDtypeStruct((args.items, args.dim), jnp.float32)
    out = {}
    for variant, batch in (("chunked", args.batch), ("reference", args.ref_batch)):
        q = jax.ShapeDtypeStruct((batch * args.interests, args.dim), jnp.float32)
        if variant == "chunked":
            fn = jax.jit(lambda q, it: chunked_top_k(q, it, args.k, chunk_size=args.chunk))
        else:
            fn = jax.jit(lambda q, it: full_top_k(q, it, args.k))
        out[variant] = fn.lower(q, items).compile().memory_analysis().temp_size_in_bytes / MIB
    return out


def run_variant(args) -> dict:
    """Subprocess body: time one variant over all users, record its peak memory, save check ids."""
    users, K, D, k = args.users, args.interests, args.dim, args.k
    batch = args.batch if args.variant == "chunked" else args.ref_batch
    if users % batch:
        raise SystemExit(f"--users ({users}) must be a multiple of the batch size ({batch})")
    queries = jax.random.normal(jax.random.PRNGKey(args.seed + 1), (users, K, D), jnp.float32)
    valid = np.ones((users, K), bool)
    items = make_items(args.seed, args.items, D)
    jax.block_until_ready((queries, items))
    creation_max = max_rss_bytes()
    peak_reset = release_and_reset_peak()
    base_rss, base_max = rss_now_bytes(), max_rss_bytes()

    if args.variant == "chunked":
        def top(q):
            return chunked_top_k(q, items, k, chunk_size=args.chunk)
    else:
        def top(q):
            return full_top_k(q, items, k)

    def retrieve(lo: int):
        q = queries[lo:lo + batch].reshape(batch * K, D)
        scores, ids = top(q)
        scores = np.asarray(scores).reshape(batch, K, k)
        ids = np.asarray(ids).reshape(batch, K, k)
        merged, _, _ = merge_score(scores, ids, valid[lo:lo + batch], k)
        return ids, merged

    def one_pass(keep: int = 0):
        per_interest, merged = [], []
        for lo in range(0, users, batch):
            ids, m = retrieve(lo)
            if lo < keep:
                per_interest.append(ids)
                merged.append(m)
        return per_interest, merged

    t0 = time.perf_counter()
    per_interest, merged = one_pass(keep=args.check_users)  # compiles, and gives the ids to check
    first_pass_s = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - t0)
    peak_max = max_rss_bytes()
    n = args.check_users
    np.savez(args.ids_out, per_interest=np.concatenate(per_interest)[:n], merged=np.concatenate(merged)[:n])
    return {
        "variant": args.variant, "batch_users": batch, "queries_per_call": batch * K,
        "users_per_s": users / statistics.median(times), "pass_seconds": times, "first_pass_seconds": first_pass_s,
        "score_buffer_mib": batch * K * (args.chunk if args.variant == "chunked" else args.items) * 4 / MIB,
        "max_rss_creating_items_mib": creation_max / MIB, "peak_mark_reset": peak_reset,
        "rss_after_items_mib": base_rss / MIB, "max_rss_after_reset_mib": base_max / MIB,
        "max_rss_end_mib": peak_max / MIB, "peak_retrieval_mib": (peak_max - base_rss) / MIB,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=["chunked", "reference"], help="internal: run one variant and print JSON")
    ap.add_argument("--ids-out", help="internal: where the variant saves the ids to check")
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--interests", type=int, default=4)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--users", type=int, default=512, help="users per timed pass (2048 takes ~6 min on 2 cores)")
    ap.add_argument("--batch", type=int, default=512, help="users per chunked_top_k call")
    ap.add_argument("--ref-batch", type=int, default=128, help="users per call of the unchunked reference")
    ap.add_argument("--check-users", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if args.variant:
        print(json.dumps(run_variant(args)))
        return

    passed = ("items", "dim", "interests", "k", "chunk", "users", "batch", "ref_batch", "check_users", "repeats", "seed")
    common = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in passed]
    res, ids = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("chunked", "reference"):
            path = os.path.join(tmp, f"{variant}.npz")
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--variant", variant, "--ids-out", path,
                                   *common], capture_output=True, text=True)
            if proc.returncode:
                sys.stderr.write(proc.stdout + proc.stderr)
                raise SystemExit(f"variant {variant} failed with exit code {proc.returncode}")
            res[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
            with np.load(path) as z:
                ids[variant] = {key: z[key] for key in z.files}

    temps = xla_temp_mib(args)
    res["chunked"]["xla_temp_mib"], res["reference"]["xla_temp_mib"] = temps["chunked"], temps["reference"]
    same_per_interest = bool(np.array_equal(ids["chunked"]["per_interest"], ids["reference"]["per_interest"]))
    same_merged = bool(np.array_equal(ids["chunked"]["merged"], ids["reference"]["merged"]))
    c, r = res["chunked"], res["reference"]
    ratio = c["users_per_s"] / r["users_per_s"]
    print(f"catalogue {args.items:,} items x D={args.dim} f32 ({args.items * args.dim * 4 / MIB:.0f} MiB), "
          f"{args.users:,} users x K={args.interests}, top-{args.k} per interest + merge_score; "
          f"median of {args.repeats} passes; devices: {jax.devices()}")
    for v in (c, r):
        label = (f"chunked_top_k (chunk {args.chunk})" if v["variant"] == "chunked" else "unchunked matmul + top_k")
        print(f"{label:<30} {v['batch_users']:>4} users/call: {v['users_per_s']:10,.0f} users/s   "
              f"peak {v['peak_retrieval_mib']:7,.0f} MiB above the items (score buffer {v['score_buffer_mib']:,.0f} MiB, "
              f"XLA temp {v['xla_temp_mib']:,.0f} MiB)")
    print(f"ratio chunked/unchunked users/s: {ratio:.2f}x;  peak memory unchunked/chunked: "
          f"{r['peak_retrieval_mib'] / max(c['peak_retrieval_mib'], 1e-9):.1f}x")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores")
    print(f"same ids on the first {args.check_users} users: per-interest {same_per_interest}, merged {same_merged}")

    result = {"benchmark": "eval_speed", "num_items": args.items, "dim": args.dim, "interests": args.interests,
              "k": args.k, "chunk_size": args.chunk, "users": args.users, "repeats": args.repeats,
              "chunked": c, "reference": r, "ratio_users_per_s_chunked_vs_reference": round(ratio, 3),
              "load_average_end": [round(x, 2) for x in os.getloadavg()], "check_users": args.check_users,
              "same_ids_per_interest": same_per_interest, "same_ids_merged": same_merged,
              "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
              "python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count()}
    path = write_result("eval_speed", result)
    print(f"wrote {path}")
    if not (same_per_interest and same_merged):
        raise SystemExit("chunked and unchunked retrieval returned different ids")


if __name__ == "__main__":
    main()
