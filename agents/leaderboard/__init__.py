"""The leaderboard: agents x environments at equal compute, with Markdown/CSV/JSON/PNG reports.

Example:
    >>> from agents.leaderboard import LeaderboardConfig
    >>> config = LeaderboardConfig(agents=("sequential", "parallel"), num_problems=8)
    >>> config.run_folder().parent.as_posix()
    'runs/leaderboard'
"""

from agents.leaderboard.config import DEFAULT_AGENTS, DEFAULT_ENVS, LeaderboardConfig
from agents.leaderboard.report import Entry, Leaderboard
from agents.leaderboard.roster import AGENT_KINDS, build_agent
from agents.leaderboard.run import check_envs, run_leaderboard, write_reports

__all__ = [
    "AGENT_KINDS",
    "DEFAULT_AGENTS",
    "DEFAULT_ENVS",
    "Entry",
    "Leaderboard",
    "LeaderboardConfig",
    "build_agent",
    "check_envs",
    "run_leaderboard",
    "write_reports",
]
