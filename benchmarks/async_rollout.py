"""Asynchronous vs lock-step rollout engine on the same server(s), same episodes.

Plays ``--episodes`` episodes x ``--turns`` turns of RISE-Arithmetic-v0 with a greedy
agent twice on the same OpenAI-compatible server(s): with the lock-step engine (every
turn one batched ``act`` call; the next turn starts when the slowest answer is back)
and with the asynchronous engine (each episode sends its next turn as soon as its
answer is back). Both engines may keep the same number of requests in flight
(``--max-in-flight``) and route every episode to one server (`ServerPool`). Prints
episodes/s of both, their ratio, and whether every turn's response is the same.

By default it starts ``--servers`` llama.cpp servers (llama-cpp-python) of the default
model on loopback and stops them at the end; ``--base-url`` (repeatable) uses running
servers instead (``vllm serve``, SGLang, llama.cpp).

    python benchmarks/async_rollout.py                          # 2 llama.cpp servers
    python benchmarks/async_rollout.py --servers 1 --episodes 32
    python benchmarks/async_rollout.py --base-url http://gpu1:8000/v1 \
        --base-url http://gpu2:8000/v1 --episodes 256 --max-new-tokens 256
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from agents import SelfRefine, SequentialRetry, rollout
from agents.llm.base import SamplingParams
from agents.llm.openai_backend import OpenAICompatibleLLM
from agents.llm.servers import ServerPool
from rise_gym.records import EpisodeRecord

ENV = "RISE-Arithmetic-v0"


@contextmanager
def llama_cpp_server(log: Path, threads: int) -> Iterator[str]:
    """Start a llama.cpp server of the default model on a free loopback port."""
    from agents.llm.default_model import smollm2_gguf_path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path())]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    with log.open("w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                raise SystemExit(f"llama.cpp server exited:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"llama.cpp server not ready:\n{log.read_text()}") from None
                time.sleep(0.2)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=16, help="Episodes per run.")
    parser.add_argument("--turns", type=int, default=3, help="Turns per episode.")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="Tokens per response.")
    parser.add_argument("--difficulty", type=int, default=3, help="RISE-Arithmetic level.")
    parser.add_argument("--agent", choices=("sequential", "self-refine"), default="sequential")
    parser.add_argument(
        "--max-in-flight", type=int, default=16, help="Requests in flight, both engines."
    )
    parser.add_argument(
        "--servers", type=int, default=2, help="llama.cpp servers to start (no --base-url)."
    )
    parser.add_argument("--threads", type=int, default=1, help="Threads per llama.cpp server.")
    parser.add_argument(
        "--base-url", action="append", default=[], help="A running server's API root (repeat)."
    )
    parser.add_argument("--model", help="Model name to request (default: the server's).")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on kill

    with ExitStack() as stack:
        urls = list(args.base_url)
        if not urls:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            urls = [
                stack.enter_context(llama_cpp_server(folder / f"{i}.log", args.threads))
                for i in range(args.servers)
            ]
        servers = [
            OpenAICompatibleLLM(args.model, base_url=url, max_concurrency=args.max_in_flight)
            for url in urls
        ]
        params = SamplingParams(max_new_tokens=args.max_new_tokens)
        kinds = {"sequential": SequentialRetry, "self-refine": SelfRefine}
        for server in servers:  # warm up: load weights into memory, fill caches
            server.generate([[{"role": "user", "content": "Hi"}]], params)
        results: dict[str, tuple[float, list[EpisodeRecord]]] = {}
        rates = {}
        print(
            f"{args.episodes} episodes x {args.turns} turns, {args.agent}, greedy, "
            f"{args.max_new_tokens} new tokens, {len(urls)} server(s), "
            f"{args.max_in_flight} requests in flight",
            flush=True,
        )
        for engine in ("batched", "async"):
            agent = kinds[args.agent](ServerPool(servers), params)
            started = time.perf_counter()
            records = rollout(
                ENV,
                agent,
                num_episodes=args.episodes,
                env_kwargs={"max_turns": args.turns, "difficulty": args.difficulty},
                batch_size=args.max_in_flight if engine == "async" else None,
                engine=engine,
                progress=False,
            )
            seconds = time.perf_counter() - started
            results[engine] = (seconds, records)
            tokens = sum(t.generated_tokens for r in records for t in r.turns)
            rates[engine] = args.episodes / seconds
            print(
                f"{engine:>8}: {seconds:7.1f} s  {rates[engine]:6.3f} episodes/s  "
                f"{tokens / seconds:7.1f} generated tokens/s",
                flush=True,
            )

    print(f"async / lock-step: {rates['async'] / rates['batched']:.2f}x")
    pairs = [
        (a.response, b.response)
        for x, y in zip(results["batched"][1], results["async"][1], strict=True)
        for a, b in zip(x.turns, y.turns, strict=True)
    ]
    same = sum(a == b for a, b in pairs)
    print(f"same responses: {same}/{len(pairs)} turns")


if __name__ == "__main__":
    main()
