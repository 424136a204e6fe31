"""The ``rise-gym`` command: list environments, evaluate, run the leaderboard, train, show episodes.

Usage::

    rise-gym envs
    rise-gym doctor
    rise-gym eval --env RISE-GSM8K-v0 --agent sequential --num-problems 50
    rise-gym leaderboard --agents sequential parallel rise --adapter runs/rise/iteration-1/adapter
    rise-gym train --env RISE-Arithmetic-v0 --iterations 2
    rise-gym leaderboard --config run.yaml --num-problems 8
    rise-gym show runs/leaderboard/<run folder> --right-to-wrong --limit 5

The options of ``eval`` and ``leaderboard`` are the fields of
`agents.leaderboard.LeaderboardConfig`, those of ``train`` the fields of
`agents.rise.config.RISEConfig`, with the same names, defaults and help. ``--config FILE``
reads any of a command's options from a YAML or JSON file (`agents.config_file`); the
command line overrides it, and each run writes its resolved options beside its results
(``config.yaml``) for ``--config`` to run it again. torch and the back ends load only
inside the subcommands. A bad argument, file or setting, a missing
optional package and any other error rise-gym reports (`RiseGymError`) end with one
line on stderr and exit status 2; ``eval`` and ``leaderboard`` check their arguments,
packages, server and output files before any model loads.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import Field, fields
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from agents.config_file import (
    key_value,
    option_values,
    read_config_file,
    resolved_config,
    write_config_file,
)
from rise_gym import __version__
from rise_gym.envs.registration import ENV_IDS
from rise_gym.errors import RiseGymError

if TYPE_CHECKING:
    from agents.leaderboard import LeaderboardConfig

Config = TypeVar("Config")

_MODEL_FIELDS = ("model", "backend", "base_url", "dtype")
_TRAINING_OPTIONS: dict[str, tuple[Callable[[str], Any], str]] = {
    "learning_rate": (float, "peak learning rate (default: TrainingConfig's, 1e-4 for LoRA)"),
    "num_epochs": (float, "passes over the examples in each training run"),
    "max_steps": (int, "optimizer steps to stop after (default: num_epochs decides)"),
    "per_device_batch_size": (int, "examples per micro-batch"),
    "lora_rank": (int, "LoRA rank r"),
}
"""The TrainingConfig fields with an option of their own; --training-arg sets any other."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status (2: a bad argument or an error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "config", None) is not None:
            args = _with_config_file(parser, args, argv)
        return args.command(args)
    except KeyboardInterrupt:
        print(
            "interrupted: finished episodes are saved; run the same command to resume",
            file=sys.stderr,
        )
        return 130
    except RiseGymError as error:
        command: Parser = args.parser
        command.error(str(error))


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` on one line and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def build_parser() -> Parser:
    """The parser of ``rise-gym`` and its subcommands."""
    from agents.leaderboard import AGENT_KINDS, LeaderboardConfig
    from agents.rise.config import RISEConfig
    from agents.show import TRANSITIONS

    parser = Parser(prog="rise-gym", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def command(
        name: str, run: Callable[[argparse.Namespace], int], summary: str, description: str
    ) -> Parser:
        sub = commands.add_parser(
            name,
            help=summary,
            description=description,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        sub.set_defaults(command=run, parser=sub)
        return sub

    def config_option(sub: Parser, results: str) -> None:
        sub.add_argument(
            "--config",
            type=Path,
            metavar="FILE",
            help="YAML or JSON file of option values, keyed by option name (num_problems: "
            "16); options on the command line override it. The run writes its resolved "
            f"options to {results} for --config to run it again",
        )

    command(
        "envs",
        _envs,
        "list the environment ids with their data source and size",
        "List every registered environment id, where the problems of its test split "
        "come from and how many there are.",
    )

    command(
        "doctor",
        _doctor,
        "versions, devices, bfloat16, data packages, missing extras, name clashes",
        "Print what this installation has: the versions of torch, transformers, vLLM, "
        "peft and gymnasium, the devices and their bfloat16 support, the data and model "
        "packages found, the optional extras missing, and whether another package "
        "installs 'agents' too (exit status 1 then).",
    )

    eval_ = command(
        "eval",
        _eval,
        "evaluate one agent on one environment and print its metrics",
        "Evaluate one agent on one environment without an oracle and print p1@tk and "
        "m1@tk (mk@t1 and pk@t1 for parallel sampling) with 95% intervals.",
    )
    eval_.add_argument("--env", default="RISE-Arithmetic-v0", help="environment id")
    eval_.add_argument("--agent", default="sequential", choices=AGENT_KINDS, help="the agent")
    eval_.add_argument("--output", type=Path, help="JSONL file of episode records (resumable)")
    _add_options(eval_, LeaderboardConfig, skip=("envs", "agents", "output_dir"))

    board = command(
        "leaderboard",
        _leaderboard,
        "agents x environments at equal compute, with Markdown/CSV/JSON/PNG reports",
        "Evaluate agents on environments at equal compute (k turns vs k parallel samples "
        "vs self-refine; agents: "
        + "; ".join(f"{a}: {w}" for a, w in AGENT_KINDS.items())
        + "). Writes episodes (JSONL, resumable), the leaderboard (Markdown, CSV, JSON) "
        "and an accuracy-against-turn plot (PNG) to a run folder named after the settings "
        "that change results; running again with the same settings reuses them. Without "
        "arguments: the default model on easy arithmetic and a slice of GSM8K, about 10 "
        "minutes on 2 CPU cores.",
    )
    _add_options(board, LeaderboardConfig)

    train = command(
        "train",
        _train,
        "train a model with RISE (RISEAgent.learn)",
        "Boost, then run RISE iterations (on-policy rollouts, best-of-N or expert "
        "relabelling, reward-weighted regression) on an environment's train split; each "
        "iteration writes its data, adapter and held-out metrics under --output-dir.",
    )
    train.add_argument("--env", default="RISE-Arithmetic-v0", help="environment id")
    train.add_argument(
        "--expert",
        help="the expert of --improvement expert: 'arithmetic' (scripted, RISE-Arithmetic), "
        "'reference' (each problem's reference solution) or a model",
    )
    train.add_argument(
        "--collect-model",
        help="weak-to-strong: another model that rolls out (and samples the improved "
        "actions) in every iteration; its data trains adapters of --model",
    )
    _add_options(train, LeaderboardConfig, only=(*_MODEL_FIELDS, "difficulty", "env_args"))
    _add_options(train.add_argument_group("RISE"), RISEConfig)
    _add_training_options(train.add_argument_group("training"))
    for sub in (eval_, board):
        sub.add_argument("--no-progress", action="store_true", help="hide progress bars")
    config_option(eval_, "<output>.config.yaml (with --output)")
    config_option(board, "config.yaml in the run folder")
    config_option(train, "config.yaml in --output-dir")

    show = command(
        "show",
        _show,
        "print a run's episodes turn by turn: answers, correctness, feedback",
        "Print the episodes of a run folder (its episodes/*.jsonl) or of an episodes "
        "JSONL file turn by turn: each answer, whether it is correct, the feedback the "
        "agent got and the response. Filters keep the episodes of some problems, or "
        "those whose correctness changes from one turn to the next.",
    )
    show.add_argument("run", type=Path, metavar="RUN_OR_FILE", help="run folder or JSONL file")
    show.add_argument(
        "--problem",
        action="append",
        default=[],
        metavar="ID",
        help="show this problem id only (repeatable)",
    )
    transitions = show.add_mutually_exclusive_group()
    for transition, meaning in TRANSITIONS.items():
        transitions.add_argument(
            "--" + transition.replace("_", "-"),
            action="store_const",
            const=transition,
            dest="transition",
            help=f"only episodes in which {meaning}",
        )
    show.add_argument(
        "--limit", type=_int_at_least(1, "the limit"), help="show at most this many episodes"
    )
    return parser


# ---- the subcommands ---------------------------------------------------------------


def _envs(args: argparse.Namespace) -> int:
    import gymnasium as gym

    rows = [("id", "problems", "source")]
    for env_id in ENV_IDS:
        try:
            env = gym.make(env_id).unwrapped
        except (RiseGymError, ImportError, ValueError, TypeError) as error:
            rows.append((env_id, "-", f"not available: {error}"))
            continue
        size = str(len(env.problems)) if hasattr(env, "problems") else "-"
        rows.append((env_id, size, getattr(env, "data_origin", None) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for env_id, size, source in rows:
        print(f"{env_id:<{widths[0]}}  {size:>{widths[1]}}  {source}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from rise_gym.doctor import foreign_agents_distributions, report

    print(report())
    return 1 if foreign_agents_distributions() else 0


def _eval(args: argparse.Namespace) -> int:
    from agents.evaluate import plan_evaluation, run_evaluation
    from agents.leaderboard import Entry, Leaderboard, build_agent
    from agents.leaderboard.metadata import RunMetadata
    from agents.llm.factory import LazyLLM

    with _bad_arguments(args.parser):
        asked = _checked_config(args, envs=(args.env,), agents=(args.agent,))
        config = asked.with_served_model()
        metadata = RunMetadata.collect(asked, config)
        llm = LazyLLM(config.build_llm)
        plan = plan_evaluation(
            args.env,
            build_agent(args.agent, llm, config),
            num_problems=config.num_problems,
            max_turns=config.max_turns,
            seed=config.seed,
            env_kwargs=config.env_kwargs(args.env),
            output=args.output,
            settings=config.episode_settings(),
        )
        stopping = config.load_stopping_policy()
        if plan.pending and config.ray_address is None:  # Ray's actors load their own
            llm.load()
    try:
        evaluation = run_evaluation(
            plan,
            batch_size=config.batch_size,
            progress=not args.no_progress,
            ray_address=config.ray_address,
        )
    finally:
        llm.close()
    entry = Entry.from_evaluation(evaluation, stopping)
    print(Leaderboard([entry], config.max_turns, metadata=metadata).to_markdown())
    if args.output is not None:
        _write_resolved_config(args, args.output.with_suffix(".config.yaml"))
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from agents.leaderboard import run_leaderboard

    with _bad_arguments(args.parser):
        config = _checked_config(args, plot=True)
        served = config.with_served_model()
    started = time.perf_counter()
    leaderboard = run_leaderboard(config, progress=not args.no_progress)
    _write_resolved_config(args, served.run_folder() / "config.yaml")
    print(
        f"\n{served.model_name} ({config.backend}), {config.num_problems} problems per "
        f"environment, k = {config.max_turns}, 95% Wilson intervals:\n"
    )
    print(leaderboard.to_markdown())
    print(f"reports in {served.run_folder()} ({time.perf_counter() - started:.0f} s)")
    return 0


def _checked_config(
    args: argparse.Namespace, *, plot: bool = False, **overrides: Any
) -> LeaderboardConfig:
    """The `LeaderboardConfig` of ``eval`` or ``leaderboard``, checked before any work.

    Checks the model, the packages the run needs and the environments; the caller's
    ``with_served_model()`` checks the server of the 'openai' back end.
    """
    from agents.leaderboard import LeaderboardConfig, check_envs

    config = _config(LeaderboardConfig, args, **overrides)
    _check_model(config.model, config.backend)
    config.check_dependencies(plot=plot)
    check_envs(config)
    return config


def _train(args: argparse.Namespace) -> int:
    from agents.llm.factory import BACKEND_PACKAGES, require
    from agents.rise.config import RISEConfig

    with _bad_arguments(args.parser):
        config = _config(RISEConfig, args)
        if args.backend == "openai":
            raise ValueError("training needs the weights: use --backend transformers or vllm")
        if config.improvement == "expert" and not args.expert:
            raise ValueError(
                "--improvement expert needs --expert: 'arithmetic', 'reference' or a model"
            )
        _check_model(args.model, args.backend)
        _check_folder(config.output_dir)
        needed = ("torch", "transformers", *(() if args.full_finetune else ("peft",)))
        packages = (*needed, *BACKEND_PACKAGES[args.backend])
        require(*dict.fromkeys(packages), purpose=f"training with the {args.backend} back end")
        env_kwargs = dict(args.env_args)
        if ENV_IDS.get(args.env, ("",))[0].endswith(":ArithmeticEnv"):
            env_kwargs.setdefault("difficulty", args.difficulty)
        _check_env(args.env, {**env_kwargs, "split": "train"})
    from agents.llm.default_model import resolve_model
    from agents.llm.factory import LazyLLM, make_llm
    from agents.rise.agent import RISEAgent
    from agents.rise.train import TrainingConfig, bf16_for_dtype

    with _bad_arguments(args.parser):
        settings = {"bf16": bf16_for_dtype(args.dtype), **_training_settings(args)}
        training = TrainingConfig.from_settings({**settings, "seed": config.seed})
        build = partial(
            make_llm, args.model, backend=args.backend, base_url=args.base_url, dtype=args.dtype
        )
        # on Ray the workers build it from this recipe, and this process only trains
        llm = build() if config.ray_address is None else LazyLLM(build)
    expert = None
    if args.expert:
        from agents.rise.experts import make_expert

        with _bad_arguments(args.parser):
            options = {"backend": args.backend, "dtype": args.dtype}
            expert = make_expert(args.expert, args.env, env_kwargs, **options)
    collector = None
    if args.collect_model:
        with _bad_arguments(args.parser):
            collector = make_llm(args.collect_model, backend=args.backend, dtype=args.dtype)
    agent = RISEAgent(
        llm, resolve_model(args.model), config, training, expert=expert, collector=collector
    )
    try:
        agent.learn(args.env, env_kwargs)
    finally:
        for backend in (llm, expert, collector):
            if backend is not None:
                backend.close()
    _write_resolved_config(args, config.output_dir / "config.yaml")
    for step in agent.history:
        print(json.dumps(step))
    print(f"adapter: {agent.adapter}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from agents.show import show

    print(show(args.run, problems=args.problem, transition=args.transition, limit=args.limit))
    return 0


# ---- config files ----------------------------------------------------------------------


def _with_config_file(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parse ``argv`` again with the ``--config`` file's values as the command's defaults.

    The command line still overrides them; KEY=VALUE options add to the file's mapping.
    """
    values = option_values(args.parser, read_config_file(args.config), source=str(args.config))
    args.parser.set_defaults(**values)
    return parser.parse_args(argv)


def _write_resolved_config(args: argparse.Namespace, path: Path) -> None:
    """Write the command's options as this run resolved them, for ``--config`` to rerun it."""
    write_config_file(path, resolved_config(args.parser, args), command=args.parser.prog)


# ---- options from config dataclasses --------------------------------------------------


def _add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    config: type,
    *,
    skip: Iterable[str] = (),
    only: Iterable[str] | None = None,
) -> None:
    """Add an option per field of the dataclass ``config`` (``--field-name``, its help)."""
    chosen = None if only is None else set(only)
    for field_ in fields(config):
        if field_.name not in skip and (chosen is None or field_.name in chosen):
            _add_field_option(parser, field_)


def _add_field_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, field_: Field[Any]
) -> None:
    default = field_.default_factory() if callable(field_.default_factory) else field_.default
    flag = "--" + field_.name.replace("_", "-")
    help_ = field_.metadata.get("help", "")
    if isinstance(default, bool):
        parser.add_argument(
            flag, action=argparse.BooleanOptionalAction, default=default, help=help_
        )
    elif isinstance(default, tuple):
        parser.add_argument(
            flag, nargs="+", default=list(default), metavar=field_.name[:-1].upper(), help=help_
        )
    elif isinstance(default, dict):
        parser.add_argument(
            flag,
            action="append",
            type=key_value,
            default=[],
            metavar="KEY=VALUE",
            help=help_ + " Repeatable; VALUE is read as JSON when it parses.",
        )
    else:
        annotation = str(field_.type)
        convert: Callable[[str], Any] = {"int": int, "float": float, "Path": Path}.get(
            annotation.split(" ")[0], str
        )
        if field_.name == "seed":
            convert = _seed
        if "None" in annotation:
            convert = _or_none(convert)
        parser.add_argument(flag, type=convert, default=default, help=help_)


def _config(config: Callable[..., Config], args: argparse.Namespace, **overrides: Any) -> Config:
    """Build the dataclass ``config`` from the parsed options named after its fields."""
    values = {}
    for field_ in fields(config):  # type: ignore[arg-type]
        if hasattr(args, field_.name):
            value = getattr(args, field_.name)
            values[field_.name] = dict(value) if field_.default_factory is dict else value
    return config(**{**values, **overrides})


def _add_training_options(group: argparse._ArgumentGroup) -> None:
    for name, (convert, help_) in _TRAINING_OPTIONS.items():
        group.add_argument("--" + name.replace("_", "-"), type=convert, help=help_)
    group.add_argument(
        "--full-finetune",
        action="store_true",
        help="fine-tune all weights instead of training a LoRA adapter",
    )
    group.add_argument(
        "--training-arg",
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help="any other TrainingConfig or transformers.TrainingArguments field, e.g. "
        "optim=adamw_torch_fused or deepspeed=ds_zero2.json (repeatable)",
    )


def _training_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings = {name: getattr(args, name) for name in _TRAINING_OPTIONS}
    settings = {name: value for name, value in settings.items() if value is not None}
    if args.full_finetune:
        settings["use_lora"] = False
    return {**settings, **dict(args.training_arg)}


# ---- checks and argument types ------------------------------------------------------


@contextmanager
def _bad_arguments(parser: argparse.ArgumentParser) -> Iterator[None]:
    """Report a validation error raised in the block as a usage error (exit status 2)."""
    try:
        yield
    except (ValueError, TypeError, RiseGymError) as error:
        parser.error(str(error))


def _check_model(model: str | None, backend: str) -> None:
    """A model that is neither the default, a local folder nor a hub id is a usage error."""
    from agents.llm.default_model import DEFAULT_MODEL, resolve_model

    if backend != "openai" and model not in (None, DEFAULT_MODEL):
        resolve_model(model)


def _check_folder(folder: Path) -> None:
    """Create ``folder`` now, so that a folder that cannot be created is a usage error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"cannot create the folder {folder}: {error.strerror or error}; pass another "
            "--output-dir"
        ) from error


def _check_env(env_id: str, kwargs: dict[str, Any]) -> None:
    import gymnasium as gym

    if env_id not in ENV_IDS:
        raise ValueError(f"unknown environment id {env_id!r}; choose from {sorted(ENV_IDS)}")
    try:
        gym.make(env_id, **kwargs)
    except TypeError as error:
        raise ValueError(f"{env_id} rejects its settings {kwargs}: {error}") from error


def _or_none(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        return None if value.lower() in ("none", "all") else convert(value)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argument type: an int >= ``minimum``, or an error naming ``what`` it is."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {number}")
        return number

    parse.__name__ = "int"
    return parse


_seed = _int_at_least(0, "a seed")


if __name__ == "__main__":
    sys.exit(main())
