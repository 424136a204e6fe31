"""Layers: the environment package `rise_gym` never imports `agents` (imports run downward)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rise_gym"


def agents_imports(path: Path) -> list[str]:
    """Every ``import agents...`` / ``from agents... import`` in a file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = [node.module or ""]
        else:
            continue
        found += [
            f"line {node.lineno}: {module}"
            for module in modules
            if module == "agents" or module.startswith("agents.")
        ]
    return found


def test_rise_gym_never_imports_agents():
    offenders = {
        path.relative_to(ROOT).as_posix(): agents_imports(path)
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    upward = {name: lines for name, lines in offenders.items() if lines}
    assert not upward, f"rise_gym must not import agents (move the code up instead): {upward}"


def test_the_check_finds_an_upward_import(tmp_path):
    module = tmp_path / "module.py"
    module.write_text(
        "import os\n\n\ndef f():\n    from agents.stopping import x\n    import agents\n"
    )
    assert agents_imports(module) == ["line 5: agents.stopping", "line 6: agents"]
