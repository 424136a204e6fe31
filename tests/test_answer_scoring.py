"""The answer scorer: features, training, saving, and its place among the learned rules."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from agents.answer_scoring import (
    ANSWER_FEATURES,
    FEATURE_GROUPS,
    AnswerScorer,
    answer_features,
    equation_checks,
    train_answer_scorer,
)
from agents.stopping import (
    StoppingPolicy,
    load_learned_rule,
    read_learned_rule_settings,
    train_stopping_policy,
)
from rise_gym.metrics import paired_difference
from rise_gym.records import EpisodeRecord, TurnRecord
from rise_gym.selection import Choice, evaluate_selection


def turn(number: int, answer: str | None, correct: bool, **metadata) -> TurnRecord:
    response = "I am not sure." if answer is None else f"The answer is \\boxed{{{answer}}}."
    return TurnRecord(number, response, answer, correct, metadata=metadata)


def record(turns: list[TurnRecord], index: int = 0) -> EpisodeRecord:
    return EpisodeRecord("synthetic", f"p{index}", index, "42", "sequential", index, turns)


def misleading_majority_episodes(count: int, seed: int) -> list[EpisodeRecord]:
    """Five turns: a wrong answer three times at low token probability, the right one
    twice at high probability; now and then the right answer is also the majority."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(count):
        right_votes = 3 if rng.random() < 0.2 else 2
        correct_turns = set(rng.choice(5, size=right_votes, replace=False).tolist())
        turns = []
        for t in range(5):
            correct = t in correct_turns
            probability = rng.uniform(0.7, 0.95) if correct else rng.uniform(0.2, 0.5)
            answer = "42" if correct else str(50 + index % 40)  # as long as "42"
            turns.append(turn(t + 1, answer, correct, mean_logprob=math.log(probability)))
        records.append(record(turns, index))
    return records


def test_equations_in_a_response_are_checked():
    assert equation_checks("26 - 6 = 19.\nThe answer is \\boxed{19}.") == (0, 1)
    assert equation_checks("So 12 x 3 = \\boxed{36}.") == (1, 1)
    assert equation_checks("3,000 + 2 = 3,002 and 7 × 8 = 56 and 9 ÷ 3 = 3") == (3, 3)
    assert equation_checks("1.5 * 2 = 3.0, 10 / 0 = 1") == (1, 2)
    assert equation_checks("x = 5, so the answer is 5.") == (0, 0)
    assert equation_checks("2 + 2 = 45") == (0, 1)  # not read as 2 + 2 = 4


def test_answer_features_of_a_hand_made_episode():
    turns = [
        turn(1, "7", False, mean_logprob=math.log(0.4)),
        turn(2, "9", True, mean_logprob=math.log(0.8)),
        turn(3, "9", True, mean_logprob=math.log(0.6), finish_reason="length"),
        turn(4, None, False),
        turn(5, "7", False, mean_logprob=math.log(0.2)),
    ]
    representatives, rows = answer_features(turns, max_turns=5, length_scale=100)
    assert representatives == [4, 2]  # "7" first seen first; each at its latest turn
    seven, nine = (dict(zip(ANSWER_FEATURES, row.tolist())) for row in rows)
    assert seven["votes"] == pytest.approx(2 / 5) and seven["vote_share"] == pytest.approx(2 / 4)
    assert seven["is_majority"] == 1.0 and nine["is_majority"] == 0.0  # tie: most recent
    assert (seven["first_turn"], seven["last_turn"]) == pytest.approx((1 / 5, 1.0))
    assert (seven["is_first"], seven["is_last"], nine["is_first"]) == (1.0, 1.0, 0.0)
    assert (seven["longest_run"], nine["longest_run"]) == pytest.approx((1 / 5, 2 / 5))
    assert nine["token_probability"] == pytest.approx(0.7)
    assert nine["max_token_probability"] == pytest.approx(0.8)
    episode_mean = (0.4 + 0.8 + 0.6 + 0.2) / 4
    assert nine["relative_token_probability"] == pytest.approx((0.7 - episode_mean) / 2 + 0.5)
    assert nine["truncated"] == pytest.approx(0.5) and seven["truncated"] == 0.0
    assert nine["response_length"] == pytest.approx(len(turns[1].response) / 100)
    assert seven["has_logprob"] == 1.0 and seven["distinct_answers"] == pytest.approx(2 / 5)
    assert set(ANSWER_FEATURES) == {name for group in FEATURE_GROUPS.values() for name in group}

    assert answer_features(turns, max_turns=1)[0] == [0]  # only the first turn is seen
    empty = answer_features([turn(1, None, False)], max_turns=1)
    assert empty[0] == [] and empty[1].shape == (0, len(ANSWER_FEATURES))


