"""RISE's headline comparison for one model on one environment, resumable.

`run_reproduction` evaluates the untrained model three ways at equal compute (sequential
retry over k turns, parallel sampling of k answers, self-refine within k calls), trains
it with RISE (`RISEAgent.learn`: boost, then iterations of self-distillation or of
distillation from an expert), evaluates the trained model sequentially and in parallel,
and writes the table with the gaps m1@tk - m1@t1 (does the model improve over turns?)
and m1@tk - mk@t1 (do turns beat parallel samples?), and the right-to-wrong and
wrong-to-right transitions between consecutive turns. ``benchmarks/reproduce.py`` is
its command line, with a CPU and a GPU preset.

Every step writes under ``settings.output`` and a re-run resumes from it. Runs of several
RISE configurations (``--improvement self`` and ``--improvement expert``, say) into the
same folder share the untrained evaluations and the boost phase::

    eval/base-sequential.jsonl, base-parallel.jsonl, base-self-refine.jsonl
    boost/                                 the boost phase (adapter, held-out episodes)
    rise-RUN/iteration-N/                  RISEAgent.learn's iterations, RUN = run_name
    eval/rise-RUN-iteration-N-parallel.jsonl   parallel sampling with the last iteration
    results-RUN.md, results-RUN.json       the table, the gaps and the settings
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from agents import ParallelSampling, SelfRefine, SequentialRetry
from agents.base import Agent
from agents.evaluate import evaluate
from agents.llm.base import LLM, SamplingParams
from agents.llm.default_model import DEFAULT_MODEL, resolve_model
from agents.llm.factory import DTYPES, make_llm
from agents.rise.agent import RISEAgent
from agents.rise.config import DATA_SHAPES, RELABEL_CONTEXTS, RISEConfig
from agents.rise.experts import make_expert
from agents.rise.relabel import DATA_FILTERS
from agents.rise.train import TrainingConfig, bf16_for_dtype
from rise_gym.envs.retry_prompts import OOD_RETRY_PROMPTS
from rise_gym.errors import RiseGymError
from rise_gym.metrics import Estimate, majority_at_turns, turn_transitions

BACKENDS = ("transformers", "vllm")
"""The back ends a reproduction can train with (both serve the trained adapters)."""

PARALLEL_TEMPERATURE = 0.7
"""Sampling temperature of parallel sampling (every other call is greedy)."""


@dataclass(frozen=True)
class HeldOutProtocol:
    """The reproduction's held-out evaluation of a model, at equal compute.

    Sequentially: greedy answers over ``max_turns`` turns without an oracle stop, with
    m1@t1..m1@tk (the majority vote after every turn), p1@t1..p1@tk and the turn
    transitions. In parallel: k = ``max_turns`` answers sampled at `PARALLEL_TEMPERATURE`
    with ``seed``, with mk@t1 and pk@t1. Both on the test split, with ``history_window``
    earlier attempts in each prompt, and resumable from their JSONL records.

    Attributes:
        env_id: The environment id.
        env_kwargs: Extra ``gym.make`` arguments (not split or history_window).
        num_problems: Held-out problems, the first of the test split.
        max_turns: Turns k of the sequential evaluation, samples of the parallel one.
        history_window: Earlier attempts kept in each prompt (None: all).
        max_new_tokens: Tokens generated per response.
        seed: Seed of the episodes and of the parallel samples.
        progress: Show progress bars.
    """

    env_id: str
    env_kwargs: dict[str, Any]
    num_problems: int
    max_turns: int = 5
    history_window: int | None = 2
    max_new_tokens: int = 256
    seed: int = 0
    progress: bool = True

    @property
    def greedy(self) -> SamplingParams:
        """The sampling parameters of the sequential evaluation (greedy)."""
        return SamplingParams(max_new_tokens=self.max_new_tokens)

    def sequential(
        self,
        agent: Agent,
        output: Path,
        *,
        turns: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Estimate], dict[str, int]]:
        """Evaluate ``agent`` over ``turns`` (default ``max_turns``) turns.

        Args:
            agent: The agent, e.g. ``SequentialRetry(llm, protocol.greedy)``.
            output: The JSONL file of its episodes (reused by a re-run).
            turns: Turns per episode (default: ``max_turns``).
            env_kwargs: Environment arguments added to ``self.env_kwargs`` for this call.

        Returns:
            The metrics (with m1@t2..m1@t(k-1) from the records) and `turn_transitions`.
        """
        turns = turns or self.max_turns
        evaluation = evaluate(
            self.env_id,
            agent,
            num_problems=self.num_problems,
            max_turns=turns,
            seed=self.seed,
            env_kwargs={
                **self.env_kwargs,
                **(env_kwargs or {}),
                "split": "test",
                "history_window": self.history_window,
            },
            output=output,
            progress=self.progress,
        )
        metrics = evaluation.metrics
        if f"m1@t{turns}" in metrics:  # no oracle stop: the vote after every turn
            for turn in range(2, turns):
                metrics[f"m1@t{turn}"] = majority_at_turns(evaluation.records, turn)
        return metrics, turn_transitions(evaluation.records)

    def parallel(
        self, llm: LLM, output: Path, *, adapter: str | None = None
    ) -> dict[str, Estimate]:
        """mk@t1 and pk@t1 of k answers sampled from ``llm`` (with ``adapter``).

        Only those two: its p1@t1 and m1@t1 would restate the vote of k samples.
        """
        k = self.max_turns
        sampled = replace(self.greedy, temperature=PARALLEL_TEMPERATURE, seed=self.seed)
        metrics, _ = self.sequential(ParallelSampling(llm, k, sampled, adapter=adapter), output)
        return {column: metrics[column] for column in (f"m{k}@t1", f"p{k}@t1")}


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


def _as_in_rise_config(name: str, **extra: Any) -> Any:
    """A settings field with the default and help of `RISEConfig`'s field ``name``."""
    source = next(field_ for field_ in fields(RISEConfig) if field_.name == name)
    return field(default=source.default, metadata={**source.metadata, **extra})


