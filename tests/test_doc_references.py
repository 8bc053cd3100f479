"""Every repository path and test id cited in the documentation exists (issue 8).

The Markdown under `docs/`, `threat_model/`, `examples/` and the top-level `README.md` cites code
and tests as inline code: `securefed/dp/state.py`, `tests/dp/test_budget.py::test_x`,
`tests/x.py::TestCase::test_y[case]`, `securefed/dp/steppers.py::Proximal.add_gradient`. This
test resolves each one against the working tree -- the path must be a file or directory, and
each `::name` part must be a `def`/`class` (or module-level assignment) in that Python file,
nested parts inside the class before it -- so a rename or deletion cannot leave the compliance
mapping, the threat model or the guides pointing at nothing.

Not references: tokens with a space, `*`, `…`, `...`, `<` or `{` (commands, globs, templates),
anything in a fenced code block, and protocol labels in the `securefed/` namespace that are not
paths (`securefed/v1/mask`, `securefed/weights`): a token that does not exist on disk counts as
a label only when the package source spells it as a string literal (or lies under a literal
prefix such as `securefed/v1/` that is not itself a directory).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_DIRS = ("docs", "threat_model", "examples")
PATH_PREFIXES = ("securefed/", "tests/", "threat_model/", "docs/", "examples/")
NOT_A_REFERENCE = (" ", "*", "…", "...", "<", "{")

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_LINE_SUFFIX = re.compile(r":\d+(-\d+)?$")
_PARAM_ID = re.compile(r"\[.*\]$")


@dataclass(frozen=True)
class Reference:
    doc: Path
    line: int
    token: str

    def where(self, root: Path) -> str:
        return f"{self.doc.relative_to(root)}:{self.line}: `{self.token}`"


def markdown_files(root: Path) -> list[Path]:
    files = [p for d in DOC_DIRS if (root / d).is_dir() for p in (root / d).rglob("*.md")]
    if (root / "README.md").is_file():
        files.append(root / "README.md")
    return sorted(files)


def inline_code(text: str) -> Iterator[tuple[int, str]]:
    """(line number, token) for every single-backtick span outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            for match in _INLINE.finditer(line):
                yield number, match.group(1).strip()


def is_candidate(token: str) -> bool:
    return token.startswith(PATH_PREFIXES) and not any(c in token for c in NOT_A_REFERENCE)


def references(root: Path) -> list[Reference]:
    return [
        Reference(doc, line, token)
        for doc in markdown_files(root)
        for line, token in inline_code(doc.read_text(encoding="utf-8"))
        if is_candidate(token)
    ]


def package_labels(root: Path) -> set[str]:
    """String literals in the package source that start with `securefed/` (protocol labels)."""
    labels: set[str] = set()
    for source in (root / "securefed").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
                value = (
                    node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
                )
                value = value.rstrip("\x00")
                if value.startswith("securefed/"):
                    labels.add(value)
    return labels


def is_label(root: Path, token: str, labels: set[str]) -> bool:
    if not token.startswith("securefed/"):
        return False
    if token in labels:
        return True
    return any(
        label.endswith("/") and token.startswith(label) and not (root / label).is_dir()
        for label in labels
    )


def _names_bound(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def _defines(body: list[ast.stmt], name: str) -> ast.stmt | None:
    return next((node for node in body if name in _names_bound(node)), None)


def missing_name(source: Path, names: list[str]) -> str | None:
    """The first of `names` (nested, outermost first) that `source` does not define."""
    body = ast.parse(source.read_text(encoding="utf-8"), filename=str(source)).body
    for depth, name in enumerate(names):
        node = _defines(body, name)
        if node is None:
            return ".".join(names[: depth + 1])
        body = node.body if isinstance(node, ast.ClassDef) else []
    return None


def problem(root: Path, token: str, labels: set[str]) -> str | None:
    """Why `token` does not resolve, or None when it does."""
    path_part, *name_parts = token.split("::")
    path_part = _LINE_SUFFIX.sub("", path_part)
    target = root / path_part
    if not target.exists():
        return None if not name_parts and is_label(root, path_part, labels) else "no such path"
    if not name_parts:
        return None
    if not (target.is_file() and target.suffix == ".py"):
        return "`::` names need a Python file"
    names = [n for part in name_parts for n in _PARAM_ID.sub("", part).split(".")]
    missing = missing_name(target, names)
    return None if missing is None else f"{path_part} defines no `{missing}`"


def broken_references(root: Path) -> tuple[list[str], int]:
    """(descriptions of the broken references, number of references checked)."""
    labels = package_labels(root) if (root / "securefed").is_dir() else set()
    found = references(root)
    broken = []
    for ref in found:
        why = problem(root, ref.token, labels)
        if why is not None:
            broken.append(f"{ref.where(root)} -- {why}")
    return broken, len(found)


def test_every_path_and_test_id_cited_in_the_docs_exists() -> None:
    broken, checked = broken_references(ROOT)
    assert checked >= 50, f"only {checked} references found: is the scanner still matching?"
    assert not broken, f"{len(broken)} broken documentation reference(s):\n" + "\n".join(broken)


def test_the_checker_flags_missing_paths_and_names(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        "class TestA:\n    def test_in(self):\n        pass\n\ndef test_ok():\n    pass\n",
        encoding="utf-8",
    )
    (tmp_path / "securefed").mkdir()
    (tmp_path / "securefed" / "labels.py").write_text('LABEL = b"securefed/v1/"\n')
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text(
        "Fine: `tests/test_x.py::test_ok[case-1]`, `tests/`, `tests/test_x.py::TestA::test_in`,\n"
        "`securefed/v1/mask` (a label), `securefed/<module>.py`, `tests/*.py`, `make test`.\n"
        "Broken: `securefed/missing.py` and `tests/test_x.py::test_gone`\n"
        "```\n`tests/in_a_fence.py`\n```\n"
        "and `tests/test_x.py::TestA::test_out`, `tests/::test_ok`.\n",
        encoding="utf-8",
    )
    (tmp_path / "README.md").write_text("See `docs/nowhere.md`.\n", encoding="utf-8")

    broken, checked = broken_references(tmp_path)

    assert checked == 9
    assert broken == [
        "README.md:1: `docs/nowhere.md` -- no such path",
        "docs/guide.md:3: `securefed/missing.py` -- no such path",
        "docs/guide.md:3: `tests/test_x.py::test_gone` -- tests/test_x.py defines no `test_gone`",
        "docs/guide.md:7: `tests/test_x.py::TestA::test_out` -- "
        "tests/test_x.py defines no `TestA.test_out`",
        "docs/guide.md:7: `tests/::test_ok` -- `::` names need a Python file",
    ]
