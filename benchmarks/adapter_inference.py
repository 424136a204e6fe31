"""Generation with a LoRA adapter, merged into the weights vs computed on the side.

Rolls out ``--episodes`` greedy `SequentialRetry` episodes of RISE-Arithmetic-v0 with the
default model three times on the transformers back end: without an adapter (the
reference speed), with the adapter merged into the base weights while it is active (the
default for float32 weights), and with the adapter's LoRA products computed beside every
projection (``merge_adapters=False``). Prints generated tokens/s, the speed-up of
merging and whether the responses are identical.

Without ``--adapter`` the adapter is a fresh LoRA with the RWR trainer's defaults
(rank 16 on every projection, zero-initialised B): it leaves the answers unchanged, so all
three runs must answer alike, and it costs what a trained adapter of that shape costs.

    python benchmarks/adapter_inference.py
    python benchmarks/adapter_inference.py --adapter runs/reproduce_cpu/boost/model
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from peft import get_peft_model
from transformers import AutoModelForCausalLM

from agents import SequentialRetry, rollout
from agents.llm import TransformersLLM
from agents.llm.base import SamplingParams
from agents.llm.default_model import resolve_model
from agents.rise.train import TrainingConfig, lora_config

ENV = "RISE-Arithmetic-v0"


def save_fresh_adapter(folder: Path) -> str:
    """Save an untrained LoRA adapter with the trainer's default shape for the default model."""
    model = AutoModelForCausalLM.from_pretrained(resolve_model(None))
    get_peft_model(model, lora_config(TrainingConfig())).save_pretrained(str(folder))
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", help="A PEFT adapter folder (default: a fresh LoRA).")
    parser.add_argument("--episodes", type=int, default=64, help="Episodes per run.")
    parser.add_argument("--turns", type=int, default=2, help="Turns per episode.")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="Tokens per response.")
    parser.add_argument("--difficulty", type=int, default=4, help="RISE-Arithmetic level.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        adapter = args.adapter or save_fresh_adapter(Path(scratch) / "adapter")
        params = SamplingParams(max_new_tokens=args.max_new_tokens)
        runs = [("no adapter", None, True), ("merged", adapter, True), ("unmerged", adapter, False)]
        results = {}
        for name, run_adapter, merge in runs:
            llm = TransformersLLM(merge_adapters=merge)
            agent = SequentialRetry(llm, params, adapter=run_adapter)
            started = time.perf_counter()
            records = rollout(
                ENV,
                agent,
                num_episodes=args.episodes,
                env_kwargs={"difficulty": args.difficulty, "max_turns": args.turns},
                progress=False,
            )
            wall = time.perf_counter() - started
            tokens = sum(turn.generated_tokens for record in records for turn in record.turns)
            results[name] = (wall, [[t.response for t in r.turns] for r in records])
            print(f"{name:10s} {tokens / wall:7.1f} tokens/s  {wall:7.1f} s wall  {tokens} tokens")
    merged, unmerged = results["merged"], results["unmerged"]
    print(
        f"speed-up merged / unmerged: {unmerged[0] / merged[0]:.2f}x; "
        f"identical responses: {merged[1] == unmerged[1]}"
    )
    if not args.adapter:
        print(f"fresh adapter answers like no adapter: {merged[1] == results['no adapter'][1]}")


if __name__ == "__main__":
    main()
