"""The leaderboard's figure: accuracy against turn, one panel per environment."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.leaderboard.report import Leaderboard


def plot_accuracy(leaderboard: Leaderboard, path: str | Path) -> Path:
    """Save a PNG of accuracy (%) against turn for every agent, one panel per environment.

    Turn-by-turn agents get two curves: p1@tk (solid: an oracle stops at the first
    correct answer) and m1@tk (dashed: majority vote over the first k turns, no
    oracle). A learned stopping rule is a star at its accuracy and average turns.
    Parallel sampling is drawn at turn k, the equal-compute point: pk@t1 as a filled
    marker, mk@t1 as a hollow one. Rendered with Agg, so no display is needed.

    Args:
        leaderboard: The entries to draw.
        path: The PNG file to write.

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = leaderboard.max_turns
    env_ids = list(dict.fromkeys(entry.env_id for entry in leaderboard.entries))
    figure = Figure(figsize=(4.5 * len(env_ids), 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(env_ids), squeeze=False)[0]
    agents = list(dict.fromkeys(entry.agent for entry in leaderboard.entries))
    colors = {agent: f"C{i}" for i, agent in enumerate(agents)}
    turns = list(range(1, k + 1))
    for ax, env_id in zip(axes, env_ids):
        for entry in (e for e in leaderboard.entries if e.env_id == env_id):
            color = colors[entry.agent]
            if f"p{k}@t1" in entry.metrics:
                for name, fill in ((f"p{k}@t1", color), (f"m{k}@t1", "none")):
                    ax.plot(
                        [k],
                        [100 * entry.metrics[name].value],
                        "o",
                        color=color,
                        markerfacecolor=fill,
                        label=f"{entry.agent} {name}",
                    )
                continue
            for kind, style in (("p1", "-"), ("m1", "--")):
                values = [float("nan") if v is None else 100 * v for v in entry.curve(kind, k)]
                ax.plot(
                    turns, values, style, marker=".", color=color, label=f"{entry.agent} {kind}@tk"
                )
            if entry.stopping is not None:
                ax.plot(
                    [entry.stopping.average_turns],
                    [100 * entry.stopping.accuracy.value],
                    "*",
                    color=color,
                    markersize=10,
                    label=f"{entry.agent} {entry.stopping.rule}",
                )
        ax.set(title=env_id, xlabel="turn k", ylabel="accuracy (%)", xticks=turns)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    path = Path(path)
    figure.savefig(path, dpi=120)
    return path
