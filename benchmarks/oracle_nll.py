"""The NLL of the oracle response under RISE and under single-turn SFT, over training.

The RISE paper argues (issue 13, "Understanding why") that training on multi-turn
rollouts makes the oracle response y* *easier* to produce: its negative log-likelihood
given the prompt, marginalised over the intermediate turns of a rollout, falls lower than
under single-turn SFT on the same oracle data. This script measures both quantities for
two LoRA adapters trained from the same base model:

* **SFT**: (prompt, y*) for every training problem, weight 1;
* **RISE**: (prompt, y*), (s_2^j, y*) for every intermediate-turn state s_2^j, and the
  on-policy first attempts y_1^j at the prompt weighted `rwr_weight(reward)` (1 if
  correct, exp(-1/0.4) if wrong), as one RISE iteration with an expert would collect.

Both train with `train_rwr` for the same number of optimizer steps (so SFT, having
fewer examples, makes more passes over them), keeping checkpoints. At step 0 (the base
model) and at every checkpoint, on held-out problems (the test split):

* single-turn NLL: ``-log p(y* | prompt) / |y*|``, per token of y*;
* marginal NLL: ``-(1/|y*|) log((1/M) sum_j p(y* | s_2^j))``, with
  ``s_2^j = [prompt, y_1^j, retry prompt]`` built by stepping the environment with
  ``y_1^j``, and y_1^j sampled (temperature 1) from that same checkpoint's model
  (``--turn1-from base``: from the base model at every step), with logsumexp;

each averaged over the held-out problems. Lower is better. Problems come from
RISE-Arithmetic-v0 (train split for training, test split for measuring; disjoint from
difficulty 2 on); y* is `ArithmeticExpert`'s worked answer (``--oracle reference``: the
reference solution). Token targets are masked exactly as in training (`tokenize_example`)
and scored with `sequence_nll`. The intermediate states for training are sampled from the
base model. Sampling uses the same seed at every step (common random numbers).

    python benchmarks/oracle_nll.py                     # the default run
    python benchmarks/oracle_nll.py --smoke             # a quick check of the pipeline
    python benchmarks/oracle_nll.py --problems 64 --steps 48 --samples 8 --dtype float32

Rerunning with the same ``--output`` reuses the trained adapters (`train_rwr` resumes or
returns a finished run of the same examples and settings; other settings need another
folder). The default run samples about 75k tokens and trains 2 x 24 steps of 8 examples:
16 minutes on two CPU cores shared with two other jobs. Its figures and their reading:
docs/reproduction.md (the oracle response's NLL); the tiny-model test
(tests/test_oracle_nll.py) checks the pipeline end to end.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers import logging as transformers_logging

import rise_gym  # noqa: F401  (registers the environments)
from agents.llm.base import LLM, SamplingParams
from agents.llm.default_model import resolve_model
from agents.llm.factory import make_llm
from agents.rise.examples import IGNORE_INDEX, RWRCollator, WeightedExample, tokenize_example
from agents.rise.experts import ArithmeticExpert
from agents.rise.rwr import rwr_weight, sequence_nll
from agents.rise.train import CHECKPOINTS, TrainingConfig, bf16_for_dtype, train_rwr
from rise_gym.envs.base import MultiTurnEnv
from rise_gym.spaces import Conversation

METHODS = ("sft", "rise")
COLUMNS = ("single", "marginal")


@dataclass
class Settings:
    """What one measurement trains and evaluates (the command-line options)."""

    model: str | None = None
    problems: int = 32
    eval_problems: int = 16
    samples: int = 4
    steps: int = 24
    save_steps: int = 8
    difficulty: int = 4
    oracle: str = "expert"
    turn1_from: str = "checkpoint"
    dtype: str = "bfloat16"
    learning_rate: float = 2e-4
    batch_size: int = 8
    max_new_tokens: int = 128
    seed: int = 0
    output: Path = field(default_factory=lambda: Path("runs/oracle_nll"))


@dataclass
class Rollout:
    """The M first attempts at one problem and the states they lead to."""

    prompt: Conversation
    oracle: str
    attempts: list[str]
    rewards: list[float]
    states: list[Conversation]


def main() -> None:
    """Run the measurement with the command-line settings and print the table."""
    settings = parse_args()
    transformers_logging.set_verbosity_error()
    start = time.perf_counter()
    results = measure(settings)
    results["seconds"] = round(time.perf_counter() - start, 1)
    print(format_table(results))
    path = settings.output / "oracle_nll.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"{results['seconds']:.0f} s; results in {path}")


def parse_args() -> Settings:
    """The settings from the command line."""
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or hub id (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--problems", type=int, default=defaults.problems, help="training problems")
    parser.add_argument(
        "--eval-problems", type=int, default=defaults.eval_problems, help="held-out problems"
    )
    parser.add_argument(
        "--samples", type=int, default=defaults.samples, help="first attempts M per problem"
    )
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps")
    parser.add_argument(
        "--save-steps", type=int, default=defaults.save_steps, help="steps between measurements"
    )
    parser.add_argument("--difficulty", type=int, default=defaults.difficulty, help="1..7")
    parser.add_argument(
        "--oracle",
        choices=("expert", "reference"),
        default=defaults.oracle,
        help="y*: ArithmeticExpert's answer or the problem's reference solution",
    )
    parser.add_argument(
        "--turn1-from",
        choices=("checkpoint", "base"),
        default=defaults.turn1_from,
        help="the model that samples y_1 for the marginal NLL",
    )
    parser.add_argument(
        "--dtype", choices=("bfloat16", "float32"), default=defaults.dtype, help="weights"
    )
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="examples per step"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=defaults.max_new_tokens, help="tokens of y_1"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="sampling and training")
    parser.add_argument(
        "--output", type=Path, default=defaults.output, help="adapters and oracle_nll.json"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes (8/4 problems, M=2, 4 steps)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.problems, args.eval_problems, args.samples = 8, 4, 2
        args.steps, args.save_steps, args.max_new_tokens = 4, 2, 64
    return Settings(**{name: value for name, value in vars(args).items() if name != "smoke"})


def measure(settings: Settings) -> dict[str, Any]:
    """Train the SFT and RISE adapters and measure both NLLs at every checkpoint.

    Returns:
        ``steps`` (0 and every checkpoint), and for each method in `METHODS` the
        ``single`` and ``marginal`` NLL per step (nats per token of y*) and the
        ``turn1_accuracy`` of the sampled first attempts; plus the settings and the
        accuracy of the training rollout.
    """
    if settings.steps % settings.save_steps:
        raise ValueError("--steps must be a multiple of --save-steps")
    model = resolve_model(settings.model)
    settings.output.mkdir(parents=True, exist_ok=True)
    llm = make_llm(model, dtype=settings.dtype)
    tokenizer = AutoTokenizer.from_pretrained(model)
    train = rollouts(llm, settings, "train", settings.problems, adapter=None)
    held_out = rollouts(llm, settings, "test", settings.eval_problems, adapter=None)
    _progress(f"sampled first attempts, base model: {accuracy(train):.2f} correct (train)")
    adapters = {
        method: train_rwr(
            model,
            training_examples(method, train),
            training_config(settings),
            settings.output / method,
            tokenizer=tokenizer,
        )
        for method in METHODS
    }
    _progress("trained the SFT and RISE adapters")
    steps = list(range(0, settings.steps + 1, settings.save_steps))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scorer = AutoModelForCausalLM.from_pretrained(model, dtype=_torch_dtype(settings.dtype))
    scorer.to(device)
    scorer.eval()
    base = evaluate(scorer, tokenizer, held_out)
    results: dict[str, Any] = {
        "settings": {**asdict(settings), "model": model, "output": str(settings.output)},
        "steps": steps,
        "train_turn1_accuracy": accuracy(train),
    }
    for method, folder in adapters.items():
        figures = {name: [value] for name, value in base.items()}
        for step in steps[1:]:
            checkpoint = str(folder / CHECKPOINTS / f"checkpoint-{step}")
            if settings.turn1_from == "checkpoint":
                states = rollouts(llm, settings, "test", settings.eval_problems, adapter=checkpoint)
            else:
                states = held_out
            with adapted(scorer, checkpoint) as adapted_scorer:
                for name, value in evaluate(adapted_scorer, tokenizer, states).items():
                    figures[name].append(value)
            _progress(f"measured {method} step {step}")
        results[method] = figures
    llm.close()
    return results


def rollouts(
    llm: LLM, settings: Settings, split: str, count: int, adapter: str | None
) -> list[Rollout]:
    """Sample M first attempts at each of ``count`` problems and step the env with each."""
    env = gym.make(
        "RISE-Arithmetic-v0",
        difficulty=settings.difficulty,
        split=split,
        max_turns=2,
        stop_on_correct=False,
    ).unwrapped
    assert isinstance(env, MultiTurnEnv)
    prompts, oracles = [], []
    for index in range(count):
        prompt, _ = env.reset(options={"index": index})
        prompts.append(prompt)
        if settings.oracle == "reference":
            oracles.append(env.problem.solution)
        else:
            oracles.append(ArithmeticExpert().generate([prompt], SamplingParams())[0].texts[0])
    params = SamplingParams(
        max_new_tokens=settings.max_new_tokens,
        temperature=1.0,
        n=settings.samples,
        seed=settings.seed,
    )
    generations = llm.generate(prompts, params, adapter=adapter)
    results = []
    for index, (prompt, oracle, generation) in enumerate(
        zip(prompts, oracles, generations, strict=True)
    ):
        rewards, states = [], []
        for attempt in generation.texts:
            env.reset(options={"index": index})
            state, reward, *_ = env.step(attempt)
            rewards.append(float(reward))
            states.append(state)
        results.append(Rollout(prompt, oracle, generation.texts, rewards, states))
    return results


def training_examples(method: str, rollouts: Sequence[Rollout]) -> list[WeightedExample]:
    """SFT: (prompt, y*); RISE: also (s_2^j, y*) and the weighted first attempts."""
    examples = [WeightedExample(rollout.prompt, rollout.oracle, 1.0) for rollout in rollouts]
    if method == "sft":
        return examples
    for rollout in rollouts:
        examples += [WeightedExample(state, rollout.oracle, 1.0) for state in rollout.states]
        examples += [
            WeightedExample(rollout.prompt, attempt, rwr_weight(reward))
            for attempt, reward in zip(rollout.attempts, rollout.rewards, strict=True)
        ]
    return examples


def training_config(settings: Settings) -> TrainingConfig:
    """LoRA with the settings' steps, checkpoints kept every ``save_steps``."""
    return TrainingConfig(
        learning_rate=settings.learning_rate,
        max_steps=settings.steps,
        per_device_batch_size=settings.batch_size,
        save_steps=settings.save_steps,
        keep_checkpoints=True,
        logging_steps=settings.save_steps,
        bf16=bf16_for_dtype(settings.dtype),
        seed=settings.seed,
    )


