"""HTTP recommendation service over a serving artifact (FastAPI + uvicorn).

    python -m mirecall_jax.serving.server --artifact DIR [--host 127.0.0.1] [--port 8000]

  POST /recommend  {"history": [external ids, oldest first], "n": 50, "merge": "mixture" | "score" |
                   "round_robin" | "diversity" (default: the model's eval.merge), "diversity_lambda": 0.0,
                   "exclude_seen": true}
                   -> {"items", "scores", "interests" (slot per item, -1 on fallback), "fallback",
                       "history_length", "unknown_items", "history_used", "truncated", "num_interests",
                       "warnings"}
  GET  /healthz    {"status": "ok", ...} once the artifact is loaded and the encoder compiled
  GET  /metadata   the artifact's manifest.json

Validation: wrong types, unknown fields, n outside [1, min(MAX_N, catalogue size)], negative or
non-finite diversity_lambda and histories over MAX_HISTORY ids are refused with 422 and a message
naming the field. A history with more than max_len known items keeps its last max_len (said in
`warnings`); unknown ids are counted and ignored; with no known item the popular items come back
with fallback = true.

The artifact is loaded once at startup. Requests are coalesced: while one batch is being computed
(in a single worker thread, so the ScaNN searcher and the encoder are never used concurrently),
arriving requests queue up and the next batch takes all of them (up to --max-batch), i.e. one
encoder call and one ScaNN call for many concurrent requests, with no added wait when idle.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at runtime, and
# string annotations would be resolved in whatever namespace runs the module (fails under runpy).
import argparse
import asyncio
import concurrent.futures
import contextlib
import sys
from typing import Literal, Optional, Union

from fastapi import FastAPI, HTTPException, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from mirecall_jax.serving.artifact import ArtifactError
from mirecall_jax.serving.retriever import Recommendation, Request, Retriever

MAX_N = 1000  # most items one request may ask for
MAX_HISTORY = 10_000  # most ids one history may hold


class RecommendBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    history: list[Union[StrictStr, StrictInt]] = Field(max_length=MAX_HISTORY,
                                                       description="external item ids, oldest first")
    n: StrictInt = 50
    merge: Optional[Literal["score", "mixture", "round_robin", "diversity"]] = None  # None: the artifact's eval.merge
    diversity_lambda: float = Field(0.0, ge=0, allow_inf_nan=False, strict=True)
    exclude_seen: StrictBool = True


class Batcher:
    """Coalesces concurrent requests into `Retriever.recommend_requests` calls on one worker thread."""

    def __init__(self, retriever: Retriever, max_batch: int = 64):
        self.retriever, self.max_batch = retriever, max_batch
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="recommend")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=True)

    async def submit(self, req: Request) -> Recommendation:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((req, fut))
        return await fut

    def _compute(self, reqs: list[Request]) -> list:
        try:
            return self.retriever.recommend_requests(reqs)
        except Exception:  # noqa: BLE001 - isolate the failing request; the others still get answers
            out = []
            for r in reqs:
                try:
                    out.append(self.retriever.recommend_requests([r])[0])
                except Exception as e:  # noqa: BLE001
                    out.append(e)
            return out

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            while len(items) < self.max_batch and not self.queue.empty():
                items.append(self.queue.get_nowait())
            results = await loop.run_in_executor(self.executor, self._compute, [r for r, _ in items])
            for (_, fut), res in zip(items, results):
                if fut.done():  # the client went away
                    continue
                if isinstance(res, Exception):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)


def _warnings(rec: Recommendation, max_len: int) -> list[str]:
    out = []
    if rec.unknown_items:
        out.append(f"{rec.unknown_items} of {rec.history_length} history ids are not in the catalogue and were ignored")
    if rec.truncated:
        out.append(f"history has {rec.history_used + rec.truncated} known items, more than max_len={max_len}: "
                   f"the last {max_len} were encoded (all are excluded when exclude_seen)")
    if rec.fallback:
        out.append("no known item in the history: most popular items returned (fallback)")
    return out


def create_app(artifact: str | None = None, *, retriever: Retriever | None = None, max_batch: int = 64,
               warmup: bool = True) -> FastAPI:
    """The FastAPI app; loads `artifact` (or uses `retriever`) once, at startup."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        r = retriever if retriever is not None else Retriever.load(artifact)
        if warmup:
            r.warmup(max_batch)
        app.state.retriever = r
        app.state.batcher = Batcher(r, max_batch)
        app.state.batcher.start()
        try:
            yield
        finally:
            await app.state.batcher.stop()

    app = FastAPI(title="mirecall_jax recommendations", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: HTTPRequest, exc: RequestValidationError):
        details = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            details.append(f"{loc}: {err.get('msg')}")
        return JSONResponse(status_code=422, content={"error": "invalid request", "details": details})

    @app.exception_handler(HTTPException)
    async def _http(_: HTTPRequest, exc: HTTPException):
        return JSONResponse(status_code=exc.status_code, content={"error": exc.detail})

    @app.get("/healthz")
    async def healthz():
        r: Retriever = app.state.retriever
        return {"status": "ok", "family": r.manifest["family"], "num_items": r.num_items,
                "checkpoint_step": r.manifest["checkpoint_step"]}

    @app.get("/metadata")
    async def metadata():
        return app.state.retriever.manifest

    @app.post("/recommend")
    async def recommend(body: RecommendBody):
        r: Retriever = app.state.retriever
        max_n = min(MAX_N, r.num_items)
        if not 1 <= body.n <= max_n:
            raise HTTPException(422, f"n: must be between 1 and {max_n}, got {body.n}")
        req = Request([str(x) for x in body.history], body.n, body.exclude_seen, body.merge,
                      float(body.diversity_lambda))
        rec = await app.state.batcher.submit(req)
        # A JSONResponse of plain str / float / int / bool lists: skips FastAPI's per-element encoder.
        return JSONResponse({"items": rec.items, "scores": rec.scores, "interests": rec.interests,
                             "fallback": rec.fallback, "history_length": rec.history_length,
                             "unknown_items": rec.unknown_items, "history_used": rec.history_used,
                             "truncated": rec.truncated, "num_interests": rec.num_interests,
                             "warnings": _warnings(rec, r.max_len)})

    return app


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Serve recommendations from a serving artifact over HTTP.")
    p.add_argument("--artifact", required=True, help="artifact directory written by serve_export.py")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=64, help="most requests computed together")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    import uvicorn

    try:
        retriever = Retriever.load(args.artifact)
    except ArtifactError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    app = create_app(retriever=retriever, max_batch=args.max_batch)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
