"""The RISE agent: collect multi-turn rollouts, relabel, train with RWR, repeat."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from functools import partial
from itertools import takewhile
from pathlib import Path
from typing import Any

import gymnasium as gym

from agents.evaluate import evaluate
from agents.llm.base import LLM, SamplingParams
from agents.llm.factory import LazyLLM, make_llm, require
from agents.rise.config import RISEConfig
from agents.rise.examples import WeightedExample
from agents.rise.relabel import (
    Candidate,
    VisitedState,
    degrades,
    pick_best,
    replay_states,
    training_actions,
)
from agents.rise.rwr import rwr_weight
from agents.rise.train import TrainingConfig, cpu_only, train_rwr
from agents.rollout import plan_rollout
from agents.run_folder import claim_run_folder
from agents.sequential import SequentialRetry
from rise_gym.envs.base import MultiTurnEnv
from rise_gym.spaces import Conversation

logger = logging.getLogger(__name__)

TOKENS_FILE = "generated_tokens.json"


class RISEAgent(SequentialRetry):
    """A model that improves its answer over turns, trained with RISE.

    As an agent it answers like `SequentialRetry` with its current adapter, so the
    leaderboard compares it directly with the other agents. `learn` runs the optional
    boost phase and then ``config.iterations`` RISE iterations; each writes, under
    ``config.output_dir``, its rollouts and relabelled states (JSONL), its adapter
    (standard PEFT format) and its held-out metrics (JSON). An interrupted `learn`
    resumes from the last finished step.

    Training data is aggregated: every iteration trains a fresh adapter from the base
    model on the boost examples and on the examples of all iterations so far (each
    identical state-action pair once). Iteration ``i`` rolls out with seed
    ``config.seed + i``, so each iteration draws its own sample of training problems.

    Started by ``accelerate launch`` (or torchrun) on several processes, every process
    trains (data parallel); the main process alone rolls out, relabels and evaluates,
    and the others read its files (`main_process_first`).

    Attributes:
        generated_tokens: Tokens generated to make the training data after `learn`:
            the rollouts and the self-distillation samples of every iteration (an
            expert's samples too), as written to each iteration's
            ``generated_tokens.json``; comparable with `MultiTurnGRPO.generated_tokens`.
    """

    name = "rise"

    def __init__(
        self,
        llm: LLM,
        base_model: str | Path,
        config: RISEConfig | None = None,
        training: TrainingConfig | None = None,
        *,
        params: SamplingParams | None = None,
        expert: LLM | None = None,
        collector: LLM | None = None,
        adapter: str | None = None,
        load_model: Callable[[str], LLM] | None = None,
        name: str | None = None,
    ):
        """Create the agent.

        Args:
            llm: The back end used for rollouts and answers; it must accept adapters.
            base_model: Path (or hub id) of the weights the adapters are trained on;
                the same model ``llm`` serves.
            config: The RISE configuration.
            training: The RWR training configuration (LoRA by default).
            params: Sampling parameters of the agent's answers (default: greedy).
            expert: The expert LLM for ``improvement="expert"`` (distillation).
            collector: Weak-to-strong: another model that rolls out on the training
                problems (and draws the self-distillation samples) in every iteration;
                its states and actions train adapters of ``base_model``. None: ``llm``
                with the current adapter (on-policy).
            adapter: Start from this adapter (e.g. a finished run's).
            load_model: With full fine-tuning (``training.use_lora=False``), builds the
                back end serving a trained model folder (default: `make_llm`'s, loaded
                on first use, so Ray workers can rebuild it).
            name: Overrides the default name.
        """
        config = config or RISEConfig()
        if config.ray_address is not None:
            require("ray", purpose=f"ray_address={config.ray_address!r}")
        if config.improvement == "expert" and expert is None:
            raise ValueError("improvement='expert' needs an expert LLM: pass expert=make_llm(...)")
        params = params or SamplingParams(max_new_tokens=config.max_new_tokens)
        super().__init__(llm, params, adapter=adapter, name=name)
        self.base_model = str(base_model)
        self.config = config
        self.training = training or TrainingConfig()
        self.expert = expert
        self.collector = collector
        self.load_model = load_model or (lambda folder: LazyLLM(partial(make_llm, folder)))
        self.history: list[dict[str, Any]] = []
        self.generated_tokens = 0

    def learn(self, env_id: str, env_kwargs: dict[str, Any] | None = None) -> RISEAgent:
        """Boost, then run the RISE iterations on ``env_id``'s train split.

        Args:
            env_id: A registered environment id; its ``train`` split is used for
                collection and its ``test`` split for evaluation.
            env_kwargs: Extra keyword arguments for ``gym.make`` (not split/max_turns).

        Returns:
            The agent itself, now answering with the last iteration's adapter.
        """
        env_kwargs = dict(env_kwargs or {})
        with main_process_first():
            self._claim_output_dir(env_id, env_kwargs)
        boost_examples: list[WeightedExample] = []
        if self.config.boost:
            boost_dir = self.config.boost_dir or self.config.output_dir / "boost"
            boost_examples = self._boost_examples(env_id, env_kwargs)
            self._train(boost_examples, boost_dir)
            self._evaluate(env_id, env_kwargs, boost_dir)
        states: list[VisitedState] = []
        self.generated_tokens = 0
        for iteration in range(1, self.config.iterations + 1):
            folder = self.config.output_dir / f"iteration-{iteration}"
            with main_process_first():
                seed = self.config.seed + iteration
                states += self._collect(env_id, env_kwargs, folder, seed=seed)
            self.generated_tokens += sum(iteration_tokens(folder).values())
            self._train(boost_examples + self._weighted_examples(states), folder)
            self._evaluate(env_id, env_kwargs, folder)
        return self

    # ---- the steps ---------------------------------------------------------------

    def _claim_output_dir(self, env_id: str, env_kwargs: dict[str, Any]) -> None:
        """Record what this run is in ``output_dir``, or refuse a folder of another run.

        ``iterations`` may grow: more iterations continue a run (see `claim_run_folder`).
        """
        defaults = self._settings(env_id, env_kwargs, RISEConfig(), TrainingConfig())
        claim_run_folder(
            self.config.output_dir / "rise_run.json",
            self._settings(env_id, env_kwargs, self.config, self.training),
            {section: defaults[section] for section in ("rise", "training")},
            kind="a RISE run",
        )

    def _settings(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        config: RISEConfig,
        training: TrainingConfig,
    ) -> dict[str, Any]:
        """What decides a run's results, as JSON values (see `_claim_output_dir`)."""
        settings = {
            "env_id": env_id,
            "env_kwargs": env_kwargs,
            "base_model": self.base_model,
            "rise": {
                k: v
                for k, v in asdict(config).items()
                if k not in ("iterations", "ray_address")  # more iterations, or Ray: resumes
            },
            "training": asdict(training),
            "expert": getattr(self.expert, "name", None),
            "collector": getattr(self.collector, "name", None),
        }
        return json.loads(json.dumps(settings, default=str))

    def _boost_examples(self, env_id: str, env_kwargs: dict[str, Any]) -> list[WeightedExample]:
        """SFT examples: each training problem's opening prompt and reference solution."""
        env = self._env(env_id, env_kwargs, split="train")
        examples = []
        for index, problem in enumerate(env.problems[: self.config.boost_problems]):
            if problem.solution:
                observation, _ = env.reset(options={"index": index})
                examples.append(
                    WeightedExample(observation, problem.solution, rwr_weight(1.0, self.config.tau))
                )
        if not examples:
            raise ValueError(
                f"{env_id} has no reference solutions for the boost phase; set boost=False"
            )
        return examples

    def _collect(
        self, env_id: str, env_kwargs: dict[str, Any], folder: Path, seed: int
    ) -> list[VisitedState]:
        """On-policy rollouts on the train split, then improved actions where wanted.

        ``all_turns`` relabels every visited state, ``second_turn`` only turn 2.
        """
        states_file = folder / "states.jsonl"
        if states_file.exists():  # written last, after generated_tokens.json
            return [
                _state_from_dict(json.loads(line)) for line in states_file.read_text().splitlines()
            ]
        shape = self.config.data_shape
        env_kwargs = {
            **env_kwargs,
            "split": "train",
            "history_window": self.config.history_window,
            "max_turns": {"first_turn": 1, "second_turn": 2}.get(shape, self.config.max_turns),
            "stop_on_correct": self.config.collect_stop_on_correct,
        }
        learner = SequentialRetry(
            self.collector or self.llm,
            replace(self.params, temperature=self.config.rollout_temperature, seed=seed),
            adapter=None if self.collector else self.adapter,
            name=f"{self.name}-collect",
        )
        plan = plan_rollout(
            env_id,
            learner,
            num_episodes=self.config.train_problems,
            seed=seed,
            env_kwargs=env_kwargs,
            output=folder / "rollouts.jsonl",
            shuffle=True,
        )
        if self.config.ray_address is None:
            records = plan.run()
        else:
            from agents.ray_engine import run_ray

            records = run_ray(plan, address=self.config.ray_address)
        env = self._env(env_id, env_kwargs, split="train")
        kept = [r for r in records if not (self.config.drop_degrading and degrades(r))]
        states = [state for record in kept for state in replay_states(env, record)]
        wanted = [s for s in states if shape != "second_turn" or s.turn == 2]
        tokens = {
            "collection": sum(turn.generated_tokens for r in records for turn in r.turns),
            "relabelling": self._relabel(wanted, env, seed),
        }
        folder.mkdir(parents=True, exist_ok=True)
        (folder / TOKENS_FILE).write_text(json.dumps(tokens) + "\n")
        partial = states_file.with_suffix(".partial")
        partial.write_text("".join(json.dumps(asdict(state)) + "\n" for state in states))
        partial.replace(states_file)
        logger.info("%s: %s", folder, _relabel_summary(states))
        return states

    def _relabel(self, states: Sequence[VisitedState], env: MultiTurnEnv, seed: int) -> int:
        """Draw ``num_samples`` actions per distinct context and keep the best.

        The context is the state itself or, with ``relabel_context="problem"``, the
        problem's opening prompt. One batched call; states with the same context (a
        model repeating its answer, or every state of a problem) share one draw.
        Returns the tokens the draws generated.
        """
        groups: dict[str, list[VisitedState]] = {}
        contexts: dict[str, Conversation] = {}
        for state in states:
            context = self._relabel_context(state)
            key = json.dumps(context, sort_keys=True)
            groups.setdefault(key, []).append(state)
            contexts.setdefault(key, context)
        if not groups:
            return 0
        improver = self.expert or self.collector or self.llm
        params = replace(
            self.params,
            n=self.config.num_samples,
            temperature=self.config.sample_temperature,
            seed=seed,
        )
        adapter = None if (self.expert or self.collector) else self.adapter
        if self.config.ray_address is None:
            generations = improver.generate(list(contexts.values()), params, adapter=adapter)
        else:
            from agents.ray_engine import generate_ray

            generations = generate_ray(
                improver,
                list(contexts.values()),
                params,
                address=self.config.ray_address,
                adapter=adapter,
            )
        for group, generation in zip(groups.values(), generations):
            problem = env.problems[group[0].index]
            best = pick_best(generation.texts, partial(env.grade, problem=problem))
            for state in group:
                state.improved = best
        return sum(generation.num_tokens for generation in generations)

    def _relabel_context(self, state: VisitedState) -> Conversation:
        """The conversation the improver answers for ``state`` (see `_relabel`).

        The environment keeps the opening prompt at the top of every state, so the
        messages before the first answer are the problem as first posed.
        """
        if self.config.relabel_context == "state":
            return state.conversation
        return list(takewhile(lambda message: message["role"] != "assistant", state.conversation))

    def _weighted_examples(self, states: Sequence[VisitedState]) -> list[WeightedExample]:
        """The actions the data filter keeps, once each, weighted by ``exp(reward / tau)``."""
        tau = self.config.tau
        pairs = training_actions(
            states,
            self.config.data_filter,  # type: ignore[arg-type]
            self.config.drop_unimproved,
        )
        return [
            WeightedExample(state.conversation, action.response, rwr_weight(action.reward, tau))
            for state, action in pairs
        ]

    def _train(self, examples: list[WeightedExample], folder: Path) -> None:
        """Train from the base model on ``examples`` and answer with the result from now on.

        With LoRA the result is an adapter the back end applies per call; with full
        fine-tuning it is a model folder, served by a back end built with `load_model`.
        """
        trained = str(train_rwr(self.base_model, examples, self.training, folder / "model"))
        if self.training.use_lora:
            self.adapter = trained
        else:
            self.llm.close()
            self.llm = self.load_model(trained)

    def _evaluate(self, env_id: str, env_kwargs: dict[str, Any], folder: Path) -> None:
        """Held-out metrics of the current adapter, saved as ``metrics.json``."""
        with main_process_first() as main:
            evaluation = evaluate(
                env_id,
                SequentialRetry(self.llm, self.params, adapter=self.adapter, name=self.name),
                num_problems=self.config.eval_problems,
                max_turns=self.config.max_turns,
                seed=self.config.seed,
                env_kwargs={
                    **env_kwargs,
                    "split": "test",
                    "history_window": self.config.history_window,
                },
                output=folder / "eval.jsonl",
                ray_address=self.config.ray_address,
            )
        summary = {name: estimate.value for name, estimate in evaluation.metrics.items()}
        if main:
            (folder / "metrics.json").write_text(json.dumps(summary, indent=2))
        self.history.append({"folder": str(folder), **summary})
        logger.info("%s: %s", folder, summary)

    @staticmethod
    def _env(env_id: str, env_kwargs: dict[str, Any], split: str) -> MultiTurnEnv:
        """The unwrapped environment of ``split``, with the episode options given."""
        env = gym.make(env_id, **{**env_kwargs, "split": split}).unwrapped
        assert isinstance(env, MultiTurnEnv)
        return env


@contextmanager
def main_process_first() -> Iterator[bool]:
    """Run the block on the main process, then on the others; yield whether this is main.

    Under ``accelerate launch`` or torchrun (``WORLD_SIZE`` > 1) every process runs
    `RISEAgent.learn`, and training is shared. Collection and evaluation are not: they
    write files that every step resumes from, so the main process does the work and
    writes them first, and the other processes then find the work done and read its
    files. In one process the block just runs.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield True
        return
    from accelerate import PartialState

    state = PartialState(cpu=cpu_only())  # as the Trainer will: gloo on CPU
    with state.main_process_first():
        yield state.is_main_process


def iteration_tokens(folder: Path) -> dict[str, int]:
    """The tokens an iteration generated, ``{"collection": ..., "relabelling": ...}``.

    Empty for an iteration collected by a release that did not count them.
    """
    path = Path(folder) / TOKENS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _relabel_summary(states: Sequence[VisitedState]) -> str:
    """Counts a reader of the log needs: states, after-correct states, improvements found."""
    after_correct = sum(state.previous_reward == 1.0 for state in states)
    relabelled = [state for state in states if state.improved is not None]
    improved = sum(
        state.improved is not None and state.improved.reward > state.on_policy.reward
        for state in relabelled
    )
    return (
        f"{len(states)} states ({after_correct} after a correct answer), {len(relabelled)} "
        f"relabelled, a better action found at {improved}"
    )


def _state_from_dict(data: dict[str, Any]) -> VisitedState:
    improved = data.pop("improved")
    return VisitedState(
        **{**data, "on_policy": Candidate(**data["on_policy"])},
        improved=None if improved is None else Candidate(**improved),
    )
