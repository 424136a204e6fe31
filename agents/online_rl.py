"""Online multi-turn RL: GRPO (TRL's ``GRPOTrainer``) over whole episodes of our environments.

Each training step poses ``problems_per_step`` training problems, ``num_generations``
times each, and plays every episode to its end with the live policy (the LoRA model
being trained, served by `TransformersLLM.from_model`) through the project's rollout
engine. An episode becomes one training sequence:

- ``prompt_ids``: the opening prompt, rendered by the chat template;
- ``completion_ids``: everything after it, exactly as the chat template renders the
  whole conversation (response 1, the environment's retry prompt, response 2, ...),
  ending with the last response's end-of-turn token;
- ``env_mask``: 1 on the tokens of the model's responses (and on the end-of-turn token
  of a response the model ended itself), 0 on the environment's messages and the
  template's role tokens. TRL multiplies its loss mask by it, so only the model's own
  tokens are trained, each conditioned on the conversation it saw. A token that
  straddles a boundary counts as the environment's.

Credit assignment: every episode gets one return from the environment's per-turn
rewards ``r_1..r_T`` (1.0 for a correct answer, else 0.0; ``T`` turns were played):

- ``credit="final"``: ``r_T``, the reward of the answer the episode ends on;
- ``credit="discounted"``: ``sum_t discount**(t-1) * r_t``;
- plus ``improvement_bonus`` if ``r_T > r_1`` (wrong at first, right at the end), minus
  it if ``r_T < r_1`` (a right first answer abandoned).

Extra reward functions (TRL's signature) are added to the return. TRL then computes
GRPO's group-relative advantage of every episode from these returns: the return minus
the mean over the ``num_generations`` episodes of the same problem, divided by their
standard deviation (``scale_rewards="group"``; ``"none"`` keeps the raw difference), and
applies it to every model token of the episode.

`MultiTurnGRPO.learn` writes into ``config.output_dir``: ``online_rl_run.json`` (the
settings; another run's folder is refused), ``checkpoints/`` (Trainer checkpoints: an
interrupted run resumes), ``episodes.jsonl`` (every training episode),
``progress.json`` (tokens generated per step) and ``adapter/`` (the final PEFT adapter,
usable as the leaderboard's ``rise`` agent's ``--adapter``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rise_gym
from agents.llm.base import LLM, SamplingParams
from agents.llm.default_model import resolve_model
from agents.llm.factory import LazyLLM, make_llm
from agents.rise.agent import _changed_keys
from agents.rollout import Rollout, play_batched
from agents.sequential import SequentialRetry
from rise_gym.envs.base import MultiTurnEnv
from rise_gym.records import EpisodeRecord
from rise_gym.spaces import Conversation

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from agents.llm.transformers_backend import TransformersLLM

CREDITS = ("final", "discounted")
"""How an episode's per-turn rewards become its return (see the module docstring)."""

SCALE_REWARDS = ("group", "batch", "none")
"""TRL's ways of scaling advantages: by the group's, the batch's or no standard deviation."""

RESERVED_ENV_KWARGS = ("split", "max_turns", "stop_on_correct", "history_window")
"""Environment arguments the configuration decides (an episode must keep its whole history)."""