@dataclass
class ReproductionSettings:
    """What `run_reproduction` runs: environment, model, back end, RISE and training sizes."""

    env_id: str = field(default="RISE-Arithmetic-v0", metadata=_help("Environment id."))
    env_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help("Extra gym.make arguments (not split, max_turns or history_window)."),
    )
    model: str | None = field(
        default=None,
        metadata=_help("Hugging Face hub id or local model folder; none: the offline default."),
    )
    backend: str = field(
        default="transformers",
        metadata=_help("LLM back end of every rollout and evaluation.", choices=BACKENDS),
    )
    dtype: str = field(
        default="auto",
        metadata=_help(
            "Weights' dtype for generation and training (auto: generation in bfloat16 or "
            "float16 on GPU and bfloat16 on a CPU with AVX512-BF16 or AMX, about 2x faster "
            "than float32 there, else float32; training in bfloat16 where the GPU has it).",
            choices=DTYPES,
        ),
    )
    eval_problems: int = field(default=100, metadata=_help("Held-out problems per evaluation."))
    train_problems: int = field(
        default=256, metadata=_help("Training problems rolled out per RISE iteration.")
    )
    boost: bool = field(
        default=True,
        metadata=_help("Start with SFT on the training split's reference solutions."),
    )
    boost_problems: int = field(
        default=512, metadata=_help("Reference solutions the boost phase trains on.")
    )
    iterations: int = _as_in_rise_config("iterations")
    max_turns: int = field(
        default=5, metadata=_help("Turns k; parallel sampling draws k answers (equal compute).")
    )
    improvement: str = _as_in_rise_config("improvement", choices=("self", "expert"))
    expert: str = field(
        default="arithmetic",
        metadata=_help(
            "The expert of improvement=expert: 'arithmetic' (scripted recomputation, "
            "RISE-Arithmetic), 'reference' (each problem's reference solution) or a model."
        ),
    )
    num_samples: int = _as_in_rise_config("num_samples")
    sample_temperature: float = _as_in_rise_config("sample_temperature")
    relabel_context: str = _as_in_rise_config("relabel_context", choices=RELABEL_CONTEXTS)
    collect_stop_on_correct: bool = _as_in_rise_config("collect_stop_on_correct")
    data_shape: str = _as_in_rise_config("data_shape", choices=DATA_SHAPES)
    drop_unimproved: bool = _as_in_rise_config("drop_unimproved")
    history_window: int | None = field(
        default=2, metadata=_help("Earlier attempts kept in each prompt (none: all).")
    )
    rollout_temperature: float = _as_in_rise_config("rollout_temperature")
    data_filter: str = _as_in_rise_config("data_filter", choices=DATA_FILTERS)
    tau: float = _as_in_rise_config("tau")
    max_new_tokens: int = field(default=256, metadata=_help("Tokens generated per response."))
    learning_rate: float = field(default=1e-4, metadata=_help("Peak learning rate."))
    epochs: float = field(default=2.0, metadata=_help("Training epochs per RISE step."))
    per_device_batch_size: int = field(
        default=8, metadata=_help("Training examples per micro-batch.")
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata=_help("Micro-batches per optimizer step.")
    )
    max_seq_length: int = field(
        default=2048, metadata=_help("Training tokens per example (prompts cut from the left).")
    )
    full_finetune: bool = field(
        default=False, metadata=_help("Fine-tune all weights instead of a LoRA adapter.")
    )
    batch_size: int | None = field(
        default=None,
        metadata=_help("Conversations per generate call (transformers only; none: all)."),
    )
    gpu_memory_utilization: float = field(
        default=0.5,
        metadata=_help("GPU memory share of the vLLM engine (vllm only; training needs the rest)."),
    )
    max_model_len: int | None = field(
        default=None,
        metadata=_help("Context length of the vLLM engine (vllm only; none: model's)."),
    )
    self_refine: bool = field(
        default=True,
        metadata=_help("Evaluate the untrained model with self-refine too (k LLM calls)."),
    )
    ood_retry_prompts: bool = field(
        default=False,
        metadata=_help(
            "Also evaluate the trained model with each retry prompt it never saw in "
            "training (rise_gym.envs.retry_prompts.OOD_RETRY_PROMPTS), one row each."
        ),
    )
    feedback_rows: bool = field(
        default=False,
        metadata=_help(
            "Also evaluate the boosted and the trained model with the math environments' "
            "answer feedback ('Your answer X is incorrect.' before each retry prompt), one "
            "row each: RISE with and without environment feedback."
        ),
    )
    seed: int = field(default=0, metadata=_help("Seed of everything."))
    output: Path = field(default=Path("runs/reproduce"), metadata=_help("Output folder."))

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.max_turns < 2:
            raise ValueError(
                f"max_turns must be >= 2 (parallel sampling needs k >= 2), got {self.max_turns}"
            )
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        # Build both configurations now, so that a bad value fails before hours of evaluation.
        self.rise_config()
        self.training_config()

    @property
    def run_name(self) -> str:
        """The RISE configuration's name in file names.

        ``self`` or ``expert-NAME``, then ``problem_context`` (relabelling samples drawn
        from the problem alone), the data shape and filter where they are not the
        defaults, and ``no-boost``: e.g. ``self-first_turn-success`` (Classic SFT).
        Other settings are checked by `RISEAgent`, which refuses a folder of a run with
        other settings.
        """
        parts = ["self" if self.improvement == "self" else f"expert-{Path(self.expert).name}"]
        parts += ["problem_context"] if self.relabel_context == "problem" else []
        parts += [self.data_shape] if self.data_shape != "all_turns" else []
        parts += [self.data_filter] if self.data_filter != "all" else []
        parts += [] if self.boost else ["no-boost"]
        return "-".join(parts)

    @property
    def improvement_label(self) -> str:
        """How the training data was obtained, as the table says it."""
        if self.improvement == "self":
            drawn = ", drawn from the problem alone" if self.relabel_context == "problem" else ""
            source = f"self-distillation (best of {self.num_samples} samples of the learner{drawn})"
        else:
            source = f"distillation from an oracle-quality expert ({self.expert})"
        if self.data_shape == "first_turn":
            kept = "successful" if self.data_filter == "success" else self.data_filter
            return f"single-turn SFT on {kept} first answers ('Classic'), {source}"
        return source

    def held_out(self, *, progress: bool = True) -> HeldOutProtocol:
        """The held-out evaluation of every row (`HeldOutProtocol`)."""
        return HeldOutProtocol(
            env_id=self.env_id,
            env_kwargs=self.env_kwargs,
            num_problems=self.eval_problems,
            max_turns=self.max_turns,
            history_window=self.history_window,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed,
            progress=progress,
        )

    def rise_config(self) -> RISEConfig:
        """The `RISEConfig` of the RISE run, written under ``output/rise-RUN``."""
        return RISEConfig(
            iterations=self.iterations,
            max_turns=self.max_turns,
            history_window=self.history_window,
            train_problems=self.train_problems,
            eval_problems=self.eval_problems,
            improvement=self.improvement,
            num_samples=self.num_samples,
            sample_temperature=self.sample_temperature,
            relabel_context=self.relabel_context,
            collect_stop_on_correct=self.collect_stop_on_correct,
            data_shape=self.data_shape,
            drop_unimproved=self.drop_unimproved,
            rollout_temperature=self.rollout_temperature,
            data_filter=self.data_filter,
            tau=self.tau,
            max_new_tokens=self.max_new_tokens,
            boost=self.boost,
            boost_problems=self.boost_problems,
            seed=self.seed,
            output_dir=self.output / f"rise-{self.run_name}",
            boost_dir=self.output / "boost",
        )

    def training_config(self) -> TrainingConfig:
        """The `TrainingConfig` of every RWR training run (bf16 follows ``dtype``)."""
        return TrainingConfig(
            bf16=bf16_for_dtype(self.dtype),
            use_lora=not self.full_finetune,
            learning_rate=self.learning_rate,
            num_epochs=self.epochs,
            per_device_batch_size=self.per_device_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            max_seq_length=self.max_seq_length,
            seed=self.seed,
        )


