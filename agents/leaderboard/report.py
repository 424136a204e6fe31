"""Leaderboard tables: one entry per agent x environment, as Markdown, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from agents.evaluate import Evaluation
from agents.leaderboard.metadata import RunMetadata
from rise_gym.metrics import Estimate, average_generated_tokens, average_llm_calls, summarize
from rise_gym.selection import Selection, SelectionRule, evaluate_selection

_STOP_TURNS = "stop_turns"
"""The column of a stopping rule's average turns (``stop@tk`` holds its accuracy)."""
_LABELS = {_STOP_TURNS: "turns (stop)"}
"""Markdown headers that differ from the column name."""


@dataclass
class Entry:
    """One agent's figures on one environment.

    Attributes:
        agent: The agent's name.
        env_id: The environment id.
        metrics: ``p1@t1`` .. ``p1@tk`` and ``m1@t1`` .. ``m1@tk`` for turn-by-turn
            agents; ``p1@t1``, ``m1@t1``, ``mk@t1`` and ``pk@t1`` for parallel sampling.
        llm_calls: Mean LLM calls per problem.
        generated_tokens: Mean generated tokens per problem.
        wall_time: Seconds spent generating for all the problems (resumed runs keep
            the time recorded when each episode was played).
        stopping: A stopping rule (a learned `StoppingPolicy`) scored on the records
            over the k turns: its accuracy and average turns (m1@tk always uses k).
            None without a rule and for parallel sampling, whose turns are samples.
    """

    agent: str
    env_id: str
    metrics: dict[str, Estimate]
    llm_calls: float
    generated_tokens: float
    wall_time: float
    stopping: Selection | None = None

    @classmethod
    def from_evaluation(
        cls, evaluation: Evaluation, stopping: SelectionRule | None = None
    ) -> Entry:
        """Summarise an evaluation, with m1@tk at every turn k for the accuracy curves.

        Args:
            evaluation: The records and metrics of one agent on one environment.
            stopping: A selection rule (e.g. a `StoppingPolicy`) to score on the records
                over the k turns; left out for parallel sampling (records with samples).

        Returns:
            The entry.
        """
        records = evaluation.records
        turns = max(int(name[4:]) for name in evaluation.metrics if name.startswith("p1@t"))
        metrics = summarize(records, turns, curves=True)
        sampled = any(record.turns[0].samples for record in records if record.turns)
        if stopping is not None and not sampled:
            selection = evaluate_selection(records, stopping, max_turns=turns)
        else:
            selection = None
        return cls(
            agent=evaluation.agent,
            env_id=evaluation.env_id,
            metrics=dict(sorted(metrics.items(), key=lambda item: _metric_order(item[0]))),
            llm_calls=average_llm_calls(records),
            generated_tokens=average_generated_tokens(records),
            wall_time=sum(record.wall_time for record in records),
            stopping=selection,
        )

    def curve(self, kind: str, max_turns: int) -> list[float | None]:
        """Accuracy of ``kind`` (``"p1"`` or ``"m1"``) at turns 1..max_turns (None: not run)."""
        estimates = [self.metrics.get(f"{kind}@t{k}") for k in range(1, max_turns + 1)]
        return [None if estimate is None else estimate.value for estimate in estimates]

    def figure(self, column: str) -> Estimate | float | None:
        """The entry's figure in a `Leaderboard` column; None where it does not apply.

        ``stop@tk`` is the stopping rule's accuracy, ``stop_turns`` its average turns, and
        any other column a metric.
        """
        if not column.startswith("stop"):
            return self.metrics.get(column)
        if self.stopping is None:
            return None
        return self.stopping.average_turns if column == _STOP_TURNS else self.stopping.accuracy


