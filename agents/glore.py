"""GLoRe-style refinement: a prompted critic finds the first wrong step, then a rewrite."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from agents.base import Action
from agents.common import LLMAgent, action_from
from agents.llm.base import LLM, SamplingParams
from rise_gym.spaces import Conversation, Message, copy_conversation

RefinementKind = Literal["auto", "global", "local"]
REFINEMENT_KINDS = ("auto", "global", "local")

DEFAULT_CRITIC_PROMPT = (
    "Here is your solution above, split into numbered steps:\n\n{steps}\n\n"
    "Check the steps in order and find the first one that is incorrect (a wrong "
    "calculation, fact, line of code or piece of logic). Do not solve the problem again. "
    'Reply with "First incorrect step: <number>", or "First incorrect step: none" if '
    "every step is correct."
)
"""The critic's request; ``{steps}`` is the last answer as numbered steps."""

DEFAULT_GLOBAL_PROMPT = (
    "Your solution above is not correct. Write a new, complete solution to the original "
    "problem from the beginning, and give the final answer in the format the problem asks for."
)
"""The global refinement request: rewrite the whole draft."""

DEFAULT_LOCAL_PROMPT = (
    "Your solution above goes wrong at step {step}:\n\n{wrong_step}\n\n"
    "The steps before it are correct:\n\n{kept_steps}\n\n"
    "Write the corrected solution: keep the steps before step {step} as they are, redo "
    "step {step} correctly and continue from there to the end, giving the final answer in "
    "the format the problem asks for."
)
"""The local refinement request; ``{step}`` is the critic's step, ``{wrong_step}`` its
text, ``{kept_steps}`` the numbered steps before it (``(none)`` for step 1)."""

_VERDICT = re.compile(
    r"first\s+(?:incorrect|wrong|erroneous)\s+step\W*(?:is\W*)?(?:step\W*)?(\d+|none)\b",
    re.IGNORECASE,
)
_BARE_NUMBER = re.compile(r"^\W*(?:step\W*)?(\d+)\b", re.IGNORECASE)


class GLoRE(LLMAgent):
    r"""Global and local refinement (after GLoRe, Havrilla et al., ICML 2024), prompted.

    Turn 1 is a plain answer (the draft). At every later turn the environment's retry
    prompt is replaced by the agent's own refinement of its last answer:

    1. **Critic** (one call): the last answer is split into steps (its non-empty lines,
       as GLoRe delimits steps by newlines) and the same model is asked for the first
       incorrect step (`parse_first_wrong_step` reads its reply).
    2. **Refinement** (one call): if the critic named a step, a *local* refinement: the
       model is shown that step and the ones before it, and rewrites the solution keeping
       the earlier steps and redoing it from there. If it named none (or its reply could
       not be read), a *global* refinement: the whole solution is rewritten from scratch.

    So a problem of k turns costs 1 + 2(k-1) calls, as `SelfRefine`. With
    ``refinement="global"`` the critic is skipped (k calls, as `SequentialRetry`); with
    ``refinement="local"`` a critic that names no step points at the last step (the
    final answer), so every later turn is local. An empty last answer has no step to
    point at and is refined globally without a critic (one call). Every call is counted
    in ``Action.llm_calls`` and the critic's tokens in ``generated_tokens``; the
    critic's reply, the step it named and the kind of refinement are in ``metadata``.

    What it keeps from the paper: the split into *when* to refine, *where* (the first
    incorrect step, which is what GLoRe's stepwise ORM locates) and *how* (a global
    refiner that sees only the question and the draft, and a local refiner that is also
    told where the first error is and keeps the steps before it); steps are lines.

    What it simplifies:

    - The critic is the same model prompted to name the first wrong step, standing in
      for the learned stepwise ORM (trained on rollouts of the policy to estimate V*);
      no refiner is trained either: the same model is prompted to refine.
    - *When* to refine is not decided by an ORM: the environment's turns decide, so
      every later turn refines (as the retry prompt, which RISE uses, would ask).
    - The paper's best setting samples both a global and a local refinement and lets
      the ORM rerank draft, global and local; at equal calls (two per later turn) this
      agent writes one refinement, local when the critic finds a step, else global, and
      leaves the choice among turns to the episode (m1@tk votes over them).
    - The paper's local refiner continues generation from the kept prefix; a chat model
      without assistant prefill rewrites the whole solution, told to keep that prefix.
    - The refinements see the opening prompt and the last answer only (as GLoRe's
      refiners see the question and the draft); earlier attempts and any environment
      feedback in the retry prompt are not shown.
    """

    name = "glore"

    def __init__(
        self,
        llm: LLM,
        params: SamplingParams | None = None,
        *,
        refinement: RefinementKind = "auto",
        critic_prompt: str = DEFAULT_CRITIC_PROMPT,
        global_prompt: str = DEFAULT_GLOBAL_PROMPT,
        local_prompt: str = DEFAULT_LOCAL_PROMPT,
        adapter: str | None = None,
        name: str | None = None,
    ):
        """Create the agent.

        Args:
            llm: The back end.
            params: Sampling parameters of every call (draft, critic and refinements).
            refinement: ``"auto"`` (local when the critic names a step, else global),
                ``"global"`` (no critic: always rewrite the whole answer) or ``"local"``
                (always local; the last step when the critic names none).
            critic_prompt: Asks for the first incorrect step; must hold ``{steps}``.
            global_prompt: Asks for a complete new solution (no placeholders).
            local_prompt: Asks for a solution redone from a step; may use ``{step}``,
                ``{wrong_step}`` and ``{kept_steps}``.
            adapter: A PEFT adapter path applied to every call.
            name: Overrides the default name.

        Raises:
            ValueError: Unknown ``refinement``, or a prompt with an unknown placeholder
                (or a critic prompt without ``{steps}``).
        """
        if refinement not in REFINEMENT_KINDS:
            raise ValueError(f"refinement must be one of {REFINEMENT_KINDS}, got {refinement!r}")
        if "{steps}" not in critic_prompt:
            raise ValueError("critic_prompt must contain {steps}, where the numbered steps go")
        for label, prompt, fields in (
            ("critic_prompt", critic_prompt, {"steps": ""}),
            ("global_prompt", global_prompt, {}),
            ("local_prompt", local_prompt, {"step": 1, "wrong_step": "", "kept_steps": ""}),
        ):
            try:
                prompt.format(**fields)
            except (KeyError, IndexError, ValueError) as error:
                raise ValueError(
                    f"{label} is not a valid template ({error!r}); placeholders allowed: "
                    f"{', '.join('{' + f + '}' for f in fields) or 'none'}; write a literal "
                    "brace as {{ or }}"
                ) from error
        super().__init__(llm, params, adapter=adapter, name=name)
        self.refinement: RefinementKind = refinement
        self.critic_prompt = critic_prompt
        self.global_prompt = global_prompt
        self.local_prompt = local_prompt

    def act(self, observations: Sequence[Conversation]) -> list[Action | str]:
        """Draft at turn 1; at later turns critique, then refine locally or globally, batched."""
        actions: dict[int, Action] = {}
        first = [i for i, obs in enumerate(observations) if _last_answer(obs) is None]
        for i, generation in zip(first, self.generate([observations[i] for i in first])):
            actions[i] = action_from(generation)
        later = [i for i in range(len(observations)) if i not in actions]
        drafts = {i: _draft(observations[i]) for i in later}
        critiqued = [i for i in later if self.refinement != "global" and drafts[i][2]]
        critic_requests = [self._critic_request(*drafts[i]) for i in critiqued]
        critiques = dict(zip(critiqued, self.generate(critic_requests)))
        requests, plans = [], []
        for i in later:
            opening, answer, steps = drafts[i]
            critique = critiques.get(i)
            step = None if critique is None else parse_first_wrong_step(critique.texts[0], steps)
            if step is None and critique is not None and self.refinement == "local":
                step = len(steps)
            requests.append([*opening, _assistant(answer), _user(self._refine_prompt(step, steps))])
            plans.append((i, critique, step))
        for (i, critique, step), refined in zip(plans, self.generate(requests)):
            calls, extra = (1, 0) if critique is None else (2, critique.num_tokens)
            action = action_from(refined, llm_calls=calls, extra_tokens=extra)
            action.metadata["refinement"] = "global" if step is None else "local"
            action.metadata["first_wrong_step"] = step
            action.metadata["critic"] = None if critique is None else critique.texts[0]
            actions[i] = action
        return [actions[i] for i in range(len(observations))]

    def _critic_request(self, opening: Conversation, answer: str, steps: list[str]) -> Conversation:
        """The opening prompt, the last answer, and the request for its first wrong step."""
        prompt = self.critic_prompt.format(steps=number_steps(steps))
        return [*opening, _assistant(answer), _user(prompt)]

    def _refine_prompt(self, step: int | None, steps: list[str]) -> str:
        """The global request, or the local one from 1-based ``step``."""
        if step is None:
            return self.global_prompt
        kept = number_steps(steps[: step - 1]) or "(none)"
        return self.local_prompt.format(step=step, wrong_step=steps[step - 1], kept_steps=kept)


