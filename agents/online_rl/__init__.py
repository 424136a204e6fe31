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

The modules: ``config`` (`OnlineRLConfig` and the GRPOConfig it decides), ``episodes``
(an episode's tokens, mask and return), ``rollout`` (the ``rollout_func`` TRL calls and
the groups of episodes it plays) and ``agent`` (`MultiTurnGRPO`, its run folder and
trainer).
"""

from agents.online_rl.agent import MultiTurnGRPO, Progress
from agents.online_rl.config import CREDITS, RESERVED_ENV_KWARGS, SCALE_REWARDS, OnlineRLConfig
from agents.online_rl.episodes import (
    EpisodeSequence,
    episode_return,
    episode_sequence,
    final_conversation,
    response_spans,
)
from agents.online_rl.rollout import (
    EpisodeRollout,
    env_return,
    opening_dataset,
    opening_key,
    play_groups,
)

__all__ = [
    "CREDITS",
    "RESERVED_ENV_KWARGS",
    "SCALE_REWARDS",
    "EpisodeRollout",
    "EpisodeSequence",
    "MultiTurnGRPO",
    "OnlineRLConfig",
    "Progress",
    "env_return",
    "episode_return",
    "episode_sequence",
    "final_conversation",
    "opening_dataset",
    "opening_key",
    "play_groups",
    "response_spans",
]