_DERIVED_GRPO_ARGUMENTS = (
    "output_dir",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_generations",
    "max_completion_length",
    "temperature",
    "learning_rate",
    "beta",
    "scale_rewards",
    "max_steps",
    "logging_steps",
    "save_strategy",
    "save_steps",
    "seed",
    "bf16",
    "use_cpu",
)
"""The GRPOConfig fields set from an `OnlineRLConfig` (not settable via grpo_arguments)."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class OnlineRLConfig:
    """How `MultiTurnGRPO` plays episodes, scores them and updates its LoRA policy."""

    max_turns: int = field(default=3, metadata=_help("Turns per training episode."))
    stop_on_correct: bool = field(
        default=False,
        metadata=_help(
            "End training episodes at the first correct answer. Off (the default), "
            "episodes run all max_turns turns, so keeping a right answer is trained too."
        ),
    )
    credit: str = field(
        default="final",
        metadata=_help(f"How turn rewards become the episode's return: one of {list(CREDITS)}."),
    )
    discount: float = field(
        default=1.0, metadata=_help("Per-turn discount of credit='discounted', in (0, 1].")
    )
    improvement_bonus: float = field(
        default=0.0,
        metadata=_help(
            "Added to the return when the last answer is right and the first wrong; "
            "subtracted when the first is right and the last wrong."
        ),
    )
    num_generations: int = field(
        default=8, metadata=_help("Episodes per problem (a GRPO group); at least 2.")
    )
    problems_per_step: int = field(
        default=4, metadata=_help("Distinct problems per optimizer step (per device).")
    )
    train_problems: int | None = field(
        default=None,
        metadata=_help("Use the first this many training problems (None: all of them)."),
    )
    max_steps: int = field(
        default=100, metadata=_help("Optimizer steps; a larger value continues a finished run.")
    )
    temperature: float = field(
        default=1.0, metadata=_help("Sampling temperature of the training episodes (> 0).")
    )
    max_new_tokens: int = field(default=256, metadata=_help("Tokens generated per response."))
    learning_rate: float = field(default=5e-5, metadata=_help("Peak (AdamW) learning rate."))
    beta: float = field(
        default=0.0, metadata=_help("KL penalty towards the base model (0: none, TRL's default).")
    )
    scale_rewards: str = field(
        default="group",
        metadata=_help(f"Advantage scaling, one of {list(SCALE_REWARDS)} (TRL's scale_rewards)."),
    )
    lora_rank: int = field(default=16, metadata=_help("LoRA rank r."))
    lora_alpha: int = field(default=32, metadata=_help("LoRA scaling alpha (scale alpha/r)."))
    lora_dropout: float = field(
        default=0.0,
        metadata=_help("Dropout on the LoRA input (0: training sees the sampling policy)."),
    )
    lora_target_modules: str | tuple[str, ...] = field(
        default="all-linear",
        metadata=_help("Modules given LoRA layers: 'all-linear' or names like ('q_proj',)."),
    )
    bf16: bool | None = field(
        default=None,
        metadata=_help("bfloat16 weights and autocast; None: where the GPU supports it."),
    )
    logging_steps: int = field(default=1, metadata=_help("Optimizer steps between log lines."))
    save_steps: int = field(
        default=10, metadata=_help("Optimizer steps between checkpoints (for resuming).")
    )
    seed: int = field(default=0, metadata=_help("Seed of LoRA initialisation and sampling."))
    output_dir: Path = field(
        default=Path("runs/online_rl"),
        metadata=_help("Where the settings, checkpoints, episodes and adapter go."),
    )
    grpo_arguments: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help(
            "Any other trl.GRPOConfig field, passed through as is: loss_type='dr_grpo', "
            "epsilon=0.2, gradient_checkpointing=True, ..."
        ),
    )

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        if isinstance(self.lora_target_modules, list):
            self.lora_target_modules = tuple(self.lora_target_modules)
        positive = {
            "max_turns": self.max_turns,
            "problems_per_step": self.problems_per_step,
            "max_steps": self.max_steps,
            "max_new_tokens": self.max_new_tokens,
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "logging_steps": self.logging_steps,
            "save_steps": self.save_steps,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 (a group needs a mean to compare with), "
                f"got {self.num_generations}; try 8"
            )
        if self.train_problems is not None and self.train_problems < 1:
            raise ValueError(f"train_problems must be None or >= 1, got {self.train_problems}")
        if self.credit not in CREDITS:
            raise ValueError(f"credit must be one of {list(CREDITS)}, got {self.credit!r}")
        if not 0 < self.discount <= 1:
            raise ValueError(f"discount must be in (0, 1], got {self.discount}; try 0.9")
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(
                f"scale_rewards must be one of {list(SCALE_REWARDS)}, got {self.scale_rewards!r}"
            )
        if self.temperature <= 0:
            raise ValueError(
                f"temperature must be > 0 so that a group's episodes differ, got "
                f"{self.temperature}; try 1.0"
            )
        if self.learning_rate <= 0 or self.beta < 0:
            raise ValueError("learning_rate must be > 0 and beta >= 0")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        derived = sorted(set(self.grpo_arguments) & set(_DERIVED_GRPO_ARGUMENTS))
        if derived:
            raise ValueError(
                f"grpo_arguments sets {derived}, which OnlineRLConfig sets from its own "
                "fields; set those fields instead (e.g. learning_rate, problems_per_step)"
            )


class MultiTurnGRPO(SequentialRetry):
    """A model trained online with GRPO on whole multi-turn episodes (see the module).

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

        ``max_steps`` may grow (more steps continue a run); a setting absent from the
        record (added by a later release) counts as its default.
        """
        settings = self._settings(env_id, env_kwargs, self.config)
        record = self.config.output_dir / "online_rl_run.json"
        if not record.exists():
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(settings, indent=2) + "\n")
            return
        before = json.loads(record.read_text())
        defaults = self._settings(env_id, env_kwargs, OnlineRLConfig())["online_rl"]
        before["online_rl"] = {**defaults, **before.get("online_rl", {})}
        changed = sorted(_changed_keys(before, settings))
        if changed:
            raise ValueError(
                f"{self.config.output_dir} holds an online RL run with other settings "
                f"({', '.join(changed)}); choose another output_dir, or delete the folder "
                "to start over"
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
        bf16 = _bf16(config.bf16)
        env_kwargs = {
            **env_kwargs,
            "split": "train",
            "max_turns": config.max_turns,
            "stop_on_correct": config.stop_on_correct,
            "history_window": None,
        }
        dataset, openings = opening_dataset(_make_env(env_id, env_kwargs), config.train_problems)
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
            args=GRPOConfig(**{**_grpo_arguments(config, bf16), **config.grpo_arguments}),
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


class EpisodeRollout:
    """TRL's ``rollout_func``: one multi-turn episode per prompt it is given.

    TRL's sampler repeats every problem ``num_generations`` times in a row, so the
    prompts it passes already hold each group; every entry gets its own episode.
    """

    def __init__(
        self,
        agent: MultiTurnGRPO,
        env_id: str,
        env_kwargs: dict[str, Any],
        openings: dict[str, int],
        progress: Progress,
    ):
        """Bind the rollouts to an agent, an environment and the problems' openings.

        Args:
            agent: The agent whose configuration and policy play.
            env_id: The environment id.
            env_kwargs: Every ``gym.make`` argument of the training episodes.
            openings: Problem index of each opening prompt (`opening_key`).
            progress: Where the generated tokens of each step are recorded.
        """
        self.agent = agent
        self.env_id = env_id
        self.env_kwargs = env_kwargs
        self.openings = openings
        self.progress = progress

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        """Play an episode per prompt with the live policy; return TRL's rollout dict.

        Returns:
            ``prompt_ids``, ``completion_ids``, ``env_mask`` and ``logprobs`` (None:
            TRL computes them) per episode, and, for the reward functions,
            ``episode_return``, ``turn_correct``, ``conversation`` and
            ``generated_tokens``.
        """
        config = self.agent.config
        model = trainer.accelerator.unwrap_model(trainer.model)
        tokenizer = trainer.processing_class
        step = trainer.state.global_step
        params = replace(self.agent.params, temperature=config.temperature, seed=config.seed + step)
        policy = self.agent.policy(model, tokenizer)
        player = SequentialRetry(policy, params, name=self.agent.name)
        indices = [self._index(prompt) for prompt in prompts]
        output = config.output_dir / "episodes.jsonl" if trainer.is_world_process_zero() else None
        with _generation_mode(model):
            records = play_groups(
                self.env_id,
                self.env_kwargs,
                player,
                indices,
                seed=config.seed,
                output=output,
                settings={"global_step": step},
            )
        env = _make_env(self.env_id, self.env_kwargs)
        conversations = [final_conversation(env, record) for record in records]
        sequences = [
            episode_sequence(
                tokenizer, conversation, _stopped(record), end_token_ids=policy.eos_token_ids
            )
            for conversation, record in zip(conversations, records)
        ]
        tokens = [sum(turn.generated_tokens for turn in record.turns) for record in records]
        if trainer.is_world_process_zero():
            self.progress.record(step, sum(tokens))
        correct = [[turn.correct for turn in record.turns] for record in records]
        return {
            "prompt_ids": [s.prompt_ids for s in sequences],
            "completion_ids": [s.completion_ids for s in sequences],
            "env_mask": [s.env_mask for s in sequences],
            "logprobs": None,
            "episode_return": [
                episode_return(
                    c, config.credit, discount=config.discount, bonus=config.improvement_bonus
                )
                for c in correct
            ],
            "turn_correct": correct,
            "conversation": conversations,
            "generated_tokens": tokens,
        }

    def _index(self, prompt: Conversation) -> int:
        try:
            return self.openings[opening_key(prompt)]
        except KeyError:
            raise ValueError(
                f"the trainer passed a prompt that opens no training problem of "
                f"{self.env_id}: {prompt!r}; train on opening_dataset's prompts"
            ) from None


@dataclass
class EpisodeSequence:
    """One episode as a training sequence (see the module docstring).

    Attributes:
        prompt_ids: The opening prompt's tokens.
        completion_ids: The rest of the conversation's tokens, up to the last model token.
        env_mask: 1 for each model token of ``completion_ids``, 0 for the others.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]