@dataclass
class Leaderboard:
    """Entries of one run and the columns they are reported in.

    Attributes:
        entries: One per agent x environment, in run order.
        max_turns: k: the turn and sample count the columns are built from.
        settings: What produced the entries (model, seeds, ...), stored in the JSON.
        metadata: The model, back end, package versions, date and commit, given in
            every report; None leaves them out.
    """

    entries: list[Entry]
    max_turns: int
    settings: dict[str, Any] = field(default_factory=dict)
    metadata: RunMetadata | None = None

    @property
    def columns(self) -> list[str]:
        """``p1@t1`` .. ``p1@tk``, ``m1@tk``, ``mk@t1``, ``pk@t1``, each once (k = 1 merges some).

        When an entry has a stopping rule, ``stop@tk`` (its accuracy) and ``stop_turns``
        (its average turns) follow ``m1@tk``.
        """
        k = self.max_turns
        stopping = any(entry.stopping is not None for entry in self.entries)
        names = [
            *(f"p1@t{t}" for t in range(1, k + 1)),
            f"m1@t{k}",
            *([f"stop@t{k}", _STOP_TURNS] if stopping else []),
            f"m{k}@t1",
            f"p{k}@t1",
        ]
        return list(dict.fromkeys(names))

    def to_markdown(self) -> str:
        """The metadata line, then a table: percentages with their 95% Wilson intervals."""
        labels = [_LABELS.get(name, name) for name in self.columns]
        header = ["agent", "env", "n", *labels, "calls/problem", "tokens/problem", "time (s)"]
        lines = [self.metadata.to_markdown(), ""] if self.metadata is not None else []
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for entry in self.entries:
            cells = [_markdown_cell(entry.figure(name)) for name in self.columns]
            row = [
                entry.agent,
                entry.env_id,
                str(entry.metrics["p1@t1"].n),
                *cells,
                f"{entry.llm_calls:.1f}",
                f"{entry.generated_tokens:.0f}",
                f"{entry.wall_time:.0f}",
            ]
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines) + "\n"

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per entry, the rows of the CSV and JSON reports.

        Columns: ``model``, ``agent``, ``env_id``, ``n``; every metric any entry has, as
        fractions: ``name``, ``name_low``, ``name_high`` (``p1@t1`` .. ``p1@tk``,
        ``m1@t1`` .. ``m1@tk``, the stopping rule's ``stop@tk`` and ``stop_turns``,
        ``mk@t1``, ``pk@t1``); ``llm_calls``, ``generated_tokens``, ``wall_time``; then
        the rest of the metadata (`RunMetadata.columns`). A figure an entry lacks is None.
        """
        metadata = {} if self.metadata is None else self.metadata.columns()
        model = {"model": metadata.pop("model")} if metadata else {}
        rows = []
        for entry in self.entries:
            figures: dict[str, Any] = {}
            for column in self._figure_names():
                figure = entry.figure(column)
                names = _row_names(column)
                if isinstance(figure, Estimate):
                    figures.update(zip(names, (figure.value, figure.low, figure.high)))
                else:
                    figures.update(dict.fromkeys(names, figure))
            rows.append(
                {
                    **model,
                    "agent": entry.agent,
                    "env_id": entry.env_id,
                    "n": entry.metrics["p1@t1"].n,
                    **figures,
                    "llm_calls": entry.llm_calls,
                    "generated_tokens": entry.generated_tokens,
                    "wall_time": entry.wall_time,
                    **metadata,
                }
            )
        return rows

    def _figure_names(self) -> list[str]:
        """Every metric of any entry in `_metric_order`, the stopping rule's after ``m1@tk``."""
        names = sorted(
            {name for entry in self.entries for name in entry.metrics}, key=_metric_order
        )
        if any(entry.stopping is not None for entry in self.entries):
            after = max(i for i, name in enumerate(names) if name.startswith("m1@")) + 1
            names[after:after] = [f"stop@t{self.max_turns}", _STOP_TURNS]
        return names

    def to_csv(self) -> str:
        """The `rows` as CSV, fractions throughout; cells that do not apply are empty."""
        rows = self.rows()
        buffer = io.StringIO()
        header = list(rows[0]) if rows else []
        writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def to_json(self) -> str:
        """The `rows` as a JSON list of records (``pandas.read_json`` reads it as a table).

        Each record also holds the run's ``settings`` (a mapping); figures that do not
        apply are null.
        """
        records = [{**row, "settings": self.settings} for row in self.rows()]
        return json.dumps(records, indent=2, default=str) + "\n"


def _markdown_cell(figure: Estimate | float | None) -> str:
    if figure is None:
        return "–"
    return str(figure) if isinstance(figure, Estimate) else f"{figure:.2f}"


def _row_names(column: str) -> list[str]:
    if column == _STOP_TURNS:
        return [column]
    return [f"{column}{suffix}" for suffix in ("", "_low", "_high")]


def _metric_order(name: str) -> tuple[int, int]:
    """p1@t1..p1@tk, then m1@t1..m1@tk, then the sample metrics."""
    prefix, turn = name.split("@t")
    rank = {"p1": 0, "m1": 1}.get(prefix, 2 if prefix.startswith("m") else 3)
    return rank, int(turn)
