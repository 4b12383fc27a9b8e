"""The house rules: imports point down the floors, and installing puts no generic name on the import path."""

import ast
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Top-level packages and modules of this repository (its import root).
OURS = ("core", "encoders", "fusion", "envs", "action_head", "policy", "data", "evaluation", "experiment",
        "benchmarks", "train", "evaluate", "ablate")

# What each floor may import from ours (a package, or one module of it). Not listed: the top floor
# (experiment, benchmarks and the scripts), which may import anything below it.
ALLOWED = {
    "core": set(),
    "encoders": {"core"},
    "fusion": {"core"},
    "envs": {"core"},
    "action_head": {"core", "fusion.context"},
    "policy": {"core", "encoders", "fusion", "action_head", "envs"},
    "data": {"core", "envs"},
    "evaluation": {"core", "envs", "policy"},
}


def imports_of(source: str) -> set[str]:
    """Absolute module names imported anywhere in ``source`` (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from fusion import context`
    return names


def violations(floor: str, source: str) -> list[str]:
    """The imports in a module of ``floor`` that reach a floor it may not import."""
    allowed = ALLOWED[floor]
    bad = []
    for name in sorted(imports_of(source)):
        top = name.split(".")[0]
        if top not in OURS or top == floor:
            continue
        if not any(name == a or name.startswith(a + ".") for a in allowed):
            bad.append(name)
    names = imports_of(source)
    # `from fusion import context` lists `fusion` too: that package counts only if nothing allowed under it is named;
    # `from policy.x import Y` lists `policy.x.Y` too: report the module only.
    return [b for b in bad if not any(n.startswith(b + ".") and n not in bad for n in names)
            and not any(b.startswith(other + ".") for other in bad)]


def test_the_checker_catches_an_upward_import():
    assert violations("core", "from policy.vla_policy import VLAPolicy\n") == ["policy.vla_policy"]
    assert violations("action_head", "def f():\n    from fusion.transformer import FusionTransformer\n") == [
        "fusion.transformer"]
    assert violations("action_head", "from fusion.context import Context\nimport torch\n") == []
    assert violations("envs", "import data.dataset\n") == ["data.dataset"]


@pytest.mark.parametrize("floor", sorted(ALLOWED))
def test_imports_point_down(floor):
    files = sorted((REPO / floor).rglob("*.py"))
    assert files, f"no modules under {floor}/"
    found = {str(f.relative_to(REPO)): violations(floor, f.read_text()) for f in files}
    assert not {f: v for f, v in found.items() if v}, f"{floor}/ imports a floor above it (see ALLOWED)"


def test_install_puts_no_generic_name_on_the_import_path(tmp_path):
    """From outside the repository, none of our top-level names resolves into it (HF's `evaluate` may)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = ("import importlib.util, json, sys\n"
             f"print(json.dumps({{n: getattr(importlib.util.find_spec(n), 'origin', None) for n in {OURS!r}}}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True)
    import json

    origins = json.loads(out.stdout)
    inside = {name: origin for name, origin in origins.items()
              if origin and Path(origin).resolve().is_relative_to(REPO)}
    assert not inside, f"importable from outside the repository: {inside}"


def test_the_installed_distribution_ships_no_generic_top_level_name():
    try:
        files = importlib.metadata.files("easyvla") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("easyvla is not installed (pip install -e .)")
    tops = {Path(str(f)).parts[0].removesuffix(".py") for f in files}
    assert not tops & set(OURS), f"the install puts {sorted(tops & set(OURS))} into site-packages"