def episode_sequence(
    tokenizer: PreTrainedTokenizerBase,
    conversation: Conversation,
    stopped: Sequence[bool],
    *,
    end_token_ids: Sequence[int],
) -> EpisodeSequence:
    """The chat template's tokens of a whole episode, split and masked for training.

    Args:
        tokenizer: A fast tokenizer with a chat template.
        conversation: The opening messages, then assistant and user messages in turn,
            ending with an assistant message.
        stopped: For each assistant message, whether the model ended it itself (its
            end-of-turn token is then a model token).
        end_token_ids: The model's end-of-turn tokens.

    Returns:
        The sequence; ``prompt_ids + completion_ids`` is a prefix of the tokens of the
        rendered conversation, missing only the template's text after the last response's
        end token.

    Raises:
        ValueError: The tokenizer is not fast, ``stopped`` does not match the responses,
            or the template does not render earlier turns verbatim (see `response_spans`).
    """
    if not tokenizer.is_fast:
        raise ValueError("episode_sequence needs a fast tokenizer (token offsets)")
    text = _render(tokenizer, conversation, reply=False)
    spans = response_spans(tokenizer, conversation, text)
    if not spans or len(stopped) != len(spans):
        raise ValueError(
            f"the conversation has {len(spans)} responses but stopped has {len(stopped)} flags"
        )
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    mask = [0] * len(ids)
    for (start, end), ended in zip(spans, stopped):
        inside = [i for i, (first, _) in enumerate(offsets) if start <= first < end]
        for i in inside:
            mask[i] = 1
        after = next((i for i, (first, _) in enumerate(offsets) if first >= end), None)
        if ended and after is not None and offsets[after][0] == end and ids[after] in end_token_ids:
            mask[after] = 1
    prompt_length = sum(first < spans[0][0] for first, _ in offsets)
    model_tokens = [i for i, flag in enumerate(mask) if flag]
    stop = model_tokens[-1] + 1 if model_tokens else len(ids)
    return EpisodeSequence(ids[:prompt_length], ids[prompt_length:stop], mask[prompt_length:stop])


