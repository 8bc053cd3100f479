"""The compliance mapping: loads, cites only supported clauses, and docs/compliance.md matches."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from securefed.audit.compliance import (
    load_compliance_mapping,
    main,
    render_compliance_markdown,
)
from securefed.errors import ConfigError

DOC = Path(__file__).resolve().parents[2] / "docs" / "compliance.md"

# Clauses as precisely as the project's reference list (compliance sources) supports them.
SUPPORTED = re.compile(
    r"^(PIPL Art\. (6|13|23|51\(3\)|55\u201356|20\u201321|73\(3\)/\(4\))"  # \u2013: en dash
    r"|DSL Art\. (21|27|30)"
    r"|GDPR Art\. (5\(1\)\(c\)|5\(2\)|22|25|26|28|32\(1\)\(a\)|35\(3\)\(a\))"
    r"|EU AI Act (Art\. (10|12|15\(5\)|19|26\(6\))|Annex III point 5\(b\))"
    r"|JR/T 0196-2020( §7\.[56])?|JR/T 0171-2020|JR/T 0197-2020|JR/T 0223-2021"
    r"|GLBA Safeguards Rule, 16 CFR 314\.4|SR 11-7|CFPB Circular 2022-03|FIPS 140-3 \(IG C\.K\)"
    r"|ISO/IEC 27001:2022 Annex A 8\.(15|24)|ISO/IEC 20889|ISO/IEC 27559|ISO/IEC 27701"
    r"|NIST SP 800-226|BCBS 239)$"
)
REQUIRED = {
    "record-level-dp",
    "secure-aggregation",
    "target-blinded-aggregation",
    "signed-ledger",
    "cipher-suites",
    "encrypted-key-files",
    "no-pickle",
}


def test_the_packaged_mapping_loads_and_cites_supported_clauses() -> None:
    mapping = load_compliance_mapping()
    ids = [m.id for m in mapping.mechanisms]
    assert set(ids) >= REQUIRED
    assert len(ids) == len(set(ids))
    clauses = [c for m in mapping.mechanisms for c in m.clauses]
    clauses += [c for gap in mapping.not_addressed for c in gap.clauses]
    unsupported = [c for c in clauses if not SUPPORTED.fullmatch(c)]
    assert unsupported == []
    for mechanism in mapping.mechanisms:
        assert mechanism.evidence
        assert mechanism.limits
    assert "compliant" not in " ".join(m.mechanism + m.protects for m in mapping.mechanisms)


def test_docs_compliance_md_matches_the_generator() -> None:
    assert DOC.read_text(encoding="utf-8") == render_compliance_markdown(), (
        "regenerate with: python -m securefed.audit.compliance -o docs/compliance.md"
    )


def test_module_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert capsys.readouterr().out == render_compliance_markdown()
    assert main(["-o", str(tmp_path / "c.md")]) == 0
    assert (tmp_path / "c.md").read_text(encoding="utf-8") == render_compliance_markdown()
    result = subprocess.run(
        [sys.executable, "-m", "securefed.audit.compliance"],
        capture_output=True,
        text=True,
        check=True,
        encoding="utf-8",
    )
    assert result.stdout == render_compliance_markdown()


@pytest.mark.parametrize(
    "text",
    [
        "not = [toml",
        'format = "other"',
        'format = "securefed/compliance/v1"\n[[mechanism]]\nid = "x"\n',
        'format = "securefed/compliance/v1"\n[[mechanism]]\nid = "x"\nmechanism = "m"\n'
        'protects = "p"\nclauses = []\nevidence = "e"\nlimits = "l"\n'
        '[[not_addressed]]\nclauses = ["c"]\nnote = "n"\n',
    ],
)
def test_invalid_mappings_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="compliance mapping"):
        load_compliance_mapping(text)


def test_importing_audit_loads_neither_torch_nor_opacus() -> None:
    code = (
        "import sys, securefed.audit; "
        "print(sorted(m for m in ('torch', 'opacus') if m in sys.modules))"
    )
    result = subprocess.run(  # noqa: S603 -- fixed argv: this interpreter and a literal program
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
