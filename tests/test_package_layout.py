"""Data flows one way through tracekit's packages (README, Development: package layout).

Every `import` of another tracekit package, at module level or inside a function, must point to a
package listed after the importer in `FLOW`; the one exception is named in `MUTUAL`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tracekit"
FLOW = ["cli", "recorder", "simulator", "probe", "vmlab", "replay", "report", "trace", "kernel"]
# A Replay renders itself through report/ (__rich__, _repr_html_); report/ charts read replay timelines.
MUTUAL = {("replay", "report"), ("report", "replay")}
LEAVES = {"errors", "lazy", "teardown"}  # modules every package may import


def _imported_packages(path: Path) -> set[str]:
    packages = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "tracekit" else [f"tracekit.{a.name}" for a in node.names]
        else:
            continue
        packages |= {name.split(".")[1] for name in names if name.startswith("tracekit.")}
    return packages


def test_flow_names_every_package():
    on_disk = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert on_disk == set(FLOW), f"place {sorted(on_disk ^ set(FLOW))} in FLOW (and in the README's package layout)"


@pytest.mark.parametrize("package", FLOW)
def test_a_package_imports_only_downstream(package):
    allowed = set(FLOW[FLOW.index(package):]) | LEAVES | {other for first, other in MUTUAL if first == package}
    upward = {f"{path.relative_to(PACKAGE)} imports tracekit.{name}"
              for path in sorted((PACKAGE / package).rglob("*.py"))
              for name in _imported_packages(path) - allowed}
    assert not upward, sorted(upward)
