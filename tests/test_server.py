"""HTTP service: a real server process (the CLI), validation, truncation notice, concurrent requests."""

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest

from serving_support import exported_artifact, subprocess_env

from mirecall_jax.serving import Retriever


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    artifact = exported_artifact(base)
    port = _free_port()
    log = open(tmp_path_factory.mktemp("server") / "server.log", "w+")  # a file: a full pipe would block it
    proc = subprocess.Popen([sys.executable, "-m", "mirecall_jax.serving.server", "--artifact", str(artifact),
                             "--port", str(port), "--max-batch", "16"], env=subprocess_env(base), stdout=log,
                            stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"server exited: {log.read()[-3000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.time() < deadline, "server did not come up"
        time.sleep(0.2)
    retriever = Retriever.load(str(artifact))
    yield url, artifact, retriever
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_healthz_and_metadata(server):
    url, artifact, _ = server
    health = httpx.get(url + "/healthz").json()
    assert health["status"] == "ok" and health["family"] == "single_activation"
    assert httpx.get(url + "/metadata").json() == json.loads((artifact / "manifest.json").read_text())


def test_recommend_matches_the_retriever(server):
    url, _, retriever = server
    history = retriever.item_ids[10:16]
    body = httpx.post(url + "/recommend", json={"history": history, "n": 12, "merge": "round_robin"}).json()
    want = retriever.recommend([history], n=12, merge="round_robin")[0]
    assert body["items"] == want.items and body["interests"] == want.interests
    assert body["scores"] == pytest.approx(want.scores)
    assert body["fallback"] is False and body["warnings"] == [] and body["history_used"] == 6

    body = httpx.post(url + "/recommend", json={"history": ["never-seen", 123456789], "n": 5}).json()
    assert body["fallback"] is True and body["unknown_items"] == 2 and len(body["items"]) == 5
    assert any("fallback" in w for w in body["warnings"])


def test_long_history_keeps_last_max_len_and_says_so(server):
    url, _, retriever = server
    history = retriever.item_ids[1:41]  # 40 known items, max_len = 20
    body = httpx.post(url + "/recommend", json={"history": history, "n": 10, "exclude_seen": False}).json()
    assert body["history_used"] == 20 and body["truncated"] == 20
    assert any("max_len=20" in w and "last 20" in w for w in body["warnings"])
    tail = httpx.post(url + "/recommend", json={"history": history[-20:], "n": 10, "exclude_seen": False}).json()
    assert tail["items"] == body["items"] and tail["warnings"] == []


@pytest.mark.parametrize("payload, field", [
    ({"history": "v1"}, "history"),
    ({"history": [1.5]}, "history.0"),
    ({"history": [None]}, "history.0"),
    ({"history": ["v1"], "n": 0}, "n: must be between 1 and"),
    ({"history": ["v1"], "n": 100_000}, "n: must be between 1 and"),
    ({"history": ["v1"], "n": "10"}, "n"),
    ({"history": ["v1"], "n": True}, "n"),
    ({"history": ["v1"], "merge": "best"}, "merge"),
    ({"history": ["v1"], "diversity_lambda": -0.5}, "diversity_lambda"),
    ({"history": ["v1"], "exclude_seen": "yes"}, "exclude_seen"),
    ({"history": ["v1"], "extra": 1}, "extra"),
    ({}, "history"),
])
def test_invalid_requests_get_clear_4xx(server, payload, field):
    url, _, _ = server
    r = httpx.post(url + "/recommend", json=payload)
    assert r.status_code == 422, r.text
    text = json.dumps(r.json())
    assert field in text, text


def test_malformed_json_is_a_4xx(server):
    url, _, _ = server
    r = httpx.post(url + "/recommend", content=b'{"history": [', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.text


def test_200_concurrent_requests_all_answered_correctly(server):
    url, _, retriever = server
    ids = retriever.item_ids
    payloads = [{"history": ids[1 + i % 200: 1 + i % 200 + 3 + i % 7], "n": 5 + i % 20,
                 "merge": ("score", "round_robin", "diversity")[i % 3], "diversity_lambda": 0.5 * (i % 2)}
                for i in range(200)]

    async def fire():
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
            return await asyncio.gather(*(client.post("/recommend", json=p) for p in payloads))

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * 200
    for p, r in zip(payloads[:40], responses[:40]):  # coalesced batches answer each request as if alone
        want = retriever.recommend([p["history"]], n=p["n"], merge=p["merge"],
                                   diversity_lambda=p["diversity_lambda"])[0]
        assert r.json()["items"] == want.items


def test_server_refuses_a_corrupt_artifact(server, tmp_path):
    _, artifact, _ = server
    bad = tmp_path / "bad"
    shutil.copytree(artifact, bad)
    (bad / "side_tables.npz").write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-m", "mirecall_jax.serving.server", "--artifact", str(bad),
                           "--port", str(_free_port())], env=subprocess_env(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "sha256 mismatch" in proc.stderr and "side_tables.npz" in proc.stderr