def evaluate(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rollouts: Sequence[Rollout]
) -> dict[str, float]:
    """Mean single-turn and marginal NLL per token of y*, and the first attempts' accuracy."""
    single = oracle_nll(model, tokenizer, [(r.prompt, r.oracle) for r in rollouts])
    pairs = [(state, r.oracle) for r in rollouts for state in r.states]
    per_state = oracle_nll(model, tokenizer, pairs)
    marginal = []
    for index, rollout in enumerate(rollouts):
        m = len(rollout.states)
        scored = per_state[index * m : (index + 1) * m]
        log_likelihoods = torch.tensor([-total for total, _ in scored], dtype=torch.float64)
        log_mean = torch.logsumexp(log_likelihoods, dim=0) - math.log(m)
        marginal.append(-float(log_mean) / scored[0][1])  # y* has the same tokens in every state
    return {
        "single": sum(total / length for total, length in single) / len(single),
        "marginal": sum(marginal) / len(marginal),
        "turn1_accuracy": accuracy(rollouts),
    }


@torch.inference_mode()
def oracle_nll(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[Conversation, str]],
    batch_size: int = 16,
) -> list[tuple[float, int]]:
    """The total NLL (nats) of each response given its conversation, and its token count.

    The response's tokens are the training targets of `tokenize_example` (up to and
    including EOS); batches are right-padded by `RWRCollator`.
    """
    features = []
    for conversation, response in pairs:
        prompt, target = tokenize_example(WeightedExample(conversation, response, 1.0), tokenizer)
        features.append(
            {
                "input_ids": prompt + target,
                "labels": [IGNORE_INDEX] * len(prompt) + target,
                "weight": 1.0,
            }
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collate = RWRCollator(pad)
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(features)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = {k: v.to(model.device) for k, v in collate([features[i] for i in rows]).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        mean = sequence_nll(logits, batch["labels"])
        counts = batch["labels"][:, 1:].ne(IGNORE_INDEX).sum(dim=1)
        for row, value, count in zip(rows, mean.tolist(), counts.tolist(), strict=True):
            results[row] = (value * count, count)
    return results


@contextmanager
def adapted(model: torch.nn.Module, adapter: str) -> Iterator[torch.nn.Module]:
    """``model`` with a PEFT adapter loaded, removed again on exit."""
    peft_model = PeftModel.from_pretrained(model, adapter)
    peft_model.eval()
    try:
        yield peft_model
    finally:
        peft_model.unload()


def accuracy(rollouts: Sequence[Rollout]) -> float:
    """The fraction of first attempts that are correct."""
    rewards = [reward for rollout in rollouts for reward in rollout.rewards]
    return sum(rewards) / len(rewards)


def format_table(results: dict[str, Any]) -> str:
    """The figures per step, then the final ones, as text."""
    header = f"{'step':>5}" + "".join(
        f" {method.upper() + ' ' + column:>15}" for method in METHODS for column in COLUMNS
    )
    header += "".join(f" {method.upper() + ' acc@t1':>12}" for method in METHODS)
    lines = [
        "NLL of y* (nats per token; marginal over M first attempts), held-out problems",
        header,
    ]
    for index, step in enumerate(results["steps"]):
        line = f"{step:>5}" + "".join(
            f" {results[method][column][index]:15.3f}" for method in METHODS for column in COLUMNS
        )
        line += "".join(f" {results[method]['turn1_accuracy'][index]:12.2f}" for method in METHODS)
        lines.append(line)
    sft, rise = results["sft"], results["rise"]
    lines.append(
        f"final: marginal NLL RISE {rise['marginal'][-1]:.3f} vs SFT {sft['marginal'][-1]:.3f}; "
        f"single-turn RISE {rise['single'][-1]:.3f} vs SFT {sft['single'][-1]:.3f}"
    )
    return "\n".join(lines)


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _torch_dtype(dtype: str) -> torch.dtype:
    return torch.bfloat16 if dtype == "bfloat16" else torch.float32


if __name__ == "__main__":
    main()
