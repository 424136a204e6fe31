r"""Online multi-turn GRPO on RISE-Arithmetic-v0 level 4, measured as the CPU reproduction is.

Trains `agents.online_rl.MultiTurnGRPO` (LoRA) from a start model: the default model
(SmolLM2-135M-Instruct), or that model with ``--start-adapter`` merged in once (e.g. the
CPU reproduction's boost adapter, so GRPO starts where RISE's iterations start), saved
as a full model under ``<output-dir>/start-model``. It then evaluates the start model and
the trained adapter with the reproduction's held-out protocol
(`agents.rise.reproduce.HeldOutProtocol`: test split, history window 2, greedy sequential
retry over 5 turns, 5 parallel samples at temperature 0.7) and prints m1@t1, m1@t5,
p1@t5, m5@t1 and p5@t1 (percentages, 95% intervals), the right->wrong and wrong->right
transitions, and the tokens the training episodes generated, to compare with RISE at
equal generated tokens. The defaults are the reproduction's cpu preset (300 held-out
problems, 48 new tokens, bfloat16) and a training run of about one RISE iteration's
generated tokens (160 problems, 4 per step x 4 episodes, 40 steps).

    python benchmarks/online_rl.py --start-adapter runs/reproduce_cpu/boost/model
    python benchmarks/online_rl.py --steps 1 --train-problems 4 --eval-problems 4 \
        --num-generations 2 --problems-per-step 1 --max-new-tokens 16   # a smoke run

Every step writes under ``--output-dir`` (the start model, the run folder ``online-rl/``,
the evaluations ``eval/*.jsonl``, ``results.md`` and ``results.json`` after every row),
and a re-run reuses what is finished.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agents.llm.base import LLM
from agents.llm.default_model import resolve_model
from agents.llm.factory import DTYPES, make_llm
from agents.online_rl import MultiTurnGRPO, OnlineRLConfig
from agents.rise.reproduce import HeldOutProtocol
from agents.rise.train import bf16_for_dtype
from agents.sequential import SequentialRetry
from rise_gym.metrics import Estimate

ENV_ID = "RISE-Arithmetic-v0"
EVAL_TURNS = 5
METRICS = ("m1@t1", f"m1@t{EVAL_TURNS}", f"p1@t{EVAL_TURNS}", "m5@t1", "p5@t1")
TRANSITIONS = ("right_to_wrong", "wrong_to_right")
COLUMNS = (*METRICS, "right→wrong", "wrong→right", "training tokens")


def main() -> None:
    """Merge the start model, evaluate it, train, evaluate the adapter; print the table."""
    args = _parser().parse_args()
    output = Path(args.output_dir)
    env_kwargs = {"difficulty": args.difficulty}
    start_model = resolve_model(args.model)
    if args.start_adapter:
        start_model = merged_model(start_model, Path(args.start_adapter), output / "start-model")
    protocol = HeldOutProtocol(
        env_id=ENV_ID,
        env_kwargs=env_kwargs,
        num_problems=args.eval_problems,
        max_turns=EVAL_TURNS,
        history_window=2,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        progress=False,
    )
    results = Results(output, vars(args) | {"start_model": start_model})
    llm = make_llm(start_model, dtype=args.dtype, max_batch_size=args.batch_size)
    try:
        results.add("start", score(protocol, llm, None, output / "eval" / "start"), 0)
        config = OnlineRLConfig(
            max_turns=args.max_turns,
            num_generations=args.num_generations,
            problems_per_step=args.problems_per_step,
            train_problems=args.train_problems,
            max_steps=args.steps,
            max_new_tokens=args.max_new_tokens,
            credit=args.credit,
            improvement_bonus=args.improvement_bonus,
            bf16=bf16_for_dtype(args.dtype),
            seed=args.seed,
            output_dir=output / "online-rl",
        )
        agent = MultiTurnGRPO(start_model, config).learn(ENV_ID, env_kwargs)
        folder = output / "eval" / f"online-rl-{args.steps}-steps"
        results.add(
            "online-RL", score(protocol, llm, agent.adapter, folder), agent.generated_tokens
        )
    finally:
        llm.close()
    print(results.to_markdown())


def merged_model(base: str, adapter: Path, folder: Path) -> str:
    """``adapter`` merged into ``base`` and saved as a full model in ``folder``, once.

    A finished folder (one with ``config.json``) is reused; the merge writes to a sibling
    folder first, so an interrupted merge leaves nothing that looks finished.
    """
    if (folder / "config.json").exists():
        return str(folder)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (adapter / "adapter_config.json").exists():
        raise SystemExit(f"--start-adapter {adapter} is not a PEFT adapter folder")
    model = AutoModelForCausalLM.from_pretrained(base)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    merged.save_pretrained(partial)
    AutoTokenizer.from_pretrained(base).save_pretrained(partial)
    partial.rename(folder)
    return str(folder)


def score(
    protocol: HeldOutProtocol, llm: LLM, adapter: str | None, folder: Path
) -> tuple[dict[str, Estimate], dict[str, int]]:
    """The held-out metrics (sequential and parallel) and transitions of ``llm`` + adapter."""
    agent = SequentialRetry(llm, protocol.greedy, adapter=adapter)
    sequential, transitions = protocol.sequential(agent, folder / "sequential.jsonl")
    parallel = protocol.parallel(llm, folder / "parallel.jsonl", adapter=adapter)
    return {**sequential, **parallel}, transitions


class Results:
    """The rows so far, written to ``results.md`` and ``results.json`` after every row."""

    def __init__(self, folder: Path, settings: dict[str, Any]):
        """Write into ``folder``; ``settings`` go into the JSON file."""
        self.folder = folder
        self.settings = settings
        self.rows: dict[str, dict[str, Any]] = {}

    def add(
        self, name: str, figures: tuple[dict[str, Estimate], dict[str, int]], tokens: int
    ) -> None:
        """Add a row (metrics and transitions, generated training tokens) and write all."""
        metrics, transitions = figures
        self.rows[name] = {
            "metrics": {column: asdict(metrics[column]) for column in METRICS},
            "transitions": transitions,
            "generated_tokens": tokens,
            "cells": [str(metrics[column]) for column in METRICS]
            + [f"{transitions[key]}/{transitions['transitions']}" for key in TRANSITIONS]
            + [str(tokens)],
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "results.md").write_text(self.to_markdown() + "\n")
        data = {"rows": self.rows, "settings": self.settings}
        (self.folder / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")

    def to_markdown(self) -> str:
        """The table, then the setting."""
        lines = ["| model | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
        lines += [
            f"| {name} | " + " | ".join(row["cells"]) + " |" for name, row in self.rows.items()
        ]
        s = self.settings
        lines.append(
            f"\n{ENV_ID} difficulty {s['difficulty']}, {s['eval_problems']} held-out problems, "
            f"start model {s['start_model']}; training: {s['steps']} steps of "
            f"{s['problems_per_step']} problems x {s['num_generations']} episodes of "
            f"{s['max_turns']} turns (credit={s['credit']}, {s['train_problems']} problems)"
        )
        return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", default=None, help="Base model (default: SmolLM2-135M).")
    parser.add_argument(
        "--start-adapter",
        default=None,
        help="A PEFT LoRA adapter of --model merged into it: the model trained and the start "
        "row (e.g. runs/reproduce_cpu/boost/model).",
    )
    parser.add_argument("--difficulty", type=int, default=4, help="RISE-Arithmetic level.")
    parser.add_argument("--steps", type=int, default=40, help="Optimizer steps.")
    parser.add_argument("--max-turns", type=int, default=3, help="Turns per training episode.")
    parser.add_argument("--num-generations", type=int, default=4, help="Episodes per problem.")
    parser.add_argument("--problems-per-step", type=int, default=4, help="Problems per step.")
    parser.add_argument("--train-problems", type=int, default=160, help="Training problems.")
    parser.add_argument("--eval-problems", type=int, default=300, help="Held-out problems.")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="Tokens per response.")
    parser.add_argument("--dtype", default="bfloat16", choices=DTYPES, help="Weights' dtype.")
    parser.add_argument("--batch-size", type=int, default=64, help="Conversations per call.")
    parser.add_argument("--credit", default="final", help="'final' or 'discounted'.")
    parser.add_argument("--improvement-bonus", type=float, default=0.0, help="See OnlineRLConfig.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of training and evaluation.")
    parser.add_argument("--output-dir", default="runs/online_rl_benchmark", help="Run folder.")
    return parser


if __name__ == "__main__":
    main()
