"""`MultiTurnGRPO`: the agent that trains online, its run folder, progress and GRPO trainer."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.llm.base import LLM, SamplingParams
from agents.llm.default_model import resolve_model
from agents.llm.factory import LazyLLM, make_llm
from agents.online_rl.config import (
    RESERVED_ENV_KWARGS,
    OnlineRLConfig,
    grpo_arguments,
    use_bf16,
)
from agents.online_rl.rollout import EpisodeRollout, env_return, make_env, opening_dataset
from agents.run_folder import claim_run_folder
from agents.sequential import SequentialRetry

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from agents.llm.transformers_backend import TransformersLLM


class MultiTurnGRPO(SequentialRetry):
    """A model trained online with GRPO on whole multi-turn episodes (see `agents.online_rl`).

    As an agent it answers like `SequentialRetry` with its adapter (after `learn`, the
    trained one), so the leaderboard compares it with the other agents.

    Attributes:
        base_model: The resolved folder (or hub id) of the weights the adapter is on.
        config: The configuration.
        reward_funcs: Extra TRL reward functions, added to the environment's return.
        generated_tokens: Tokens the training episodes generated (after `learn`).
    """

    name = "online-rl"

    def __init__(
        self,
        model: str | None = None,
        config: OnlineRLConfig | None = None,
        *,
        reward_funcs: Sequence[Callable[..., list[float | None]]] = (),
        llm: LLM | None = None,
        params: SamplingParams | None = None,
        name: str | None = None,
    ):
        """Create the agent.

        Args:
            model: The base model: None for the offline default model, a local folder
                or a hub id (see `resolve_model`).
            config: The configuration.
            reward_funcs: TRL reward functions (``f(prompts, completions, **kwargs)``
                returning one float per episode); they also receive ``conversation``,
                ``turn_correct`` and ``episode_return`` per episode.
            llm: The back end of the agent's answers (default: ``model`` on the
                transformers back end, loaded on first use).
            params: Sampling parameters of the agent's answers (default: greedy).
            name: Overrides the default name.
        """
        config = config or OnlineRLConfig()
        self.base_model = resolve_model(model)
        llm = llm or LazyLLM(partial(make_llm, self.base_model))
        super().__init__(llm, params or SamplingParams(max_new_tokens=config.max_new_tokens))
        if name is not None:
            self.name = name
        self.config = config
        self.reward_funcs = tuple(reward_funcs)
        self.generated_tokens = 0
        self._policy: TransformersLLM | None = None

    def learn(self, env_id: str, env_kwargs: dict[str, Any] | None = None) -> MultiTurnGRPO:
        """Train on ``env_id``'s train split until ``config.max_steps`` steps are done.

        Args:
            env_id: A registered environment id, e.g. ``"RISE-Arithmetic-v0"``.
            env_kwargs: Extra ``gym.make`` arguments (not those in `RESERVED_ENV_KWARGS`).

        Returns:
            The agent itself, now answering with the trained adapter.

        Raises:
            ValueError: ``env_kwargs`` sets a reserved argument, or ``output_dir`` holds
                a run of other settings.
        """
        env_kwargs = dict(env_kwargs or {})
        reserved = sorted(set(env_kwargs) & set(RESERVED_ENV_KWARGS))
        if reserved:
            raise ValueError(
                f"env_kwargs sets {reserved}; the configuration decides them (max_turns, "
                "stop_on_correct), and training needs split='train' and the whole history"
            )
        self._claim_output_dir(env_id, env_kwargs)
        progress = Progress(self.config.output_dir / "progress.json")
        if progress.finished_steps < self.config.max_steps:
            trainer = self._trainer(env_id, env_kwargs, progress)
            trainer.train(resume_from_checkpoint=_last_checkpoint(self.config.output_dir))
            trainer.save_model(str(self.config.output_dir / "adapter"))
            progress.finish(trainer.state.global_step)
        self.generated_tokens = progress.generated_tokens
        self.adapter = str(self.config.output_dir / "adapter")
        return self

    # ---- the steps ---------------------------------------------------------------

    def _claim_output_dir(self, env_id: str, env_kwargs: dict[str, Any]) -> None:
        """Record the run's settings in ``output_dir``, or refuse a folder of another run.

        ``max_steps`` may grow: more steps continue a run (see `claim_run_folder`).
        """
        defaults = self._settings(env_id, env_kwargs, OnlineRLConfig())
        claim_run_folder(
            self.config.output_dir / "online_rl_run.json",
            self._settings(env_id, env_kwargs, self.config),
            {"online_rl": defaults["online_rl"]},
            kind="an online RL run",
        )

    def _settings(
        self, env_id: str, env_kwargs: dict[str, Any], config: OnlineRLConfig
    ) -> dict[str, Any]:
        """What decides a run's results, as JSON values (see `_claim_output_dir`)."""
        settings = {
            "env_id": env_id,
            "env_kwargs": env_kwargs,
            "base_model": self.base_model,
            "online_rl": {
                k: v
                for k, v in asdict(config).items()
                if k not in ("max_steps", "output_dir", "logging_steps", "save_steps")
            },
            "reward_funcs": [getattr(f, "__name__", str(f)) for f in self.reward_funcs],
        }
        return json.loads(json.dumps(settings, default=str))

    def _trainer(self, env_id: str, env_kwargs: dict[str, Any], progress: Progress) -> Any:
        """TRL's GRPOTrainer on the opening prompts, playing episodes in its rollouts."""
        import torch
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
        from trl import GRPOConfig, GRPOTrainer

        config = self.config
        bf16 = use_bf16(config.bf16)
        env_kwargs = {
            **env_kwargs,
            "split": "train",
            "max_turns": config.max_turns,
            "stop_on_correct": config.stop_on_correct,
            "history_window": None,
        }
        dataset, openings = opening_dataset(make_env(env_id, env_kwargs), config.train_problems)
        set_seed(config.seed)
        model = AutoModelForCausalLM.from_pretrained(
            self.base_model, dtype=torch.bfloat16 if bf16 else torch.float32
        )
        targets = config.lora_target_modules
        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=targets if isinstance(targets, str) else list(targets),
            task_type="CAUSAL_LM",
        )
        rollout = EpisodeRollout(self, env_id, env_kwargs, openings, progress)
        return GRPOTrainer(
            model=model,
            reward_funcs=[env_return, *self.reward_funcs],
            args=GRPOConfig(**{**grpo_arguments(config, bf16), **config.grpo_arguments}),
            train_dataset=dataset,
            processing_class=AutoTokenizer.from_pretrained(self.base_model, padding_side="left"),
            peft_config=lora,
            rollout_func=rollout,
        )

    def policy(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> TransformersLLM:
        """The back end serving the live ``model``, its prefix cache emptied.

        Called before each rollout: the weights may have changed since the last one.
        """
        from agents.llm.transformers_backend import TransformersLLM

        if self._policy is None or self._policy.model is not model:
            self._policy = TransformersLLM.from_model(model, tokenizer, name=f"{self.name}-policy")
        self._policy.clear_prefix_cache()
        return self._policy


class Progress:
    """Tokens generated at each optimizer step, and the steps a finished `learn` reached.

    A step replayed after resuming overwrites its count, so the total counts the tokens
    behind the trained adapter once.
    """

    def __init__(self, path: Path):
        """Read ``path`` if it exists."""
        self.path = path
        data = json.loads(path.read_text()) if path.exists() else {}
        self.per_step: dict[str, int] = data.get("generated_tokens_per_step", {})
        self.finished_steps: int = data.get("finished_steps", 0)

    @property
    def generated_tokens(self) -> int:
        """Tokens generated by the rollouts of the steps done."""
        return sum(self.per_step.values())

    def record(self, step: int, tokens: int) -> None:
        """Store the tokens the rollout at ``step`` generated."""
        self.per_step[str(step)] = tokens
        self._write()

    def finish(self, steps: int) -> None:
        """Mark training done at ``steps`` optimizer steps."""
        self.finished_steps = steps
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "generated_tokens": self.generated_tokens,
            "generated_tokens_per_step": self.per_step,
            "finished_steps": self.finished_steps,
        }
        self.path.write_text(json.dumps(data, indent=2) + "\n")


def _last_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = output_dir / "checkpoints"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None