def split_steps(answer: str) -> list[str]:
    r"""The steps of an answer: its non-empty lines, right-stripped.

    Example:
        >>> split_steps("3 + 4 = 7\n\n7 * 2 = 14  \nSo the answer is 14.")
        ['3 + 4 = 7', '7 * 2 = 14', 'So the answer is 14.']
    """
    return [line.rstrip() for line in answer.splitlines() if line.strip()]


def number_steps(steps: Sequence[str]) -> str:
    """Steps as ``Step 1: ...`` lines.

    Example:
        >>> print(number_steps(["a = 1", "b = 2"]))
        Step 1: a = 1
        Step 2: b = 2
    """
    return "\n".join(f"Step {number}: {step}" for number, step in enumerate(steps, start=1))


def parse_first_wrong_step(reply: str, steps: Sequence[str]) -> int | None:
    """The 1-based step a critic's reply names as the first incorrect one, if any.

    Reads ``First incorrect step: N`` (also ``wrong``/``erroneous``, ``is``, ``step N``)
    anywhere in the reply, else a reply that starts with a number. ``none``, no
    verdict, or a number outside ``1..len(steps)`` gives None.

    Example:
        >>> parse_first_wrong_step("Step 2 adds wrongly. First incorrect step: 2", ["a", "b"])
        2
        >>> parse_first_wrong_step("First incorrect step: none", ["a", "b"]) is None
        True
    """
    match = _VERDICT.search(reply) or _BARE_NUMBER.match(reply)
    if match is None or not match.group(1).isdigit():
        return None
    step = int(match.group(1))
    return step if 1 <= step <= len(steps) else None


def _draft(observation: Conversation) -> tuple[Conversation, str, list[str]]:
    """The opening messages (system and first prompt), the last answer and its steps."""
    first_answer = next(i for i, m in enumerate(observation) if m["role"] == "assistant")
    answer = _last_answer(observation) or ""
    return copy_conversation(observation[:first_answer]), answer, split_steps(answer)


def _last_answer(observation: Conversation) -> str | None:
    answers = [m["content"] for m in observation if m["role"] == "assistant"]
    return answers[-1] if answers else None


def _assistant(content: str) -> Message:
    return {"role": "assistant", "content": content}


def _user(content: str) -> Message:
    return {"role": "user", "content": content}
