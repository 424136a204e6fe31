"""Data loading: typed problem records from local files, installed packages or the hub."""

from rise_gym.data.code import load_code_problems
from rise_gym.data.math import load_math_problems
from rise_gym.data.sources import DataSource, ProblemSet, resolve_rows

__all__ = ["DataSource", "ProblemSet", "load_code_problems", "load_math_problems", "resolve_rows"]
