"""Training throughput of the RWR trainer against plain SFT on the same data, same run.

Variants, each trained from the same initial weights on the same batches:

* ``sft``: `transformers.Trainer` with the model's own causal-LM loss on the same
  masked labels (unweighted; the baseline);
* ``rwr``: `RWRTrainer` (weighted loss, logits only from the first target on);
* ``rwr-full-logits``: `RWRTrainer` computing logits at every position, which isolates
  the cost of the weighting itself from the ``logits_to_keep`` saving.

The data is one optimizer step's worth of examples (``--batch-size`` x ``--grad-accum``,
varied lengths), so every step trains on the same tokens. A step is timed from the end
of the previous one (data loading and the weighted denominator included); the first
``--warmup`` steps are not. Variants run in turn for ``--rounds`` rounds; throughput is
non-padding tokens per step over the fastest step and over the median step (on a shared
machine, as with ``timeit``, the fastest is the one least disturbed by neighbours).

    python benchmarks/rwr_throughput.py                      # tiny random Llama on CPU
    python benchmarks/rwr_throughput.py --model default      # SmolLM2-135M-Instruct
    python benchmarks/rwr_throughput.py --model PATH --batch-size 16 --max-seq-length 1024
    python benchmarks/rwr_throughput.py --model default --bf16   # bfloat16 on the CPU too
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers import logging as transformers_logging

from agents.rise.examples import RWRCollator, RWRDataset, WeightedExample
from agents.rise.rwr import RWRTrainer, rwr_weight

WORDS = "the a of to answer is so we add then total each step check value number equals".split()
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def main() -> None:
    args = parse_args()
    transformers_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load(args.model, args.bf16)
    dataset = RWRDataset(make_examples(args), tokenizer, args.max_seq_length)
    pad = tokenizer.pad_token_id
    collator = RWRCollator(pad if pad is not None else tokenizer.eos_token_id)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokens = sum(len(features["input_ids"]) for features in dataset.features)
    print(
        f"model={args.model or 'tiny'} device={device} threads={torch.get_num_threads()} "
        f"lora={not args.full} bf16={args.bf16} batch={args.batch_size}x{args.grad_accum} "
        f"steps={args.steps} (warmup {args.warmup}) rounds={args.rounds} "
        f"mean tokens/example={tokens / len(dataset):.0f}"
    )
    step_times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_index in range(args.rounds):
        names = list(VARIANTS) if round_index % 2 == 0 else list(reversed(VARIANTS))
        for name in names:
            step_times[name] += run(VARIANTS[name], model, dataset, collator, args)
    print(f"{'variant':<16} {'best tokens/s':>14} {'median tokens/s':>16}")
    for name, times in step_times.items():
        print(f"{name:<16} {tokens / min(times):14.0f} {tokens / statistics.median(times):16.0f}")
    for name in ("rwr", "rwr-full-logits"):
        best = min(step_times[name]) / min(step_times["sft"]) - 1
        median = statistics.median(step_times[name]) / statistics.median(step_times["sft"]) - 1
        print(
            f"{name} vs sft, time per token: {100 * best:+.1f}% best, {100 * median:+.1f}% median"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="model folder, hub id or 'default' (SmolLM2); default: a tiny random Llama"
    )
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--prompt-words", type=int, default=60, help="mean words per prompt")
    parser.add_argument("--response-words", type=int, default=30, help="mean words per response")
    parser.add_argument("--max-seq-length", type=int, default=2048, help="tokens per sequence")
    parser.add_argument("--batch-size", type=int, default=8, help="per-device batch size")
    parser.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each variant")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and weights")
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=torch.cuda.is_available(),
        help="bfloat16 weights and mixed precision (default: on a GPU only)",
    )
    args = parser.parse_args()
    if not 1 <= args.warmup < args.steps:
        parser.error(f"--warmup must be in [1, --steps), got {args.warmup}")
    return args


def load(model: str | None, bf16: bool) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """The model (bfloat16 or float32 weights) and its tokenizer."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    if model is None:
        tiny, tokenizer = tiny_model()
        return tiny.to(dtype), tokenizer
    if model == "default":
        from agents.llm.default_model import default_model_path

        model = str(default_model_path())
    return AutoModelForCausalLM.from_pretrained(model, dtype=dtype), AutoTokenizer.from_pretrained(
        model
    )


def tiny_model() -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    """A random 4-layer Llama (hidden 64) with a byte-level ChatML tokenizer."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=2048,
    )
    return LlamaForCausalLM(config), tokenizer


def make_examples(args: argparse.Namespace) -> list[WeightedExample]:
    """RISE-like states: a question, a wrong first attempt, a retry prompt; 0/1 rewards."""
    rng = random.Random(args.seed)

    def text(mean_words: int) -> str:
        return " ".join(rng.choices(WORDS, k=rng.randint(mean_words // 2, 3 * mean_words // 2)))

    examples = []
    for index in range(args.batch_size * args.grad_accum):
        conversation = [
            {"role": "user", "content": f"Problem {index}: {text(args.prompt_words // 2)}"},
            {"role": "assistant", "content": text(args.prompt_words // 2)},
            {"role": "user", "content": "There might be an error. Try again."},
        ]
        reward = float(rng.random() < 0.5)
        examples.append(
            WeightedExample(conversation, text(args.response_words), rwr_weight(reward))
        )
    return examples


def run(
    make_trainer: Callable[..., Trainer],
    base: torch.nn.Module,
    dataset: RWRDataset,
    collator: RWRCollator,
    args: argparse.Namespace,
) -> list[float]:
    """Train a copy of ``base`` for ``args.steps`` steps; return the timed steps' seconds."""
    model = copy.deepcopy(base)
    if not args.full:
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    step_ends: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, *_: object, **__: object) -> None:
            step_ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as folder:
        training_args = TrainingArguments(
            output_dir=str(Path(folder)),
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=args.grad_accum,
            max_steps=args.steps,
            learning_rate=1e-4,
            bf16=args.bf16,
            use_cpu=args.bf16 and not torch.cuda.is_available(),
            train_sampling_strategy="sequential",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            remove_unused_columns=False,
            dataloader_pin_memory=torch.cuda.is_available(),
        )
        trainer = make_trainer(
            model=model,
            args=training_args,
            train_dataset=dataset,
            data_collator=collator,
            callbacks=[StepTimer()],
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return [
        end - start for start, end in zip(step_ends[args.warmup - 1 :], step_ends[args.warmup :])
    ]


def sft_trainer(*, data_collator: RWRCollator, **kwargs: Any) -> Trainer:
    """transformers.Trainer with the model's own loss; the weights are dropped."""

    def unweighted(features: list) -> dict[str, torch.Tensor]:
        batch = data_collator(features)
        del batch["weights"]
        return batch

    return Trainer(data_collator=unweighted, **kwargs)


class FullLogitsRWRTrainer(RWRTrainer):
    """RWRTrainer with logits at every position (no logits_to_keep saving)."""

    def compute_loss(self, *args: Any, **kwargs: Any) -> Any:
        """`RWRTrainer.compute_loss` with ``logits_to_keep=0`` (all positions)."""
        with mock.patch("agents.rise.rwr._logits_to_keep", return_value=0):
            return super().compute_loss(*args, **kwargs)


VARIANTS: dict[str, Callable[..., Trainer]] = {
    "sft": sft_trainer,
    "rwr": RWRTrainer,
    "rwr-full-logits": FullLogitsRWRTrainer,
}


if __name__ == "__main__":
    main()
