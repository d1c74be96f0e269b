"""Serving retrieval: ScaNN vs exact JAX brute force, index recall by catalogue size, HTTP latency.

1. Recall: for catalogues of 100k and 1M items (D = 64) the index is built with the default
   parameters of `serving/index.py` (ScaNN's rules by catalogue size, no tuning) and its recall@50
   against exact search is measured on 1,000 query vectors. Item vectors are drawn like trained
   item towers: topic clusters (n / 500 topics, centre ~ N(0, I), item = centre + N(0, I), norms
   spread by exp(N(0, 0.2))), queries = a topic centre + 0.5 N(0, I) (an interest: the mean of
   about four of the topic's items, so half an item's noise). A structure-free
   control (i.i.d. Gaussian items and queries, the hardest case for a partitioning tree) is run at
   100k with the default parameters and after `index.tune_search` (what the export does on real
   users' vectors when recall falls short).
2. Throughput on 1M x 64: batches of `--users` users x K = 4 interests (one batched ScaNN call,
   multi-threaded) vs `metrics.chunked_top_k` (jit, exact, the evaluation's search) on the same
   queries (drawn as in 1.); queries/s = median over `--repeats` passes after a warm-up pass;
   recall@50 of the ScaNN answers against the exact ones on the same batch.
3. HTTP: an artifact is exported from a randomly initialised single-activation model (K = 4,
   D = 64, L = 50) on the default synthetic catalogue (20k items, ScaNN AH + reorder), the server
   runs as its own process (python -m mirecall_jax.serving.server), and a local asyncio client
   (`load`: `--concurrency` keep-alive connections, one request in flight on each) sends
   `--requests` requests (histories of real synthetic users, n = 50, merges cycling score /
   round_robin / diversity) after a warm-up round. Reports p50 / p99 latency (send to full
   response), requests/s and the error count (non-200, wrong length, broken connection).

    python bench/retrieval.py [--users 256] [--repeats 3] [--requests 2000] [--concurrency 200]
Writes bench/results/retrieval.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from mirecall_jax import metrics  # noqa: E402
from mirecall_jax.serving import index as ix  # noqa: E402
from record import write_result  # noqa: E402  (bench/ is on sys.path when run as a script)

D, K, TOPK = 64, 4, 50


def clustered(n: int, queries: int, seed: int):
    rng = np.random.default_rng(seed)
    topics = max(n // 500, 1)
    centers = rng.standard_normal((topics, D), dtype=np.float32)
    items = np.empty((n + 1, D), np.float32)
    for lo in range(0, n + 1, 200_000):  # in blocks: bounded temporaries
        hi = min(lo + 200_000, n + 1)
        block = centers[rng.integers(topics, size=hi - lo)] + rng.standard_normal((hi - lo, D), dtype=np.float32)
        items[lo:hi] = block * np.exp(0.2 * rng.standard_normal((hi - lo, 1))).astype(np.float32)
    items[0] = 0
    # An interest aggregates several watched items of a topic, so it sits closer to the centre than
    # one item does: the noise of a mean of 4 items (std 1 / sqrt(4)).
    q = centers[rng.integers(topics, size=queries)] + 0.5 * rng.standard_normal((queries, D), dtype=np.float32)
    return items, q


def gaussian(n: int, queries: int, seed: int):
    rng = np.random.default_rng(seed)
    items = rng.standard_normal((n + 1, D), dtype=np.float32)
    items[0] = 0
    return items, rng.standard_normal((queries, D), dtype=np.float32)


def recall_run(items, q, label: str, tune: bool = False) -> tuple[dict, ix.ItemIndex]:
    params = ix.resolve_params(items.shape[0] - 1, D)
    index, build_s = ix.build_index(items[1:], params)
    out = {"catalogue": label, "num_items": items.shape[0] - 1, "params": dict(params),
           "build_seconds": round(build_s, 1), "recall@50": ix.measure_recall(index, items, q, TOPK)}
    if tune:
        out["tuning"] = ix.tune_search(index, items, q[: len(q) // 2], TOPK, 0.95)
        out["recall@50_after_tuning_held_out"] = ix.measure_recall(index, items, q[len(q) // 2:], TOPK)
    print(json.dumps(out), flush=True)
    return out, index


def throughput(index, items, q, users: int, repeats: int) -> dict:
    """q [users * K, D]: the interests of `users` users, searched as one batch."""
    items_dev = jax.device_put(items)

    def exact():
        _, i = metrics.chunked_top_k(jax.numpy.asarray(q), items_dev, TOPK)
        return np.asarray(i)

    def approx():
        return index.search(q, TOPK)[1]

    res = {}
    for name, fn in (("scann", approx), ("exact_jax", exact)):
        first = time.perf_counter()
        ids = fn()
        first = time.perf_counter() - first
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        res[name] = {"seconds_per_batch": times, "first_call_seconds": round(first, 2),
                     "queries_per_s": q.shape[0] / med, "users_per_s": users / med}
        res[name + "_ids"] = ids
    res["recall@50"] = ix.recall_against_exact(res.pop("scann_ids"), res.pop("exact_jax_ids"))
    res["speedup"] = res["scann"]["queries_per_s"] / res["exact_jax"]["queries_per_s"]
    res.update(users_per_batch=users, queries_per_batch=int(q.shape[0]))
    print(json.dumps({k: v for k, v in res.items()}), flush=True)
    return res


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_artifact(out: str) -> tuple[str, list]:
    """Random-init single-activation model on the default synthetic catalogue -> artifact; test histories."""
    from mirecall_jax.config import base_config
    from mirecall_jax.data.pipeline import load_dataset
    from mirecall_jax.data.sampler import TrainSampler
    from mirecall_jax.evaluate import item_vectors
    from mirecall_jax.models import build_model
    from mirecall_jax.serving.export import model_encoder, write_artifact
    from mirecall_jax.train.loop import device_tables

    c = base_config()
    c.model.family, c.model.num_interests, c.model.embed_dim, c.model.max_len = "single_activation", K, D, 50
    c.model.use_uploader = c.model.use_tags = True
    ds = load_dataset(c)
    model = build_model(c.model, ds)
    batch = TrainSampler(ds, 8, c.model.max_len, 0).batch(0)
    params = jax.jit(lambda r, b: model.init(r, b, train=False))(
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, batch)["params"]
    emb = np.asarray(item_vectors(model, params, device_tables(ds, c.loss), ds.num_items))
    write_artifact(out, embeddings=emb, dataset=ds, encoder=model_encoder(model, params, {}, c.model),
                   family="single_activation", config=c.to_dict(), checkpoint_step=None, max_len=c.model.max_len,
                   export_cfg={"platforms": "cpu"}, log=lambda *_: None)
    hist = [[str(ds.item_ids[i]) for i in ds.sequence(int(u))[:h]] for u, h in zip(ds.test.users, ds.test.history_end)]
    return out, hist


async def load(port: int, bodies: list[bytes], concurrency: int):
    """`concurrency` keep-alive connections, each with one POST /recommend in flight until all are sent.

    A minimal HTTP/1.1 client on asyncio streams: the load generator shares the machine's cores with
    the server, and a general-purpose async client (httpx) spends several times the server's CPU per
    request at this concurrency, which would measure the client instead of the service.
    """
    queue = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    lat, errors = [], []

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                head = (f"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode()
                t0 = time.perf_counter()
                writer.write(head + body)
                await writer.drain()
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                payload = await reader.readexactly(length)
                lat.append(time.perf_counter() - t0)
                if status != 200 or len(json.loads(payload)["items"]) != 50:
                    errors.append(f"{status}: {payload[:200]!r}")
        except Exception as e:  # noqa: BLE001 - a broken connection is an error, counted
            errors.append(repr(e))
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    errors += ["never sent"] * queue.qsize()  # every connection failed before the queue emptied
    return lat, errors, wall


def http_bench(requests: int, concurrency: int) -> dict:
    import httpx

    tmp = tempfile.mkdtemp(prefix="retrieval-bench-")
    artifact, histories = make_artifact(os.path.join(tmp, "artifact"))
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=ROOT)
    log = open(os.path.join(tmp, "server.log"), "w+")
    proc = subprocess.Popen([sys.executable, "-m", "mirecall_jax.serving.server", "--artifact", artifact,
                             "--port", str(port), "--max-batch", "64"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(log.read()[-2000:])
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        merges = ("score", "round_robin", "diversity")
        payloads = [{"history": histories[i % len(histories)], "n": 50, "merge": merges[i % 3],
                     "diversity_lambda": 0.5 if i % 3 == 2 else 0.0} for i in range(requests)]

        bodies = [json.dumps(p).encode() for p in payloads]
        asyncio.run(load(port, bodies[: min(400, requests)], concurrency))  # warm-up (connections, caches)
        lat, errors, wall = asyncio.run(load(port, bodies, concurrency))
        with open(os.path.join(artifact, "manifest.json")) as fh:
            manifest = json.load(fh)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    lat_ms = np.asarray(lat) * 1000
    out = {"requests": requests, "concurrency": concurrency, "errors": len(errors), "error_samples": errors[:3],
           "p50_ms": float(np.percentile(lat_ms, 50)), "p99_ms": float(np.percentile(lat_ms, 99)),
           "max_ms": float(lat_ms.max()), "requests_per_s": requests / wall, "catalogue": manifest["num_items"],
           "index": manifest["index"]["kind"], "index_recall@50": manifest["index"]["recall@50"],
           "model": "single_activation (random init), K=4, D=64, L=50", "n": 50}
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=256, help="users per throughput batch (x 4 interests)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--skip-http", action="store_true")
    args = p.parse_args()
    t0 = time.time()
    result = {"benchmark": "retrieval", "dim": D, "interests": K, "k": TOPK,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__,
                          "device": str(jax.devices()[0])}}
    rec = [recall_run(*clustered(100_000, 1000, 1), "clustered 100k")[0]]
    rec.append(recall_run(*gaussian(100_000, 1000, 2), "gaussian 100k (control)", tune=True)[0])
    items, q = clustered(1_000_000, 1000 + args.users * K, 3)
    r1m, index = recall_run(items, q[:1000], "clustered 1M")
    rec.append(r1m)
    result["recall"] = rec
    result["throughput_1m"] = throughput(index, items, q[1000:], args.users, args.repeats)
    del index, items
    if not args.skip_http:
        result["http"] = http_bench(args.requests, args.concurrency)
    result["wall_seconds"] = round(time.time() - t0, 1)
    write_result("retrieval", result)
    t = result["throughput_1m"]
    print(f"\n1M x {D}: ScaNN {t['scann']['queries_per_s']:.0f} q/s vs exact JAX "
          f"{t['exact_jax']['queries_per_s']:.0f} q/s "
          f"-> {t['speedup']:.1f}x at recall@50 {t['recall@50']:.3f}")
    for r in rec:
        print(f"recall@50 {r['catalogue']}: {r['recall@50']:.3f} ({r['params']['kind']})")
    if "http" in result:
        h = result["http"]
        print(f"HTTP /recommend, {h['concurrency']} concurrent: p50 {h['p50_ms']:.0f} ms, p99 {h['p99_ms']:.0f} ms, "
              f"{h['requests_per_s']:.0f} req/s, {h['errors']} errors")


if __name__ == "__main__":
    main()
