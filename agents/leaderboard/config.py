"""What a leaderboard run evaluates, and the folder its results live in."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from agents.leaderboard.roster import AGENT_KINDS
from agents.llm.base import DTYPES, LLM, auto_dtype
from agents.llm.default_model import DEFAULT_MODEL, folder_version, resolve_adapter
from agents.llm.factory import BACKEND_PACKAGES, BACKENDS, make_llm, require
from agents.stopping import load_learned_rule, read_learned_rule_settings
from rise_gym.envs.registration import ENV_IDS
from rise_gym.records import fingerprint
from rise_gym.selection import SelectionRule

DEFAULT_ENVS = ("RISE-Arithmetic-v0",)
DEFAULT_AGENTS = ("sequential", "parallel", "self-refine")

_RUN_ONLY = ("envs", "agents", "stopping_policy", "batch_size", "output_dir", "ray_address")
"""Fields that do not change any episode's outcome, so they stay out of the run folder's key."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class LeaderboardConfig:
    """Agents x environments evaluated at equal compute: k turns vs k samples vs self-refine.

    The defaults are the embedded CPU leaderboard: the default model on easy arithmetic
    and a slice of GSM8K, about 7 minutes on 2 CPU cores (measured: 403 s).
    """

    model: str | None = field(
        default=None,
        metadata=_help(
            "Hugging Face id, local folder or served model name (None: the offline default "
            "model SmolLM2-135M-Instruct, or with 'openai' the server's first model)."
        ),
    )
    adapter: str | None = field(
        default=None, metadata=_help("PEFT adapter of the 'rise' agent (a RISE run's output).")
    )
    backend: str = field(default="transformers", metadata=_help(f"One of {list(BACKENDS)}."))
    base_url: str | None = field(
        default=None, metadata=_help("Server URL of the 'openai' back end.")
    )
    dtype: str = field(
        default="auto",
        metadata=_help(
            f"Weights' dtype, one of {list(DTYPES)} (auto: 16-bit on GPU; on a CPU, "
            "bfloat16 where it is native (AVX512-BF16 or AMX: about 2x faster than float32, "
            "with slightly different answers), else float32). Not with 'openai'."
        ),
    )
    envs: tuple[str, ...] = field(default=DEFAULT_ENVS, metadata=_help("Environment ids."))
    agents: tuple[str, ...] = field(
        default=DEFAULT_AGENTS, metadata=_help(f"Agents, from {list(AGENT_KINDS)}.")
    )
    num_problems: int = field(default=16, metadata=_help("Problems per environment."))
    max_turns: int = field(
        default=5, metadata=_help("k: turns of sequential agents, samples of 'parallel'.")
    )
    seed: int = field(default=0, metadata=_help("Seed of the episodes and of sampling."))
    max_new_tokens: int = field(default=96, metadata=_help("Tokens generated per response."))
    temperature: float = field(
        default=0.0, metadata=_help("Temperature of the turn-by-turn agents (0 = greedy).")
    )
    parallel_temperature: float = field(
        default=0.7, metadata=_help("Temperature of the parallel samples.")
    )
    difficulty: int = field(default=1, metadata=_help("Level of the arithmetic environment."))
    history_window: int | None = field(
        default=2, metadata=_help("Earlier attempts kept in each prompt (None keeps all).")
    )
    env_args: dict[str, Any] = field(
        default_factory=dict, metadata=_help("Extra keyword arguments for every gym.make.")
    )
    stopping_policy: Path | None = field(
        default=None,
        metadata=_help(
            "Folder of a learned selection rule, an answer scorer (AnswerScorer.save) or a "
            "stopping policy (StoppingPolicy.save); `python benchmarks/stopping.py` writes "
            "both under runs/stopping: its accuracy (stop@tk) and average turns are reported "
            "beside m1@tk for the turn-by-turn agents."
        ),
    )
    batch_size: int | None = field(
        default=None, metadata=_help("Most prompts per LLM call (None: a whole turn).")
    )
    output_dir: Path = field(
        default=Path("runs/leaderboard"), metadata=_help("Where run folders are created.")
    )
    ray_address: str | None = field(
        default=None,
        metadata=_help(
            "Play the episodes on a Ray cluster, one actor per GPU (per CPU without GPUs), "
            "each with its own model: 'auto' (the cluster of `ray start`), "
            "'ray://HOST:10001' or 'local' (a new one here); the same episodes files. "
            "Needs the ray extra. None: play in this process."
        ),
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        object.__setattr__(self, "envs", tuple(self.envs))
        object.__setattr__(self, "agents", tuple(self.agents))
        _check_choices("environment id", self.envs, ENV_IDS)
        _check_choices("agent", self.agents, AGENT_KINDS)
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown back end {self.backend!r}; choose one of {list(BACKENDS)}")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("the 'openai' back end needs base_url, e.g. http://localhost:8000/v1")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {list(DTYPES)}")
        if self.backend == "openai" and self.dtype != "auto":
            raise ValueError("the 'openai' back end's server decides the dtype; leave it 'auto'")
        if ("rise" in self.agents) != (self.adapter is not None):
            raise ValueError(
                "the 'rise' agent and adapter go together: pass an adapter with agent 'rise' "
                "(the other agents always use the base model)"
            )
        if self.adapter is not None and self.backend != "openai":
            resolve_adapter(self.adapter)  # raises ModelNotFound for a folder without one
        for name in ("num_problems", "max_turns", "max_new_tokens", "difficulty"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if "parallel" in self.agents and self.max_turns < 2:
            raise ValueError("the 'parallel' agent needs max_turns (its k) >= 2")
        if self.base_url is not None and self.backend != "openai":
            raise ValueError(f"base_url is for the 'openai' back end only, not {self.backend!r}")
        finite = math.isfinite(self.temperature) and math.isfinite(self.parallel_temperature)
        if not finite or self.temperature < 0 or self.parallel_temperature <= 0:
            raise ValueError(
                "temperature must be >= 0 and parallel_temperature > 0 (both finite), got "
                f"{self.temperature} and {self.parallel_temperature}"
            )
        if self.ray_address is not None and not self.ray_address.strip():
            raise ValueError("ray_address is empty; pass 'auto', 'ray://HOST:10001' or 'local'")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}")
        if self.stopping_policy is not None:
            object.__setattr__(self, "stopping_policy", Path(self.stopping_policy))
            try:
                read_learned_rule_settings(self.stopping_policy)
            except FileNotFoundError as error:
                raise ValueError(str(error)) from error

    def check_dependencies(self, *, plot: bool = False) -> None:
        """Check, before any work, that the packages this run needs are installed.

        Args:
            plot: Whether the run draws the leaderboard's plot (matplotlib).

        Raises:
            MissingDependency: a package is missing; the message names the extra.
        """
        needs = {f"the {self.backend} back end": BACKEND_PACKAGES[self.backend]}
        if self.adapter is not None and self.backend == "transformers":
            needs["the 'rise' agent's adapter"] = ("peft",)
        if self.stopping_policy is not None:
            kind = read_learned_rule_settings(self.stopping_policy)["kind"]
            if kind == "stopping_policy":
                needs["a stopping policy"] = ("torch", "stable_baselines3")
        if plot:
            needs["the leaderboard's plot"] = ("matplotlib",)
        if self.ray_address is not None:
            needs["ray_address"] = ("ray",)
        for purpose, packages in needs.items():
            require(*packages, purpose=purpose)

    def with_served_model(self) -> LeaderboardConfig:
        """This configuration; with 'openai', ``model`` is set to what the server reports.

        The server is asked (``GET /models``), so the results are keyed by the model it
        serves, not by a name it may ignore. Other back ends return ``self``.

        Raises:
            ServerError: the server cannot be reached.
            ModelNotFound: the server does not serve ``model``.
        """
        if self.backend != "openai":
            return self
        llm = self.build_llm()
        llm.close()
        return replace(self, model=llm.name)

    def build_llm(self) -> LLM:
        """Start the back end serving ``model`` with ``dtype``."""
        return make_llm(self.model, backend=self.backend, base_url=self.base_url, dtype=self.dtype)

    def load_stopping_policy(self) -> SelectionRule | None:
        """The learned rule in ``stopping_policy`` (a policy imports torch), or None."""
        return None if self.stopping_policy is None else load_learned_rule(self.stopping_policy)

    def env_kwargs(self, env_id: str) -> dict[str, Any]:
        """Keyword arguments for ``gym.make(env_id)`` (the turn settings come from evaluate)."""
        kwargs: dict[str, Any] = {"history_window": self.history_window}
        if ENV_IDS[env_id][0].endswith(":ArithmeticEnv"):
            kwargs["difficulty"] = self.difficulty
        return {**kwargs, **self.env_args}

    @property
    def weights_dtype(self) -> str:
        """``dtype``, with the transformers back end's ``"auto"`` resolved (`auto_dtype`).

        Runs record this one, so episodes of float32 and bfloat16 weights never share a
        run folder, whatever machine played them.
        """
        if self.dtype == "auto" and self.backend == "transformers":
            return auto_dtype()
        return self.dtype

    @property
    def model_name(self) -> str:
        """The model's name in reports: ``model``, or what None stands for."""
        return self.model or (DEFAULT_MODEL if self.backend != "openai" else "served-model")

    def settings(self) -> dict[str, Any]:
        """The fields that decide episode outcomes.

        ``model`` is given as `model_name`, and a local model folder or ``adapter`` as
        its absolute path and version, so one saved again in place starts a new run
        folder. With 'openai', `with_served_model` first puts the server's model here.
        """
        values = {**asdict(self), "model": self.model_name, "dtype": self.weights_dtype}
        if self.backend != "openai":
            local = Path(self.model_name).expanduser()
            if self.model not in (None, DEFAULT_MODEL) and local.is_dir():
                values["model"] = _versioned(local.resolve(), folder_version(local))
            if self.adapter is not None:
                values["adapter"] = _versioned(*resolve_adapter(self.adapter))
        return {f.name: values[f.name] for f in fields(self) if f.name not in _RUN_ONLY}

    def episode_settings(self) -> dict[str, Any]:
        """`settings` that each episode records (all but ``num_problems``)."""
        return {name: value for name, value in self.settings().items() if name != "num_problems"}

    def run_folder(self) -> Path:
        """``output_dir/<model>-<hash of settings()>``: equal settings share a folder."""
        digest = hashlib.sha256(json.dumps(fingerprint(self.settings())).encode()).hexdigest()
        model = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(self.model_name).name)
        return self.output_dir / f"{model}-{digest[:10]}"


def _versioned(folder: Path, version: int) -> str:
    return f"{folder} (version {version})"


def _check_choices(kind: str, chosen: tuple[str, ...], valid: dict[str, Any]) -> None:
    if not chosen:
        raise ValueError(f"choose at least one {kind} from {sorted(valid)}")
    for name in chosen:
        if name not in valid:
            raise ValueError(f"unknown {kind} {name!r}; choose from {sorted(valid)}")
