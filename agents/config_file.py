"""Config files of the ``rise-gym`` command: a command's options as YAML or JSON keys.

A config file is a mapping from option names to values: every option of the command
is a key (``num_problems`` or ``num-problems``), with the value it takes on the command
line as YAML or JSON (a list for an option that takes several values, a mapping for a
KEY=VALUE option, true or false for a flag, null for None). Values go through the
option's own conversion and choices, so a file and the command line accept the same
values; options given on the command line override the file's.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="demo")
    >>> _ = parser.add_argument("--num-problems", type=int, default=16)
    >>> option_values(parser, {"num-problems": "8"}, source="run.yaml")
    {'num_problems': 8}
    >>> option_values(parser, {"num_problem": 8}, source="run.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    agents.config_file.ConfigFileError: run.yaml: unknown key 'num_problem' (did you mean ...
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from rise_gym.errors import RiseGymError

SUFFIXES = (".yaml", ".yml", ".json")
"""The file names a config file may have: YAML or JSON."""

_NOT_KEYS = ("help", "config")
"""Options that are not config keys: help, and the config file itself."""


class ConfigFileError(RiseGymError, ValueError):
    """A config file cannot be read, or has an unknown key or a bad value (named, with the fix)."""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML (``.yaml``, ``.yml``) or JSON (``.json``) config file.

    An empty YAML file is an empty mapping.

    Raises:
        ConfigFileError: The file is missing, unreadable, of another kind, not valid
            YAML or JSON, or not a mapping.
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ConfigFileError(
            f"config file {path} is neither YAML nor JSON; name it with one of {list(SUFFIXES)}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else error
        raise ConfigFileError(f"cannot read the config file {path}: {reason or error}") from error
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ConfigFileError(f"config file {path} is not valid {kind}: {error}") from error
    if values is None and path.suffix != ".json":
        return {}
    if not isinstance(values, dict):
        raise ConfigFileError(
            f"config file {path} holds a {type(values).__name__}, not a mapping of option "
            "names to values (e.g. `num_problems: 16`)"
        )
    return values


def option_values(
    parser: argparse.ArgumentParser, values: Mapping[str, Any], *, source: str
) -> dict[str, Any]:
    """A config file's values as ``parser``'s option values, keyed by destination.

    Each value is converted and checked as the option would convert and check it on
    the command line. Pass the result to ``parser.set_defaults`` and parse again, so
    that the command line overrides the file.

    Args:
        parser: The parser of one command.
        values: Option names (dashes or underscores) and their values.
        source: What ``values`` came from (the file), to name in errors.

    Returns:
        The converted values by option destination (``num_problems``).

    Raises:
        ConfigFileError: A key is not an option of ``parser`` (the message lists the
            keys), or a value is not one the option accepts (the message says which).
    """
    options = config_options(parser)
    converted = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in options:
            close = difflib.get_close_matches(name, options, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigFileError(
                f"{source}: unknown key {key!r}{hint}; the keys of {parser.prog} are: "
                + ", ".join(sorted(options))
            )
        converted[name] = _converted(options[name], value, f"{source}: {name}")
    return converted


def resolved_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """Every option of ``parser`` with its value in ``args``, as a config file holds it.

    Read back with `option_values`, the result gives the same options again.
    """
    return {
        name: _plain(action, getattr(args, name)) for name, action in config_options(parser).items()
    }


def write_config_file(path: str | Path, config: Mapping[str, Any], *, command: str) -> Path:
    """Write ``config`` (e.g. `resolved_config`) to ``path`` as YAML, with a comment on its use.

    Args:
        path: The ``.yaml`` file to write; its folder is created.
        config: Option names and plain values.
        command: The command it configures, e.g. ``"rise-gym leaderboard"``.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# The resolved options of a `{command}` run (config file, then command line).\n"
        f"# Run it again with: {command} --config {path}\n"
    )
    body = yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)
    path.write_text(header + body, encoding="utf-8")
    return path


def config_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The options of ``parser`` a config file may set, by destination."""
    return {
        action.dest: action
        for action in parser._actions
        if action.option_strings and action.dest not in _NOT_KEYS
    }


def key_value(value: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE`` (VALUE read as JSON when it parses), the type of KEY=VALUE options.

    Example:
        >>> key_value("difficulty=2"), key_value("split=test")
        (('difficulty', 2), ('split', 'test'))
    """
    key, sep, raw = value.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _converted(action: argparse.Action, value: Any, where: str) -> Any:
    """``value`` as ``action`` stores it; ConfigFileError naming ``where`` if it does not fit."""
    if action.type is key_value:
        if not isinstance(value, dict) or not all(str(k).isidentifier() for k in value):
            raise ConfigFileError(f"{where} must be a mapping of names to values, got {value!r}")
        return list(value.items())
    if action.nargs == 0:  # a flag
        if not isinstance(value, bool):
            raise ConfigFileError(f"{where} must be true or false, got {value!r}")
        return value
    if action.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]
        return [_converted_scalar(action, item, where) for item in items]
    return _converted_scalar(action, value, where)


def _converted_scalar(action: argparse.Action, value: Any, where: str) -> Any:
    if value is None:
        if action.default is None or _accepts_none(action):
            return None
        raise ConfigFileError(f"{where} cannot be null; give a value (default: {action.default})")
    if isinstance(value, (bool, list, dict)):
        raise ConfigFileError(f"{where} takes one value, not {value!r}")
    text = value if isinstance(value, str) else str(value)
    try:
        converted = text if action.type is None else action.type(text)  # type: ignore[operator]
    except argparse.ArgumentTypeError as error:
        raise ConfigFileError(f"{where}: {error}") from error
    except (TypeError, ValueError) as error:
        kind = getattr(action.type, "__name__", "")
        raise ConfigFileError(f"{where}: invalid {kind} value: {value!r}") from error
    if action.choices is not None and converted not in action.choices:
        raise ConfigFileError(
            f"{where}: invalid choice {value!r}; choose from {', '.join(map(str, action.choices))}"
        )
    return converted


def _accepts_none(action: argparse.Action) -> bool:
    """Whether the option reads ``none`` as None (e.g. ``--history-window none``)."""
    try:
        return action.type is not None and action.type("none") is None  # type: ignore[operator]
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        return False


def _plain(action: argparse.Action, value: Any) -> Any:
    """``value`` as YAML and JSON hold it: paths as text, lists, KEY=VALUE pairs as a mapping."""
    if action.type is key_value:
        return {key: _plain_value(item) for key, item in value}
    return _plain_value(value)


def _plain_value(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain_value(item) for key, item in value.items()}
    return value