def response_spans(
    tokenizer: PreTrainedTokenizerBase, conversation: Conversation, text: str
) -> list[tuple[int, int]]:
    """Character spans of the assistant messages' contents in ``text``, the rendering.

    Raises:
        ValueError: The rendering of the conversation before a response, ready for the
            reply, is not a prefix of ``text`` followed by the response verbatim (a
            template that rewrites or drops earlier turns).
    """
    spans = []
    for position, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, conversation[:position], reply=True)
        if not text.startswith(before + message["content"]):
            raise ValueError(
                f"the chat template of {tokenizer.name_or_path!r} does not render "
                f"message {position} after the earlier turns verbatim; online multi-turn "
                "RL needs a template that keeps every earlier turn as it was"
            )
        spans.append((len(before), len(before) + len(message["content"])))
    return spans


def episode_return(
    turn_correct: Sequence[bool],
    credit: str = "final",
    *,
    discount: float = 1.0,
    bonus: float = 0.0,
) -> float:
    """An episode's return from its per-turn rewards (1.0 correct, else 0.0).

    >>> episode_return([False, True], "final", bonus=0.5)
    1.5
    >>> episode_return([True, False, True], "discounted", discount=0.5)
    1.25

    Raises:
        ValueError: No turn was played, or ``credit`` is unknown.
    """
    if not turn_correct:
        raise ValueError("an episode needs at least one turn to have a return")
    rewards = [1.0 if correct else 0.0 for correct in turn_correct]
    if credit == "final":
        value = rewards[-1]
    elif credit == "discounted":
        value = sum(discount**turn * reward for turn, reward in enumerate(rewards))
    else:
        raise ValueError(f"credit must be one of {list(CREDITS)}, got {credit!r}")
    if rewards[-1] > rewards[0]:
        value += bonus
    elif rewards[-1] < rewards[0]:
        value -= bonus
    return value


def env_return(
    completions: list[Any],
    episode_return: list[float],
    turn_correct: list[list[bool]],
    log_metric: Callable[[str, float], None] | None = None,
    **_: Any,
) -> list[float | None]:
    """The TRL reward function of the environment: each episode's return.

    Also logs the share of episodes right at the first and at the last turn.
    """
    if log_metric is not None:
        log_metric("episodes/first_correct", sum(c[0] for c in turn_correct) / len(turn_correct))
        log_metric("episodes/last_correct", sum(c[-1] for c in turn_correct) / len(turn_correct))
    return list(episode_return)


