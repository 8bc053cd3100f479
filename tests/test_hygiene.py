"""Project-wide hygiene that no single module test covers (non-negotiables in README/DESIGN).

`ruff` already bans importing pickle, random and numpy.random inside securefed/ (TID251); these
tests catch the remaining patterns by reading the source: unsafe loaders and layer leaks.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "securefed"
SOURCES = sorted(PACKAGE.rglob("*.py"))
TORCH_FREE = ("crypto", "encoding", "secagg", "personalize", "audit")


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(name)
    ]


def test_sources_found() -> None:
    assert PACKAGE / "crypto" / "prg.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_unsafe_deserialisation(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for call in _calls(tree, "load"):
        keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
        assert keywords.get("allow_pickle") != "True", f"{path}: np.load(allow_pickle=True)"
        if ast.unparse(call.func).startswith("torch."):
            assert keywords.get("weights_only") == "True", (
                f"{path}: torch.load without weights_only"
            )


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_torch_free_layers_do_not_mention_torch_imports(path: Path) -> None:
    layer = path.relative_to(PACKAGE).parts[0]
    if layer not in TORCH_FREE:
        pytest.skip("not a torch-free layer")
    assert not re.search(r"^\s*(import|from)\s+(torch|opacus)\b", path.read_text(), re.M)
