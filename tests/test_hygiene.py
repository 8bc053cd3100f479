"""Project-wide hygiene that no single module test covers (non-negotiables in README/DESIGN).

`ruff` bans importing pickle, random and numpy.random inside securefed/ (TID251) and
`lint-imports` keeps torch out of the torch-free layers; these tests read the sources themselves,
so the rules hold even if a linter configuration is loosened, and catch unsafe loader calls.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "securefed"
SOURCES = sorted(PACKAGE.rglob("*.py"))
TORCH_FREE = ("crypto", "encoding", "secagg", "personalize", "audit", "errors.py")
NEVER = ("pickle", "random", "numpy.random")
NOT_IN_TORCH_FREE = ("torch", "opacus")


def _id(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


def imported_modules(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def matching(modules: set[str], banned: tuple[str, ...]) -> set[str]:
    return {m for m in modules if any(m == b or m.startswith(b + ".") for b in banned)}


def test_the_scanner_sees_forbidden_imports() -> None:
    sample = "import torch.nn\nfrom numpy import random\nfrom numpy.random import default_rng\n"
    found = matching(imported_modules(sample), NEVER + NOT_IN_TORCH_FREE)
    assert found == {"torch.nn", "numpy.random", "numpy.random.default_rng"}
    assert PACKAGE / "crypto" / "prg.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=_id)
def test_no_pickle_or_non_cryptographic_randomness(path: Path) -> None:
    assert not matching(imported_modules(path.read_text(encoding="utf-8")), NEVER)


@pytest.mark.parametrize(
    "path", [p for p in SOURCES if _id(p).split(os.sep)[0] in TORCH_FREE], ids=_id
)
def test_torch_free_layers_do_not_import_torch(path: Path) -> None:
    assert not matching(imported_modules(path.read_text(encoding="utf-8")), NOT_IN_TORCH_FREE)


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(name)
    ]


@pytest.mark.parametrize("path", SOURCES, ids=_id)
def test_no_unsafe_deserialisation(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for call in _calls(tree, "load"):
        keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
        assert keywords.get("allow_pickle") != "True", f"{path}: np.load(allow_pickle=True)"
        if ast.unparse(call.func).startswith("torch."):
            assert keywords.get("weights_only") == "True", (
                f"{path}: torch.load without weights_only"
            )


def test_importing_the_torch_free_layers_loads_neither_torch_nor_numpy_random() -> None:
    code = (
        "import sys, securefed.crypto, securefed.encoding, securefed.secagg, "
        "securefed.personalize; "
        "print(sorted(m for m in ('torch', 'opacus', 'numpy.random') if m in sys.modules))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(  # noqa: S603 -- fixed argv: this interpreter and a literal program
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert result.stdout.strip() == "[]"
