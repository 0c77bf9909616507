"""Throughput of the shared model client (medvl.llm) against a local OpenAI-compatible server with a fixed reply
delay, and the cache-hit rate of a second run.

With concurrency C and a reply delay of L seconds the ideal is C / L requests per second; the script prints the
measured rate and the ratio to that ideal (target >= 0.9 at C = 64), then runs the same requests again from the
on-disk cache (target: 100% hits, no request reaches the server). The server (aiohttp.web) runs in its own process
so it does not share the client's CPU time slice; each request carries a real image (the fundus photograph shipped
with scikit-image) as a data URL, as generation does.

Run: ``python benchmarks/bench_llm_client.py [--concurrency 64] [--delay 0.5] [--requests 1280]``."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing as mp
import socket
import tempfile
import time
from pathlib import Path


def serve(port: int, delay: float, counter) -> None:
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        with counter.get_lock():
            counter.value += 1
        await asyncio.sleep(delay)
        text = json.dumps({"caption": f"reply to {len(json.dumps(body['messages']))} bytes"})
        return web.json_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                                  "usage": {"prompt_tokens": 300, "completion_tokens": 20}})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, print=None, backlog=1024)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_png() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.retina()).resize((336, 336)).save(buf, format="PNG")
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--delay", type=float, default=0.5)
    ap.add_argument("--requests", type=int, default=1280)
    args = ap.parse_args()

    from pydantic import BaseModel

    from medvl.llm import ChatRequest, LLMClient, LLMConfig, user_message

    class Caption(BaseModel):
        caption: str

    ctx = mp.get_context("spawn")
    port, counter = free_port(), ctx.Value("i", 0)
    server = ctx.Process(target=serve, args=(port, args.delay, counter), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}/v1"
    png = image_png()
    reqs = [ChatRequest(messages=[user_message(f"Describe image {i}.", images=[png])], schema=Caption)
            for i in range(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = LLMConfig(model="bench", base_url=url, concurrency=args.concurrency, max_retries=20, backoff=0.05,
                        max_backoff=0.5)
        LLMClient(cfg.model_copy(update={"concurrency": 4})).run(reqs[:8])  # wait for the server, warm up
        counter.value = 0
        client = LLMClient(cfg, cache_dir=Path(tmp) / "cache")
        t = time.perf_counter()
        out = client.run(reqs)
        elapsed = time.perf_counter() - t
        assert all(not isinstance(r, Exception) for r in out), [r for r in out if isinstance(r, Exception)][:3]
        sent = counter.value
        again = LLMClient(cfg, cache_dir=Path(tmp) / "cache")
        t = time.perf_counter()
        out2 = again.run(reqs)
        elapsed2 = time.perf_counter() - t
        hits = again.summary()["cached"]
    server.terminate()
    ideal = args.concurrency / args.delay
    rate = args.requests / elapsed
    print(f"requests {args.requests}, concurrency {args.concurrency}, reply delay {args.delay} s, "
          f"image {len(png) // 1024} KiB per request")
    print(f"first run: {elapsed:.2f} s, {rate:.1f} req/s; ideal C/L = {ideal:.1f} req/s; ratio {rate / ideal:.3f} "
          f"(target >= 0.9); server saw {sent} requests")
    print(f"second run (cache): {elapsed2:.2f} s, cache hits {hits}/{args.requests} = {hits / args.requests:.1%} "
          f"(target 100%); replies identical: {[r.text for r in out] == [r.text for r in out2]}; "
          f"server saw {counter.value - sent} more")


if __name__ == "__main__":
    main()