def test_the_scorer_learns_what_majority_vote_cannot_see(tmp_path):
    train = misleading_majority_episodes(200, seed=0)
    test = misleading_majority_episodes(300, seed=1)
    scorer = train_answer_scorer(train)
    learned = evaluate_selection(test, scorer)
    majority = evaluate_selection(test, "majority")
    assert majority.accuracy.value < 0.35  # the wrong answer usually wins the vote
    assert learned.accuracy.value > 0.95 and learned.average_turns == 5.0
    assert learned.advantage(majority).low > 0.5
    assert next(iter(scorer.weights())) in FEATURE_GROUPS["confidence"]

    # from agreement alone it learns that the minority is right here (80% of episodes);
    # the token probability is what tells the rest
    counting = evaluate_selection(test, train_answer_scorer(train, features=("votes",)))
    assert 0.7 < counting.accuracy.value < learned.accuracy.value - 0.1

    loaded = AnswerScorer.load(scorer.save(tmp_path / "scorer"))
    assert evaluate_selection(test, loaded) == learned
    assert loaded.features == ANSWER_FEATURES and loaded.max_turns == 5


def test_an_episode_without_answers_submits_nothing():
    scorer = train_answer_scorer(misleading_majority_episodes(20, seed=0))
    assert scorer([turn(1, None, False), turn(2, None, False)]) == Choice(None, 2)


@pytest.mark.parametrize(
    ("episodes", "kwargs", "message"),
    [
        ([record([turn(1, "42", True)])], {}, "all right"),
        ([record([turn(1, None, False)])], {}, "0 answers"),
        (misleading_majority_episodes(5, 0), {"features": ("votes", "luck")}, "luck"),
        (misleading_majority_episodes(5, 0), {"features": ()}, "choose from"),
    ],
)
def test_training_on_unusable_data_is_refused(episodes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_answer_scorer(episodes, **kwargs)


def test_learned_rules_load_from_their_folders_by_kind(tmp_path):
    episodes = misleading_majority_episodes(40, seed=0)
    scorer_dir = train_answer_scorer(episodes).save(tmp_path / "scorer")
    policy_dir = train_stopping_policy(
        episodes, total_timesteps=128, algorithm_kwargs={"n_steps": 64, "batch_size": 32}
    ).save(tmp_path / "policy")
    assert isinstance(load_learned_rule(scorer_dir), AnswerScorer)
    assert isinstance(load_learned_rule(policy_dir), StoppingPolicy)
    assert read_learned_rule_settings(scorer_dir)["kind"] == "answer_scorer"
    assert read_learned_rule_settings(policy_dir)["kind"] == "stopping_policy"
    with pytest.raises(FileNotFoundError, match="stopping.json.*scorer.json"):
        read_learned_rule_settings(tmp_path)
    settings = json.loads((scorer_dir / "scorer.json").read_text())
    (scorer_dir / "scorer.json").write_text(json.dumps({**settings, "features": ["turn"]}))
    with pytest.raises(ValueError, match="unknown or no answer features"):
        load_learned_rule(scorer_dir)


def test_a_paired_difference_pairs_the_problems():
    better = [1, 1, 0, 1] * 100
    same_score_other_problems = [0, 1, 1, 1] * 100
    difference = paired_difference(better, same_score_other_problems)
    assert difference.value == 0.0 and difference.low < 0 < difference.high
    assert paired_difference(better, [0, 0, 0, 1] * 100).low > 0.4
    assert paired_difference([1] * 10, [1] * 10).low == 0.0  # no variance, no doubt
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference([1, 0], [1])


def test_doctests():
    import doctest

    import agents.answer_scoring

    assert doctest.testmod(agents.answer_scoring).failed == 0