@dataclass
class Reproduction:
    """The figures of a finished `run_reproduction`.

    Attributes:
        settings: What was run.
        rows: Metrics by row (``"base: sequential"``, ..., ``"boost: sequential"`` (the
            boosted model RISE starts from; LoRA runs with boost only),
            ``"RISE iteration 1: sequential"`` (every iteration before the last), ...,
            ``"RISE: parallel k=5"`` (the last iteration's model).
        transitions: For every sequential row, the consecutive-turn pairs in which a
            right answer turns wrong and a wrong one right (`turn_transitions`).
        minutes: Wall-clock minutes of the call that produced them.
        generated_tokens: Tokens RISE generated to make its training data (rollouts and
            relabelling samples of all iterations, `RISEAgent.generated_tokens`); 0
            before training.
    """

    settings: ReproductionSettings
    rows: dict[str, dict[str, Estimate]]
    transitions: dict[str, dict[str, int]]
    minutes: float
    generated_tokens: int = 0

    @property
    def columns(self) -> list[str]:
        """The table's columns: p1@t1..p1@tk, m1@t1..m1@tk, mk@t1, pk@t1."""
        turns = range(1, self.settings.max_turns + 1)
        k = self.settings.max_turns
        return [f"p1@t{t}" for t in turns] + [f"m1@t{t}" for t in turns] + [f"m{k}@t1", f"p{k}@t1"]

    def gaps(self) -> dict[str, dict[str, float]]:
        """m1@tk - m1@t1 and m1@tk - mk@t1 of each model (base, boost, RISE), as fractions.

        A gap whose rows are not measured yet (a run in progress) is left out.
        """
        k = self.settings.max_turns
        gaps: dict[str, dict[str, float]] = {}
        models = [name for name in ("base", "boost", "RISE") if f"{name}: sequential" in self.rows]
        for model in models:
            sequential = self.rows[f"{model}: sequential"]
            last, first = sequential[f"m1@t{k}"].value, sequential["m1@t1"].value
            gaps[model] = {f"m1@t{k} - m1@t1": last - first}
            parallel = self.rows.get(f"{model}: parallel k={k}")
            if parallel:
                gaps[model][f"m1@t{k} - m{k}@t1"] = last - parallel[f"m{k}@t1"].value
        return gaps

    def to_markdown(self) -> str:
        """The table (percentages with 95% intervals, transitions), the gaps and the setting."""
        columns = [*self.columns, "right→wrong", "wrong→right"]
        lines = [
            f"RISE: {self.settings.improvement_label}\n",
            "| agent | " + " | ".join(columns) + " |",
            "|" + "---|" * (len(columns) + 1),
        ]
        for name, figures in self.rows.items():
            cells = [str(figures[c]) if c in figures else "" for c in self.columns]
            counts = self.transitions.get(name)
            if counts:
                total = counts["transitions"]
                cells += [f"{counts[key]}/{total}" for key in ("right_to_wrong", "wrong_to_right")]
            else:
                cells += ["", ""]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for model, gaps in self.gaps().items():
            points = "; ".join(f"{gap} = {100 * value:+.1f} points" for gap, value in gaps.items())
            lines.append(f"\n{model}: {points}")
        settings = self.settings
        lines.append(
            f"\n{settings.env_id} {settings.env_kwargs}, {settings.eval_problems} held-out "
            f"problems, {settings.model or DEFAULT_MODEL} ({settings.backend}), "
            f"{self.minutes:.1f} minutes in this call (steps finished earlier are reused)"
        )
        if self.generated_tokens:
            lines.append(f"RISE generated {self.generated_tokens} tokens to make its data")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """Rows (each metric's value, interval and n), transitions, gaps, settings, minutes.

        Paths in the settings stay `Path` objects; `write` saves them as strings.
        """
        return {
            "rows": {
                name: {k: asdict(v) for k, v in row.items()} for name, row in self.rows.items()
            },
            "transitions": self.transitions,
            "gaps": self.gaps(),
            "improvement": self.settings.improvement_label,
            "settings": asdict(self.settings),
            "minutes": self.minutes,
            "generated_tokens": self.generated_tokens,
        }

    def write(self, folder: Path) -> None:
        """Write ``results-RUN.md`` and ``results-RUN.json`` into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"results-{self.settings.run_name}"
        (folder / f"{stem}.md").write_text(self.to_markdown() + "\n")
        (folder / f"{stem}.json").write_text(
            json.dumps(self.to_json(), indent=2, default=str) + "\n"
        )


def build_llm(settings: ReproductionSettings) -> LLM:
    """Start the back end serving ``settings.model``.

    Raises:
        ValueError: ``backend="vllm"`` where torch sees no CUDA GPU.
        MissingDependency: the back end's package is missing (vllm: the extra to install).
        ModelNotFound: the model cannot be found.
    """
    if settings.backend == "transformers":
        return make_llm(settings.model, dtype=settings.dtype, max_batch_size=settings.batch_size)
    if not torch.cuda.is_available():
        raise ValueError(
            "backend='vllm' needs a CUDA GPU and torch sees none; run on a GPU machine "
            "(where bash scripts/setup.sh installs vllm) or use backend='transformers'"
        )
    options: dict[str, Any] = {"gpu_memory_utilization": settings.gpu_memory_utilization}
    if settings.max_model_len is not None:
        options["max_model_len"] = settings.max_model_len
    return make_llm(settings.model, backend="vllm", dtype=settings.dtype, **options)


def run_reproduction(
    settings: ReproductionSettings, llm: LLM | None = None, *, progress: bool = True
) -> Reproduction:
    """Evaluate the base model, train it with RISE, evaluate it again; write the results.

    Args:
        settings: What to run.
        llm: The back end already serving ``settings.model`` (see `build_llm`);
            None starts it. It is closed at the end.
        progress: Show progress bars.

    Returns:
        The figures, also written to ``settings.output`` as results-RUN.md and
        results-RUN.json (RUN: ``settings.run_name``) after every row, so an
        interrupted run leaves the rows it finished.
    """
    started = time.perf_counter()
    k = settings.max_turns
    protocol = settings.held_out(progress=progress)
    greedy = protocol.greedy
    config = settings.rise_config()
    expert = None
    if settings.improvement == "expert":
        expert = make_expert(
            settings.expert, settings.env_id, settings.env_kwargs, dtype=settings.dtype
        )
    rise = RISEAgent(
        llm or build_llm(settings),
        resolve_model(settings.model),
        config,
        settings.training_config(),
        params=greedy,
        expert=expert,
        load_model=lambda folder: build_llm(replace(settings, model=folder)),
    )

    rows: dict[str, dict[str, Estimate]] = {}
    transitions: dict[str, dict[str, int]] = {}

    def score(
        row: str,
        agent: Agent,
        name: str,
        turns: int = k,
        records: Path | None = None,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        output = records or settings.output / "eval" / f"{name}.jsonl"
        rows[row], transitions[row] = protocol.sequential(
            agent, output, turns=turns, env_kwargs=env_kwargs
        )
        write_so_far()

    def score_parallel(row: str, adapter: str | None, name: str) -> None:
        output = settings.output / "eval" / f"{name}.jsonl"
        rows[row] = protocol.parallel(rise.llm, output, adapter=adapter)
        write_so_far()

    def write_so_far() -> Reproduction:
        minutes = (time.perf_counter() - started) / 60
        reproduction = Reproduction(
            settings, dict(rows), dict(transitions), minutes, rise.generated_tokens
        )
        reproduction.write(settings.output)
        return reproduction

    refine_turns = (k + 1) // 2  # 1 + 2 (turns - 1) calls: the most turns within k calls
    boost_adapter = str(settings.output / "boost" / "model")
    try:
        base = rise.llm
        score("base: sequential", SequentialRetry(base, greedy), "base-sequential")
        score_parallel(f"base: parallel k={k}", None, "base-parallel")
        if settings.self_refine:
            score(
                f"base: self-refine ({refine_turns} turns)",
                SelfRefine(base, greedy),
                "base-self-refine",
                turns=refine_turns,
            )
        rise.learn(settings.env_id, settings.env_kwargs)
        boosted = settings.boost and not settings.full_finetune  # the model RISE starts from
        if boosted:
            score(  # learn evaluated it
                "boost: sequential",
                SequentialRetry(rise.llm, greedy, adapter=boost_adapter, name=rise.name),
                "boost",
                records=settings.output / "boost" / "eval.jsonl",
            )
        for iteration in range(1, config.iterations):  # learn evaluated every iteration
            score(
                f"RISE iteration {iteration}: sequential",
                rise,
                "rise-sequential",
                records=_iteration_eval(config, iteration),
            )
        last = _iteration_eval(config, config.iterations)
        score("RISE: sequential", rise, "rise-sequential", records=last)
        score_parallel(
            f"RISE: parallel k={k}",
            rise.adapter,
            f"{config.output_dir.name}-iteration-{config.iterations}-parallel",
        )
        for prompt_name, prompt in OOD_RETRY_PROMPTS.items() if settings.ood_retry_prompts else ():
            score(
                f"RISE: sequential, retry prompt '{prompt_name}'",
                rise,
                f"{config.output_dir.name}-retry-{prompt_name}",
                env_kwargs={"retry_prompt": prompt},
            )
        if boosted:
            score_parallel(f"boost: parallel k={k}", boost_adapter, "boost-parallel")
        if settings.feedback_rows:
            with_feedback = {"feedback": "answer"}
            if boosted:
                score(
                    "boost: sequential, answer feedback",
                    SequentialRetry(rise.llm, greedy, adapter=boost_adapter, name=rise.name),
                    "boost-feedback-answer",
                    env_kwargs=with_feedback,
                )
            score(
                "RISE: sequential, answer feedback",
                rise,
                f"{config.output_dir.name}-feedback-answer",
                env_kwargs=with_feedback,
            )
    finally:
        rise.llm.close()  # the base model's back end, or the trained model's (full fine-tuning)
    return write_so_far()


def _iteration_eval(config: RISEConfig, iteration: int) -> Path:
    """The held-out episodes `RISEAgent.learn` recorded after ``iteration``."""
    return config.output_dir / f"iteration-{iteration}" / "eval.jsonl"


# ---- command-line wrappers --------------------------------------------------------------

_CONVERTERS = {"int": int, "float": float, "str": str, "Path": Path}


def add_options(
    parser: argparse.ArgumentParser, defaults: ReproductionSettings, names: tuple[str, ...]
) -> None:
    """Add an option ``--field-name`` for each named settings field, defaulting to ``defaults``.

    Args:
        parser: The script's parser.
        defaults: The script's default settings.
        names: Settings fields the script exposes (scalars only).
    """
    settings_fields = {field_.name: field_ for field_ in fields(ReproductionSettings)}
    for name in names:
        field_ = settings_fields[name]
        flag = "--" + name.replace("_", "-")
        default, help_ = getattr(defaults, name), field_.metadata["help"]
        if field_.type == "bool":
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_
            )
            continue
        kind, _, optional = str(field_.type).partition(" | ")
        convert = _or_none(_CONVERTERS[kind]) if optional else _CONVERTERS[kind]
        parser.add_argument(
            flag,
            type=convert,
            default=default,
            choices=field_.metadata.get("choices"),
            help=help_,
        )


def run_command(
    parser: argparse.ArgumentParser, args: argparse.Namespace, defaults: ReproductionSettings
) -> Reproduction:
    """Run a reproduction from parsed options and print its table.

    Bad settings and a back end that cannot start (no GPU, vllm missing, unknown model)
    end the script with a usage error (exit status 2), not a traceback.

    Args:
        parser: The parser that read ``args`` (it reports the errors).
        args: Parsed options; those named after settings fields override ``defaults``.
        defaults: The script's default settings.

    Returns:
        The figures, as `run_reproduction` returns them.
    """
    chosen = {f.name: getattr(args, f.name) for f in fields(defaults) if hasattr(args, f.name)}
    try:
        settings = replace(defaults, **chosen)
        llm = build_llm(settings)
    except (ValueError, RiseGymError) as error:
        parser.error(str(error))
    reproduction = run_reproduction(settings, llm)
    print(reproduction.to_markdown())
    return reproduction


def _or_none(convert: Any) -> Any:
    def parse(value: str) -> Any:
        return None if value.lower() == "none" else convert(value)

    parse.__name__ = convert.__name__  # argparse names the type in its error messages
    return parse
