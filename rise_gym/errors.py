"""Errors raised by rise-gym, each naming the bad value and the fix."""

from __future__ import annotations


class RiseGymError(Exception):
    """Base class of every error raised by rise-gym."""


class DatasetNotFound(RiseGymError, FileNotFoundError):
    """No source (local file, installed package, hub) could provide a data set."""


class DataFileError(RiseGymError, ValueError):
    """A data file or one of its rows cannot be read (the message says where and the fix)."""


class EpisodeNotStarted(RiseGymError, RuntimeError):
    """`step` was called before `reset`."""


class EpisodeFinished(RiseGymError, RuntimeError):
    """`step` was called after the episode ended (terminated or truncated)."""


class GraderTimeout(RiseGymError, TimeoutError):
    """A grading call ran past its hard timeout and its worker was killed."""


class SandboxError(RiseGymError, RuntimeError):
    """The code sandbox itself failed; the program was neither passed nor failed."""