def play_groups(
    env_id: str,
    env_kwargs: dict[str, Any],
    agent: SequentialRetry,
    indices: Sequence[int],
    *,
    seed: int,
    output: Path | None = None,
    settings: dict[str, Any] | None = None,
) -> list[EpisodeRecord]:
    """Play one episode per entry of ``indices`` (repeats are independent episodes).

    The n-th occurrences of the problems form the n-th `Rollout`, and all of them play
    together in lock-step turns (`play_batched`), one batched call per turn.

    Returns:
        The records, in the order of ``indices``.
    """
    seen: Counter[int] = Counter()
    copies = []
    for index in indices:
        copies.append(seen[index])
        seen[index] += 1
    rollouts = [
        Rollout(
            env_id,
            agent,
            env_kwargs,
            seed,
            sorted(index for index, c in zip(indices, copies) if c == copy),
            {},
            output,
            {**(settings or {}), "copy": copy},
        )
        for copy in range(max(copies, default=-1) + 1)
    ]
    play_batched(rollouts, progress=False)
    return [rollouts[copy].finished[index] for index, copy in zip(indices, copies)]


def final_conversation(env: MultiTurnEnv, record: EpisodeRecord) -> Conversation:
    """The whole conversation of a recorded episode, replayed on ``env``.

    With ``history_window=None`` the environment's last observation is the opening
    prompt, then every response and retry prompt, ending with the last response.
    """
    if env.history_window is not None:
        raise ValueError("final_conversation needs an environment with history_window=None")
    observation, _ = env.reset(seed=record.seed, options={"index": record.index})
    for turn in record.turns:
        observation, *_ = env.step(turn.response)
    return observation


def opening_dataset(env: MultiTurnEnv, limit: int | None) -> tuple[Any, dict[str, int]]:
    """TRL's training dataset (one ``prompt`` per problem) and each opening's problem index.

    Problems whose opening repeats an earlier one are left out (a prompt must name one
    problem).
    """
    from datasets import Dataset

    openings: dict[str, int] = {}
    prompts = []
    for index in range(min(limit or len(env.problems), len(env.problems))):
        observation, _ = env.reset(options={"index": index})
        key = opening_key(observation)
        if key not in openings:
            openings[key] = index
            prompts.append({"prompt": observation})
    return Dataset.from_list(prompts), openings


def opening_key(prompt: Conversation) -> str:
    """The key under which a prompt's problem is found."""
    return json.dumps(list(prompt), sort_keys=True)


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


@contextmanager
def _generation_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) while sampling, then the previous mode again."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _render(tokenizer: PreTrainedTokenizerBase, conversation: Conversation, *, reply: bool) -> str:
    text = tokenizer.apply_chat_template(
        list(conversation), tokenize=False, add_generation_prompt=reply
    )
    assert isinstance(text, str)
    return text


def _stopped(record: EpisodeRecord) -> list[bool]:
    """Whether the model ended each response itself (not cut at max_new_tokens)."""
    return [turn.metadata.get("finish_reason") != "length" for turn in record.turns]


def _make_env(env_id: str, env_kwargs: dict[str, Any]) -> MultiTurnEnv:
    env = rise_gym.make(env_id, **env_kwargs).unwrapped
    if not isinstance(env, MultiTurnEnv):
        raise TypeError(f"{env_id} is not a rise-gym multi-turn environment")
    return env


def _last_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = output_dir / "checkpoints"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def _bf16(setting: bool | None) -> bool:
    import torch

    if setting is not None:
        return setting
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _grpo_arguments(config: OnlineRLConfig, bf16: bool) -> dict[str, Any]:
    """The GRPOConfig fields an `OnlineRLConfig` decides (`_DERIVED_GRPO_ARGUMENTS`)."""
    from agents.rise.train import cpu_only

    return dict(
        output_dir=str(config.output_dir / "checkpoints"),
        per_device_train_batch_size=config.problems_per_step * config.num_generations,
        gradient_accumulation_steps=1,
        num_generations=config.num_generations,
        max_completion_length=config.max_new_tokens,
        temperature=config.temperature,
        learning_rate=config.learning_rate,
        beta=config.beta,
        scale_rewards=config.scale_rewards,
        max_steps=config.max_steps,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        seed=config.seed,
        bf16=bf16,
        use_cpu=cpu_only(),
        report_to="none",
    )
