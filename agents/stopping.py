"""A learned stopping policy: when to stop retrying and submit, trained with stable-baselines3.

A `StoppingPolicy` is a selection rule (`rise_gym.selection.SelectionRule`): it picks
the turn of a recorded episode whose answer is submitted. It is scored by
`rise_gym.selection.evaluate_selection` (re-exported here), on equal terms with the
baseline rules there (majority vote, last answer, first answer, the oracle)::

    from agents.stopping import evaluate_selection, train_stopping_policy

    policy = train_stopping_policy("runs/train.jsonl", total_timesteps=20_000)
    for rule in ("majority", "last", "first", "oracle", policy):
        print(evaluate_selection("runs/test.jsonl", rule))

Training uses stable-baselines3 (the ``sb3`` extra), imported only when a policy is
trained or loaded. A saved policy and a saved answer scorer (`agents.answer_scoring`,
which submits the best-scored answer instead of deciding when to stop) are both
learned rules: `load_learned_rule` loads either from its folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agents.answer_scoring import SCORER_FILE, AnswerScorer
from rise_gym.envs.stopping import (
    DEFAULT_LENGTH_SCALE,
    FEATURE_NAMES,
    SUBMIT,
    EpisodeSource,
    StoppingEnv,
    episode_features,
)
from rise_gym.records import TurnRecord
from rise_gym.selection import Choice
from rise_gym.selection import evaluate_selection as evaluate_selection  # re-exported

Algorithm = Literal["ppo", "dqn"]

_DEFAULT_ALGORITHM_KWARGS: dict[str, dict[str, Any]] = {
    "ppo": {"gamma": 1.0, "n_steps": 512, "batch_size": 64, "ent_coef": 0.01},
    "dqn": {"gamma": 1.0, "learning_starts": 500, "exploration_fraction": 0.3},
}
"""Defaults merged under the caller's ``algorithm_kwargs``: episodes last at most a few
steps and the return is the objective itself, so no discounting."""


class StoppingPolicy:
    """A trained stopping policy, usable as a `rise_gym.selection.SelectionRule`.

    Calling it on an episode's turns computes the features `StoppingEnv` would show and
    submits at the first turn the model chooses `SUBMIT` (deterministically), or at
    the last turn.

    Attributes:
        model: The stable-baselines3 model (PPO or DQN).
        max_turns: The turn count the policy was trained with (scales the features).
        length_scale: The ``response_length`` feature's scale it was trained with.
        name: The policy's name in results.
    """

    def __init__(
        self,
        model: Any,
        *,
        max_turns: int,
        length_scale: float = DEFAULT_LENGTH_SCALE,
        name: str = "learned",
    ):
        """Wrap a trained stable-baselines3 model.

        Args:
            model: A model whose ``predict`` takes `StoppingEnv` observations.
            max_turns: The ``max_turns`` of the environment it was trained in.
            length_scale: The ``length_scale`` of that environment.
            name: The policy's name in results.
        """
        self.model = model
        self.max_turns = max_turns
        self.length_scale = length_scale
        self.name = name

    def __call__(self, turns: Sequence[TurnRecord]) -> Choice:
        """Choose the turn to submit for one episode (at most ``max_turns`` turns)."""
        features = episode_features(turns, max_turns=self.max_turns, length_scale=self.length_scale)
        stops = np.flatnonzero(self.decide(features) == SUBMIT)
        index = int(stops[0]) if stops.size else len(features) - 1
        return Choice(index, index + 1)

    def decide(self, observations: np.ndarray) -> np.ndarray:
        """The deterministic action (`SUBMIT` or `CONTINUE`) for each row of features."""
        with _single_torch_thread():
            actions, _ = self.model.predict(observations, deterministic=True)
        return np.asarray(actions).reshape(len(observations))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save to a directory: ``model.zip`` (stable-baselines3) and ``stopping.json``.

        Args:
            path: The directory, created if needed.

        Returns:
            The directory.
        """
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory / "model.zip")
        config = {
            "algorithm": type(self.model).__name__.lower(),
            "max_turns": self.max_turns,
            "length_scale": self.length_scale,
            "name": self.name,
            "features": list(FEATURE_NAMES),
        }
        (directory / "stopping.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StoppingPolicy:
        """Load a policy saved by `save`.

        Raises:
            FileNotFoundError: If the directory is not a saved policy (see
                `read_policy_settings`).
            ValueError: If it was trained on a different feature set.
        """
        config = read_policy_settings(path)
        model = _algorithm_class(config["algorithm"]).load(Path(path) / "model.zip", device="cpu")
        return cls(
            model,
            max_turns=config["max_turns"],
            length_scale=config["length_scale"],
            name=config["name"],
        )


def read_policy_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a directory saved by `StoppingPolicy.save` and read its ``stopping.json``.

    Loads no model (and no torch), so it suits checking a path before a long run.

    Args:
        path: The policy's directory.

    Returns:
        The settings the policy was trained with: ``algorithm``, ``max_turns``,
        ``length_scale``, ``name`` and ``features``.

    Raises:
        FileNotFoundError: If the directory or its ``stopping.json`` or ``model.zip`` is
            missing; the message says how to make a policy.
        ValueError: If the policy was trained on a different feature set.
    """
    directory = Path(path)
    missing = [name for name in ("stopping.json", "model.zip") if not (directory / name).is_file()]
    if missing:
        problem = "no such directory" if not directory.is_dir() else "missing " + ", ".join(missing)
        raise FileNotFoundError(
            f"no stopping policy at {directory} ({problem}); save one with StoppingPolicy.save, "
            "e.g. `python benchmarks/stopping.py` trains one into runs/stopping/policy"
        )
    settings: dict[str, Any] = json.loads((directory / "stopping.json").read_text())
    if settings["features"] != list(FEATURE_NAMES):
        raise ValueError(
            f"{directory} was trained on features {settings['features']}, but this version "
            f"computes {list(FEATURE_NAMES)}; retrain the policy"
        )
    return settings


LearnedRule = AnswerScorer | StoppingPolicy
"""A selection rule learned from recorded episodes; both kinds have ``name`` and ``save``."""


def read_learned_rule_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a folder holding a saved learned rule and read its settings, loading no model.

    Args:
        path: A folder written by `AnswerScorer.save` (``scorer.json``) or by
            `StoppingPolicy.save` (``stopping.json`` and ``model.zip``).

    Returns:
        The saved settings, with ``kind`` set to ``"answer_scorer"`` or ``"stopping_policy"``.

    Raises:
        FileNotFoundError: If the folder holds neither; the message says how to make one.
        ValueError: If the rule was saved with features this version does not compute.
    """
    scorer_file = Path(path) / SCORER_FILE
    if scorer_file.is_file():
        AnswerScorer.load(path)  # checks the features
        return {**json.loads(scorer_file.read_text()), "kind": "answer_scorer"}
    try:
        return {**read_policy_settings(path), "kind": "stopping_policy"}
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{error} (nor an answer scorer's {SCORER_FILE}: AnswerScorer.save writes one)"
        ) from error


def load_learned_rule(path: str | os.PathLike[str]) -> LearnedRule:
    """Load the answer scorer or stopping policy saved in a folder.

    The folder is checked as `read_learned_rule_settings` does.

    A stopping policy imports torch and stable-baselines3; an answer scorer only numpy.
    """
    if read_learned_rule_settings(path)["kind"] == "answer_scorer":
        return AnswerScorer.load(path)
    return StoppingPolicy.load(path)


def train_stopping_policy(
    episodes: EpisodeSource,
    *,
    algorithm: Algorithm = "ppo",
    total_timesteps: int = 20_000,
    turn_cost: float = 0.0,
    max_turns: int | None = None,
    length_scale: float = DEFAULT_LENGTH_SCALE,
    seed: int = 0,
    algorithm_kwargs: dict[str, Any] | None = None,
    name: str | None = None,
) -> StoppingPolicy:
    """Train a stopping policy with stable-baselines3 in a `StoppingEnv`.

    Args:
        episodes: Training episodes (a JSONL file or records), e.g. from a train split.
        algorithm: ``"ppo"`` or ``"dqn"``.
        total_timesteps: Environment steps to train for (one step is one turn looked at).
        turn_cost: Reward subtracted per extra turn (trades accuracy for turns).
        max_turns: Turns per episode to use; None uses all recorded turns.
        length_scale: The ``response_length`` feature's scale.
        seed: Seeds the algorithm and the environment.
        algorithm_kwargs: Keyword arguments for the algorithm's constructor, over the
            defaults (no discounting; PPO: ``n_steps=512``, ``batch_size=64``).
        name: The policy's name in results; None names it after the algorithm.

    Returns:
        The trained policy.

    Torch runs on one thread meanwhile: for a network this small more threads only add
    overhead (ten times the run time on a busy 2-core machine).
    """
    algorithm_class = _algorithm_class(algorithm)
    env = StoppingEnv(episodes, turn_cost=turn_cost, max_turns=max_turns, length_scale=length_scale)
    kwargs = {**_DEFAULT_ALGORITHM_KWARGS[algorithm], **(algorithm_kwargs or {})}
    model = algorithm_class("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **kwargs)
    with _single_torch_thread():
        model.learn(total_timesteps=total_timesteps)
    return StoppingPolicy(
        model,
        max_turns=env.max_turns,
        length_scale=length_scale,
        name=name or f"learned ({algorithm})",
    )


def _algorithm_class(algorithm: str) -> Any:
    if algorithm not in _DEFAULT_ALGORITHM_KWARGS:
        raise ValueError(
            f"algorithm must be one of {sorted(_DEFAULT_ALGORITHM_KWARGS)}, got {algorithm!r}"
        )
    try:
        import stable_baselines3
    except ImportError as error:
        raise ImportError(
            "training a stopping policy needs stable-baselines3: pip install 'rise-gym[sb3]'"
        ) from error
    return getattr(stable_baselines3, algorithm.upper())


@contextmanager
def _single_torch_thread() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
