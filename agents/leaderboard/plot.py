"""The leaderboard's figure: accuracy against turn, one panel per environment."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.leaderboard.report import Leaderboard
    from rise_gym.metrics import Estimate


def plot_accuracy(leaderboard: Leaderboard, path: str | Path) -> Path:
    """Save a PNG of accuracy (%) against turn for every agent, one panel per environment.

    Each point has its 95% interval as an error bar; each panel's title names the
    model and the number of problems. Turn-by-turn agents get two curves: p1@tk
    (solid: an oracle stops at the first correct answer) and m1@tk (dashed: majority
    vote over the first k turns, no oracle). A learned stopping rule is a star at its
    accuracy and average turns. Parallel sampling is drawn as squares without a line at
    turn k, the equal-compute point: pk@t1 filled, mk@t1 hollow. Rendered with Agg, so
    no display is needed.

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
    model = leaderboard.settings.get("model", "model not recorded")
    for ax, env_id in zip(axes, env_ids):
        for entry in (e for e in leaderboard.entries if e.env_id == env_id):
            color = colors[entry.agent]
            if f"p{k}@t1" in entry.metrics:  # parallel: squares at k, no line
                for name, fill, shift in ((f"p{k}@t1", color, -0.08), (f"m{k}@t1", "white", 0.08)):
                    estimate = entry.metrics[name]
                    ax.errorbar(
                        [k + shift],
                        [100 * estimate.value],
                        yerr=_error_bar([estimate]),
                        fmt="s",
                        markersize=7,
                        color=color,
                        markerfacecolor=fill,
                        capsize=3,
                        label=f"{entry.agent} {name} ({k} samples)",
                    )
                continue
            for kind, style in (("p1", "-"), ("m1", "--")):
                estimates = [entry.metrics.get(f"{kind}@t{t}") for t in turns]
                values = [float("nan") if e is None else 100 * e.value for e in estimates]
                ax.errorbar(
                    turns,
                    values,
                    yerr=_error_bar(estimates),
                    fmt=style,
                    marker="o",
                    markersize=4,
                    color=color,
                    capsize=2,
                    alpha=0.9,
                    label=f"{entry.agent} {kind}@tk",
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
        sizes = {e.metrics["p1@t1"].n for e in leaderboard.entries if e.env_id == env_id}
        n = "/".join(str(size) for size in sorted(sizes))
        ax.set(
            title=f"{env_id}\n{model}, n = {n} problems",
            xlabel="turn k (parallel: samples)",
            ylabel="accuracy (%), 95% intervals",
            xticks=turns,
        )
        ax.title.set_fontsize("small")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    path = Path(path)
    figure.savefig(path, dpi=120)
    return path


def _error_bar(estimates: list[Estimate | None]) -> list[list[float]]:
    """Distances (in %) from each value down to its interval's low and up to its high."""
    below = [0.0 if e is None else 100 * (e.value - e.low) for e in estimates]
    above = [0.0 if e is None else 100 * (e.high - e.value) for e in estimates]
    return [below, above]
