"""The audit report: structure, plots, escaping, missing data, verification, compliance table."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from securefed.audit import (
    SECTION_IDS,
    Hazard,
    Ledger,
    Misbehaviour,
    RoundSpend,
    Unmask,
    load_compliance_mapping,
    render_report,
)
from securefed.audit.plots import MAX_LINES, Series, epsilon_plot, metric_plot
from securefed.audit.report_credit import roc_curve
from securefed.errors import ConfigError
from securefed.testing import make_federation
from tests.audit import Run, build_documented_run, build_run

HAZARD = "<script>alert('x')</script> & <b>co</b>"
METRICS = {
    "mode": "fedavg",
    "rounds": 4,
    "secure": True,
    "dp": {
        "target_epsilon": 8.0,
        "delta": 1e-5,
        "noise_multiplier": 1.1,
        "max_grad_norm": 1.0,
        "sample_rate": 0.02,
        "accountant": "rdp",
        "accountant_version": "opacus 1.5.4",
        "by_client": {
            "bank-0": {"noise_multiplier": 1.1, "sample_rate": 0.01, "steps_per_round": 100},
            "bank-1": {"noise_multiplier": 1.1, "sample_rate": 0.02, "steps_per_round": 50},
            "bank-2": {"noise_multiplier": 1.1, "sample_rate": 0.01, "steps_per_round": 100},
        },
    },
    "history": [
        {"round": r, "mean_test_accuracy": 0.5 + 0.1 * r, "max_epsilon": 0.5 * r}
        for r in range(1, 5)
    ],
    "baselines": {"local": {"mean_test_accuracy": 0.7}, "fedavg": {"mean_test_accuracy": 0.8}},
    "clients": [
        {"id": f"bank-{i}", "test_accuracy": 0.8, "epsilon": 2.0, "delta": 1e-5} for i in range(3)
    ],
    "mean_test_accuracy": 0.85,
    "config_sha256": "ab" * 32,
}


@pytest.fixture
def run(tmp_path: Path) -> Run:
    run = build_run(tmp_path, hazard=HAZARD)
    (run.run_dir / "metrics.json").write_text(json.dumps(METRICS))
    canary = {"epsilon_lower_bound": 0.9, "claimed_epsilon": 3.0, "confidence": 0.95}
    (run.run_dir / "canary.json").write_text(json.dumps(canary))
    return run


def _render(run: Run, tmp_path: Path) -> tuple[str, str]:
    summary = render_report(
        run.run_dir, out_html=tmp_path / "report.html", out_md=tmp_path / "report.md"
    )
    assert summary.sections == SECTION_IDS
    return (tmp_path / "report.html").read_text(), (tmp_path / "report.md").read_text()


def _parse_svg(svg: str) -> ET.Element:
    """Parse an SVG the report generated. It carries no DTD or entity declaration (asserted
    first), so the XML entity-expansion attacks S314 guards against cannot apply."""
    assert "<!DOCTYPE" not in svg
    assert "<!ENTITY" not in svg
    return ET.fromstring(svg)  # noqa: S314 -- our own generated text, checked DTD-free above


class _TagChecker(HTMLParser):
    """Checks that every non-void element of an HTML page is closed in nesting order."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids += [value for name, value in attrs if name == "id" and value is not None]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids += [value for name, value in attrs if name == "id" and value is not None]

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _section(page: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', page, re.DOTALL)
    assert match is not None, section_id
    return match.group(1)


def test_report_structure_and_plot(run: Run, tmp_path: Path) -> None:
    summary = render_report(run.run_dir, out_html=tmp_path / "r.html", out_md=tmp_path / "r.md")
    assert (summary.verified, summary.clients_plotted, summary.rounds_plotted) == (True, 3, 4)
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    for section_id in SECTION_IDS:
        assert page.count(f'<section id="{section_id}">') == 1
    epsilon = _section(page, "epsilon")
    assert epsilon.count("<svg") == 1
    lines = re.findall(r'<g id="epsilon-plot-(series-\d+|budget)"', epsilon)
    assert lines == ["series-0", "series-1", "series-2", "budget"]
    for name in ("bank-0", "bank-1", "bank-2", "budget ε = 8"):
        assert f">{name}</text>" in epsilon
    assert "<td>2.25</td>" in epsilon  # bank-2, round 3
    for svg in re.findall(r"<svg.*?</svg>", page, re.DOTALL):
        _parse_svg(svg)  # well-formed XML
    assert "INTACT" in _section(page, "verification")


def test_the_page_is_well_nested_with_unique_ids(run: Run, tmp_path: Path) -> None:
    page, _ = _render(run, tmp_path)
    checker = _TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    assert len(checker.ids) == len(set(checker.ids))
    assert set(SECTION_IDS) <= set(checker.ids)
    assert {"epsilon-plot", "accuracy-plot"} <= set(checker.ids)
    contents = re.search(r'<nav id="contents">(.*?)</nav>', page, re.DOTALL)
    assert contents is not None
    assert re.findall(r'href="#([^"]+)"', contents.group(1)) == list(SECTION_IDS)


def test_every_section_says_what_it_found(run: Run, tmp_path: Path) -> None:
    page, _ = _render(run, tmp_path)
    assert "one record of one institution" in _section(page, "unit-of-privacy")
    dp = _section(page, "dp-parameters")
    assert "opacus-1.5" in dp
    assert "<td>400</td>" in dp  # steps over 4 rounds
    assert "<tr><td>sample_rate</td><td>0.02</td></tr>" in dp
    assert "<tr><td>bank-1</td><td>1.1</td><td>0.02</td><td>50</td></tr>" in dp
    assert "<tr><td>accountant_version</td><td>opacus 1.5.4</td></tr>" in dp
    assert "malicious" in _section(page, "trust-model")
    unmask = _section(page, "unmask-log")
    assert unmask.count("<tr>") == 5  # header + 4 rounds
    assert "bank-2 (#2)" in unmask
    assert "bank-2 (#2)" in _section(page, "dropouts")
    assert "No refusals recorded." in _section(page, "policy-refusals")
    assert "0.9" in _section(page, "empirical-audit")
    assert "Consistent" in _section(page, "empirical-audit")
    assert "accuracy-plot" in _section(page, "accuracy")


def test_text_is_escaped_and_nothing_is_loaded(run: Run, tmp_path: Path) -> None:
    page, markdown = _render(run, tmp_path)
    hazards = _section(page, "hazards")
    assert (
        "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;co&lt;/b&gt;" in hazards
    )
    assert "<script" not in page
    # the inline SVG's namespace declarations and url(#...) fragments are not loads
    stripped = re.sub(r'xmlns(:xlink)?="http://www\.w3\.org/[^"]*"', "", page)
    stripped = stripped.replace("url(#", "")
    for needle in ("<link", "src=", "http://", "https://", "@import", "url("):
        assert needle not in stripped
    assert "<script" not in markdown
    assert "<b>" not in markdown
    assert str(tmp_path) not in page
    assert str(tmp_path) not in markdown


def test_markdown_twin(run: Run, tmp_path: Path) -> None:
    _, markdown = _render(run, tmp_path)
    for section_id in SECTION_IDS:
        assert f'<a id="{section_id}"></a>' in markdown
    assert "## Compliance mapping" in markdown
    assert "| round | bank-0 | bank-1 | bank-2 |" in markdown
    assert "| 2 | 1 | 1.25 | not recorded |" in markdown


def test_compliance_table(run: Run, tmp_path: Path) -> None:
    page, _ = _render(run, tmp_path)
    compliance = _section(page, "compliance")
    mapping = load_compliance_mapping()
    for mechanism in mapping.mechanisms:
        assert f"<td>{mechanism.id}</td>" in compliance
    assert "GDPR Art. 25" in compliance


def test_missing_inputs_render_as_not_recorded(tmp_path: Path) -> None:
    run = build_run(tmp_path, rounds=1)
    (run.run_dir / "metrics.json").write_text(json.dumps({"dp": None, "secure": False}))
    page, _ = _render(run, tmp_path)
    assert "not recorded" in _section(page, "summary")
    assert "Differential privacy was OFF" in _section(page, "unit-of-privacy")
    assert "Secure aggregation was OFF" in _section(page, "trust-model")
    assert "Not run." in _section(page, "empirical-audit")
    assert "History: not recorded." in _section(page, "accuracy")


def test_a_run_without_ledgers_or_metrics_still_renders(tmp_path: Path) -> None:
    (tmp_path / "bare").mkdir()
    summary = render_report(tmp_path / "bare", out_html=tmp_path / "r.html")
    assert summary.verified is None
    assert summary.md_path is None
    page = (tmp_path / "r.html").read_text()
    assert "could not be verified" in _section(page, "verification")
    assert "No round.spend entries." in _section(page, "epsilon")


def test_tampering_shows_in_the_report(run: Run, tmp_path: Path) -> None:
    run.write_lines("bank-1", run.lines("bank-1")[:-2])
    summary = render_report(run.run_dir, out_html=tmp_path / "r.html")
    assert summary.verified is False
    verification = _section((tmp_path / "r.html").read_text(), "verification")
    assert "TAMPERED" in verification
    assert "ledgers/bank-1.jsonl" in verification
    assert "truncated" in verification


def test_an_empirical_violation_is_flagged(run: Run, tmp_path: Path) -> None:
    canary = {"epsilon_lower_bound": 5.0, "claimed_epsilon": 3.0, "confidence": 0.95}
    (run.run_dir / "canary.json").write_text(json.dumps(canary))
    page, _ = _render(run, tmp_path)
    assert "VIOLATION" in _section(page, "empirical-audit")


def test_the_empirical_audit_shows_every_field_of_canary_json(run: Run, tmp_path: Path) -> None:
    canary = {
        "method": "one-run canary audit (Steinke, Nasr, Jagielski 2023)",
        "epsilon_lower_bound": 0.731,
        "confidence": 0.95,
        "claimed_epsilon": 2.5,
        "delta": 1e-05,
        "canaries": 1000,
        "guesses": 120,
        "correct": 97,
        "configuration": "MLP on MNIST-5k, sigma=1.1",
        "note": "a lower bound <i>only</i>",
    }
    (run.run_dir / "canary.json").write_text(json.dumps(canary))
    page, markdown = _render(run, tmp_path)
    audit = _section(page, "empirical-audit")
    for label, value in [
        ("method", "one-run canary audit (Steinke, Nasr, Jagielski 2023)"),
        ("what was audited", "MLP on MNIST-5k, sigma=1.1"),
        ("claimed ε (accountant)", "2.5"),
        ("empirical ε lower bound", "0.731"),
        ("confidence", "0.95"),
        ("δ", "1e-05"),
        ("canaries (m)", "1000"),
        ("guesses (r)", "120"),
        ("correct guesses (v)", "97"),
    ]:
        assert f"<tr><td>{label}</td><td>{value}</td></tr>" in audit
    assert "LOWER bound" in audit
    assert "Consistent" in audit
    assert "a lower bound &lt;i&gt;only&lt;/i&gt;" in audit
    assert "| canaries (m) | 1000 |" in markdown


def test_metrics_that_disagree_with_the_signed_spend_are_flagged(run: Run, tmp_path: Path) -> None:
    # METRICS claims epsilon 2.0 for every client; the ledgers say 2.0, 2.5 and 3.0 after round 4
    epsilon = _section(_render(run, tmp_path)[0], "epsilon")
    assert "metrics.json disagrees with the signed ledgers" in epsilon
    assert "bank-1: metrics.json 2, ledger 2.5; bank-2: metrics.json 2, ledger 3." in epsilon
    assert "bank-0: metrics.json" not in epsilon


def test_metrics_that_agree_with_the_signed_spend_say_so(tmp_path: Path) -> None:
    run = build_documented_run(tmp_path)
    epsilon = _section(_render(run, tmp_path)[0], "epsilon")
    assert "disagrees" not in epsilon
    assert "Every final ε in metrics.json that has a signed round.spend equals the last one" in (
        epsilon
    )


def test_an_unmask_of_both_secrets_of_one_institution_is_flagged(tmp_path: Path) -> None:
    run = build_run(tmp_path, final=False)
    with Ledger.open(run.path("server"), "server", run.keys["server"]) as ledger:
        ledger.record(
            Unmask(
                round=5, outputs=1, target_blinded=False, self_seeds_of=(0, 1), mask_keys_of=(1,)
            )
        )
    unmask = _section(_render(run, tmp_path)[0], "unmask-log")
    assert "Round 5: server records reconstructing BOTH secrets of bank-1 (#1)" in unmask
    assert unmask.count("BOTH secrets") == 1  # rounds 1-4 are fine


def test_parties_caught_misbehaving_are_listed_with_their_evidence(tmp_path: Path) -> None:
    run = build_run(tmp_path, final=False)
    with Ledger.open(run.path("server"), "server", run.keys["server"]) as ledger:
        ledger.record(
            Misbehaviour(round=3, party=2, kind="bad-shares", accuser=0, evidence_sha256="ab" * 32)
        )
    dropouts = _section(_render(run, tmp_path)[0], "dropouts")
    assert "bank-2 (#2)" in dropouts
    assert "bad-shares" in dropouts
    assert "bank-0 (#0)" in dropouts
    assert "ab" * 32 in dropouts
    empty = _section(_render(build_run(tmp_path / "other", final=False), tmp_path)[0], "dropouts")
    assert "No party was caught misbehaving" in empty


def test_the_roster_digest_is_shown_and_checked_against_run_configured(
    run: Run, tmp_path: Path
) -> None:
    digest = run.federation.roster.digest().hex()
    verification = _section(_render(run, tmp_path)[0], "verification")
    assert f"Roster digest (SHA-256, confirm it with every institution): {digest}." in verification
    assert "run.configured entries of: bank-0, bank-1, bank-2, server." in verification
    other = make_federation(3).roster
    render_report(run.run_dir, out_html=tmp_path / "o.html", roster=other)
    verification = _section((tmp_path / "o.html").read_text(), "verification")
    assert other.digest().hex() in verification
    assert re.search(
        r'<p class="strong">[^<]*of bank-0, bank-1, bank-2, server record a different roster',
        verification,
    )


def test_a_noise_multiplier_changed_mid_run_is_shown(tmp_path: Path) -> None:
    run = build_run(tmp_path, final=False)
    with Ledger.open(run.path("bank-0"), "bank-0", run.keys["bank-0"]) as ledger:
        ledger.record(
            RoundSpend(
                round=5,
                epsilon=9.0,
                delta=1e-5,
                noise_multiplier=0.5,
                sample_rate=0.01,
                steps=100,
                accountant="rdp",
                accountant_version="opacus-1.5",
            )
        )
    dp = _section(_render(run, tmp_path)[0], "dp-parameters")
    assert "<tr><td>bank-0</td><td>8</td><td>1e-05</td><td>rdp</td><td>opacus-1.5</td>" in dp
    assert "<td>1.1 → 0.5</td><td>1</td><td>0.01</td><td>500</td></tr>" in dp
    assert (
        "<td>bank-1</td><td>8</td><td>1e-05</td><td>rdp</td><td>opacus-1.5</td><td>1.1</td>" in dp
    )


def test_unreadable_metrics_are_reported(run: Run, tmp_path: Path) -> None:
    (run.run_dir / "metrics.json").write_text("{not json")
    page, _ = _render(run, tmp_path)
    assert "metrics.json could not be read" in _section(page, "summary")


def test_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        render_report(tmp_path / "missing", out_html=tmp_path / "r.html")
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match="cannot write"):
        render_report(tmp_path / "run", out_html=tmp_path / "no" / "such" / "r.html")


def test_plots_escape_names_are_deterministic_and_handle_edge_cases() -> None:
    series = [Series('<x" onload="y', ((1.0, 2.0),)), Series("flat", ((1.0, 0.0), (2.0, 0.0)))]
    svg = epsilon_plot(series, budget=3.0, title="t & u", element_id="p")
    root = _parse_svg(svg)
    assert root.get("id") == "p"
    assert not [el for el in root.iter() if "onload" in el.attrib]  # text, never markup
    assert '<x" onload="y' in [el.text for el in root.iter()]
    assert svg == epsilon_plot(series, budget=3.0, title="t & u", element_id="p")
    assert re.findall(r'<g id="p-(series-\d+|budget)"', svg) == ["series-0", "series-1", "budget"]
    ids = re.findall(r'\bid="([^"]+)"', svg)
    assert all(i == "p" or i.startswith("p-") for i in ids)
    assert "<metadata" not in svg
    assert "<?xml" not in svg
    empty = metric_plot([], title="empty", y_label="y", element_id="e")
    assert 'id="e-series-' not in empty
    _parse_svg(empty)
    with pytest.raises(ConfigError):
        Series("bad", ((float("nan"), 1.0),))


def test_many_institutions_are_a_band_with_a_median() -> None:
    series = [
        Series(f"bank-{i}", tuple((float(r), 0.1 * r * (1 + i / 100)) for r in range(1, 21)))
        for i in range(62)
    ]
    svg = epsilon_plot(series, budget=8.0, title="ε", element_id="eps")
    assert 'id="eps-series-' not in svg  # no 62 overlapping lines
    assert '<g id="eps-median"' in svg
    assert '<g id="eps-budget"' in svg
    assert ">range over 62 institutions</text>" in svg
    assert len(series) > MAX_LINES


# --- verdict, composition, disclosure, provenance, grouped hazards, flags --------------------


def _tamper_spend(run: Run, actor: str, round_: int, epsilon: float) -> None:
    """Change the ε of ``actor``'s round.spend of ``round_`` in place (not re-signed)."""
    lines = run.lines(actor)
    for index, line in enumerate(lines):
        entry = json.loads(line)
        if entry["event"] == "round.spend" and entry["payload"]["round"] == round_:
            entry["payload"]["epsilon"] = epsilon
            lines[index] = (
                json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n"
            ).encode()
    run.write_lines(actor, lines)


def _rows(section: str, table_id: str) -> list[list[str]]:
    match = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', section, re.DOTALL)
    assert match is not None, table_id
    return [
        re.findall(r"<td[^>]*>(.*?)</td>", row)
        for row in re.findall(r"<tr>(.*?)</tr>", match.group(1))
    ]


def test_the_verdict_comes_first_and_says_intact(run: Run, tmp_path: Path) -> None:
    page, markdown = _render(run, tmp_path)
    assert page.index('<section id="verdict">') < page.index('<section id="summary">')
    verdict = _section(page, "verdict")
    assert '<td class="ok">INTACT: 4 ledgers' in verdict
    assert "yes: all 3 institutions within budget" in verdict
    assert "consistent: lower bound 0.9 ≤ claimed ε 3" in verdict
    assert "0 policy refusals, 0 budget refusals" in verdict
    assert "| ledgers (this run) | INTACT: 4 ledgers" in markdown


def test_a_tampered_spend_says_tampered_and_is_flagged_in_place(run: Run, tmp_path: Path) -> None:
    _tamper_spend(run, "bank-1", 2, 0.1)
    page, markdown = _render(run, tmp_path)
    verdict = _section(page, "verdict")
    assert '<td class="fail">TAMPERED: ledgers/bank-1.jsonl' in verdict
    epsilon = _section(page, "epsilon")
    rows = _rows(epsilon, "epsilon-table")
    assert rows[0] == ["1", "0.5", "0.625", "0.75"]  # round 1: before the edit, vouched for
    assert rows[1][1] == "1"
    assert rows[1][2].startswith("0.1 ⚠ TAMPERED: edited (ledgers/bank-1.jsonl seq ")
    assert rows[3][2].startswith("2.5 ⚠ TAMPERED: edited")  # past the break: disputed too
    assert rows[3][1] == "2"
    assert epsilon.count('<td class="flagged"') == 3  # bank-1, rounds 2 to 4
    assert "⚠ TAMPERED: edited" in _section(page, "composed-epsilon")
    assert "⚠ TAMPERED: edited" in markdown


def _add_baseline(run: Run, tmp_path: Path, mode: str) -> None:
    other = build_run(tmp_path / f"baseline-{mode}")
    target = run.run_dir / "baselines" / mode
    target.parent.mkdir(exist_ok=True)
    other.run_dir.rename(target)


def test_the_composed_epsilon_counts_every_baseline(run: Run, tmp_path: Path) -> None:
    composed = _section(_render(run, tmp_path)[0], "composed-epsilon")
    assert _rows(composed, "composed") == [
        ["bank-0", "2", "2", "1e-05", "8", "yes"],
        ["bank-1", "2.5", "2.5", "1e-05", "8", "yes"],
        ["bank-2", "3", "3", "1e-05", "8", "yes"],
    ]
    _add_baseline(run, tmp_path, "local")
    _add_baseline(run, tmp_path, "fedavg")
    page, _ = _render(run, tmp_path)
    composed = _section(page, "composed-epsilon")
    assert "<th>ε baseline fedavg</th><th>ε baseline local</th>" in composed
    assert _rows(composed, "composed") == [
        ["bank-0", "2", "2", "2", "6", "3e-05", "8", "yes"],
        ["bank-1", "2.5", "2.5", "2.5", "7.5", "3e-05", "8", "yes"],
        ["bank-2", "3", "3", "3", "9", "3e-05", "8", "NO: over budget"],
    ]
    assert "1 of 3 institutions exceed their budget" in composed
    verdict = _section(page, "verdict")
    assert "NO: 1 of 3 institutions over budget (composed ε up to 9)" in verdict
    assert 'ledgers of baseline local</th><td class="ok">INTACT' in verdict


def test_hazards_are_grouped_with_counts_and_severity(tmp_path: Path) -> None:
    run = build_run(tmp_path, final=False)
    ledgers = {actor: Ledger.open(run.path(actor), actor, key) for actor, key in run.keys.items()}
    secure_mode = "Opacus secure_mode is off (torchcsprng is not installed): weaker noise"
    for i in range(3):
        ledgers[f"bank-{i}"].record(Hazard(text=secure_mode))
        ledgers[f"bank-{i}"].record(
            Hazard(text=f"simulation seed {100 + 7 * i} is set: NOT private")
        )
    ledgers["bank-0"].record(Hazard(text=secure_mode))
    ledgers["server"].record(Hazard(text="something new"))
    for ledger in ledgers.values():
        ledger.close()
    page, _ = _render(run, tmp_path)
    hazards = _section(page, "hazards")
    assert "8 hazard entries, 3 distinct." in hazards
    rows = _rows(hazards, "hazards-table")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("high", "3", "bank-0, bank-1, bank-2"),
        ("medium", "4", "bank-0, bank-1, bank-2"),
        ("medium", "1", "server"),
    ]
    assert rows[0][4].endswith("(numbers differ between entries)")
    assert "high 3 (1 distinct), medium 5 (2 distinct), low 0 (0 distinct)" in _section(
        page, "verdict"
    )


def test_the_disclosure_section_says_what_is_not_ledgered(run: Run, tmp_path: Path) -> None:
    metrics = {**METRICS, "partition": [0, 0, 1]}
    (run.run_dir / "metrics.json").write_text(json.dumps(metrics))
    disclosure = _section(_render(run, tmp_path)[0], "disclosure")
    assert "Not recorded in the ledgers" in disclosure
    assert "t, the secret-sharing threshold" in disclosure
    assert "<tr><td>k_min</td><td>not recorded (not ledgered)</td></tr>" in disclosure
    assert "config.toml: absent or unreadable." in disclosure
    rows = _rows(disclosure, "disclosure-rounds")
    assert rows[0] == ["1", "3", "none", "1", "no", "group 0: bank-0, bank-1; group 1: bank-2"]
    assert rows[1] == ["2", "2", "bank-2 (#2)", "1", "no", "group 0: bank-0, bank-1; group 1: none"]
    assert rows[2][0] == "3-4"  # identical rounds merged


def test_the_provenance_section(run: Run, tmp_path: Path) -> None:
    provenance = _section(_render(run, tmp_path)[0], "provenance")
    rows = {r[0]: r[1] for r in _rows(provenance, "provenance-table")}
    assert re.fullmatch(
        r"[0-9a-f]{64}", rows["renderer: source SHA-256 (installed .py files, sorted)"]
    )
    assert rows["configuration SHA-256 (run.configured, signed)"] == "ab" * 32
    assert rows["metrics.json config_sha256"] == "matches the signed digest"
    assert rows["run start (UTC, earliest ledger entry)"] == "2025-01-01T00:00:00.000Z"
    parties = _rows(provenance, "provenance-parties")
    assert [p[0] for p in parties] == ["bank-0", "bank-1", "bank-2", "server"]
    assert parties[0][1] == "not recorded"  # the fixture's budget.configured has no digest


def test_the_report_is_deterministic(run: Run, tmp_path: Path) -> None:
    first, _ = _render(run, tmp_path)
    second, _ = _render(run, tmp_path)
    assert first == second


# --- credit metrics ----------------------------------------------------------------------------

_BINS = 1000
_NEGATIVES = [(b * 7919) % 5 if b < 700 else 0 for b in range(_BINS)]
_POSITIVES = [(b * 104729) % 4 if b > 300 else 0 for b in range(_BINS)]


def _credit_metrics(*, pooled: bool = True) -> dict[str, object]:
    """METRICS of a run with a binary target: exact credit per institution and, with ``pooled``,
    the pooled figures from a histogram as securefed/runtime/evaluation.py writes them."""
    from securefed.models.credit import ScoreHistogram, metrics_from_histogram  # noqa: PLC0415

    exact = metrics_from_histogram(ScoreHistogram(tuple(_NEGATIVES), tuple(_POSITIVES)))
    metrics: dict[str, object] = dict(METRICS)
    metrics["clients"] = [
        {
            "id": f"bank-{i}",
            "test_accuracy": 0.8,
            "epsilon": 2.0,
            "delta": 1e-5,
            "credit": {
                "roc_auc": 0.71 + 0.01 * i,
                "pr_auc": 0.5,
                "ks": 0.3,
                "gini": 0.42 + 0.02 * i,
                "brier": 0.18,
                "positives": 40,
                "negatives": 60,
            },
        }
        for i in range(3)
    ]
    if pooled:
        metrics["pooled_credit"] = {
            "roc_auc": exact.roc_auc,
            "pr_auc": exact.pr_auc,
            "ks": exact.ks,
            "gini": exact.gini,
            "brier": 0.1834,
            "positives": exact.positives,
            "negatives": exact.negatives,
            "contributors": ["bank-0", "bank-1", "bank-2"],
            "bins": _BINS,
            "histogram": {"negatives": _NEGATIVES, "positives": _POSITIVES},
        }
    return metrics


def _credit_run(tmp_path: Path, metrics: dict[str, object]) -> Run:
    run = build_run(tmp_path)
    (run.run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_a_binary_run_shows_its_credit_metrics_and_the_pooled_roc_curve(tmp_path: Path) -> None:
    run = _credit_run(tmp_path, _credit_metrics())
    summary = render_report(run.run_dir, out_html=tmp_path / "r.html", out_md=tmp_path / "r.md")
    assert summary.sections == (*SECTION_IDS[:-1], "credit", "compliance")
    page, markdown = (tmp_path / "r.html").read_text(), (tmp_path / "r.md").read_text()
    credit = _section(page, "credit")
    rows = _rows(credit, "credit-table")
    assert [r[0] for r in rows] == ["bank-0", "bank-1", "bank-2", "pooled (secure histograms)"]
    assert rows[1] == ["bank-1", "0.72", "0.5", "0.3", "0.44", "0.18", "40", "60"]
    pooled = rows[3]
    assert pooled[5:] == ["0.1834", str(sum(_POSITIVES)), str(sum(_NEGATIVES))]
    assert "NOT covered by differential privacy" in credit
    assert "evaluation/ in the run directory" in credit
    assert "disagrees" not in credit  # the recorded AUC is the area under the drawn curve
    (svg,) = re.findall(r"<svg.*?</svg>", credit, re.DOTALL)
    root = _parse_svg(svg)
    assert root.get("id") == "credit-roc-plot"
    assert '<g id="credit-roc-plot-curve"' in svg
    assert '<g id="credit-roc-plot-diagonal"' in svg
    roc = _rows(credit, "credit-roc-table")
    assert [r[0] for r in roc] == ["0.01", "0.05", "0.1", "0.2", "0.5"]
    assert all(float(r[2]) <= float(r[0]) for r in roc)
    tprs = [float(r[1]) for r in roc]
    assert tprs == sorted(tprs)
    assert '<a id="credit"></a>' in markdown
    assert "| pooled (secure histograms) |" in markdown
    contents = re.search(r'<nav id="contents">(.*?)</nav>', page, re.DOTALL)
    assert contents is not None
    assert re.findall(r'href="#([^"]+)"', contents.group(1)) == list(summary.sections)
    checker = _TagChecker()
    checker.feed(page)
    assert checker.errors == []
    assert len(checker.ids) == len(set(checker.ids))
    render_report(run.run_dir, out_html=tmp_path / "again.html")
    assert (tmp_path / "again.html").read_text() == page  # deterministic


def test_an_image_run_has_no_credit_section(run: Run, tmp_path: Path) -> None:
    page, markdown = _render(run, tmp_path)  # METRICS: no credit anywhere
    assert '<section id="credit">' not in page
    assert '<a id="credit"></a>' not in markdown
    metrics = dict(METRICS)
    metrics["clients"] = [{"id": "bank-0", "test_accuracy": 0.8, "credit": None}]
    (run.run_dir / "metrics.json").write_text(json.dumps(metrics))
    page, _ = _render(run, tmp_path)
    assert '<section id="credit">' not in page


def test_without_pooled_figures_the_credit_table_stands_alone(tmp_path: Path) -> None:
    run = _credit_run(tmp_path, _credit_metrics(pooled=False))
    summary = render_report(run.run_dir, out_html=tmp_path / "r.html")
    assert "credit" in summary.sections
    credit = _section((tmp_path / "r.html").read_text(), "credit")
    assert [r[0] for r in _rows(credit, "credit-table")] == ["bank-0", "bank-1", "bank-2"]
    assert "no pooled figures" in credit
    assert "<svg" not in credit


def test_pooled_figures_that_disagree_with_their_histogram_are_said_in_bold(
    tmp_path: Path,
) -> None:
    metrics = _credit_metrics()
    pooled = metrics["pooled_credit"]
    assert isinstance(pooled, dict)
    pooled["roc_auc"] = 0.99
    pooled["positives"] = 1
    run = _credit_run(tmp_path, metrics)
    render_report(run.run_dir, out_html=tmp_path / "r.html")
    credit = _section((tmp_path / "r.html").read_text(), "credit")
    assert '<p class="strong">metrics.json disagrees with itself: its pooled ROC-AUC is 0.99' in (
        credit
    )
    assert f"pooled positives 1, its histogram counts {sum(_POSITIVES)}." in credit
    pooled["histogram"] = {"negatives": [1, -1], "positives": [0, 2]}
    (run.run_dir / "metrics.json").write_text(json.dumps(metrics))
    render_report(run.run_dir, out_html=tmp_path / "r.html")
    credit = _section((tmp_path / "r.html").read_text(), "credit")
    assert "Pooled ROC curve: not recorded" in credit
    assert "<svg" not in credit


def test_the_roc_curve_of_a_histogram() -> None:
    # bins from low to high score: the top bin holds 1 positive, the next 1 of each, the lowest
    # 2 negatives
    curve = roc_curve({"negatives": [2, 0, 1, 0], "positives": [0, 0, 1, 1]})
    assert curve is not None
    assert curve.points == ((0.0, 0.0), (0.0, 0.5), (1 / 3, 1.0), (1.0, 1.0))
    assert (curve.positives, curve.negatives) == (2, 3)
    assert [s[0] for s in curve.steps] == [0, 1, 2, 3, 4]
    # a long vertical run of positive-only bins is one segment
    tall = roc_curve({"negatives": [1, 0, 0, 0], "positives": [0, 1, 1, 1]})
    assert tall is not None
    assert tall.points == ((0.0, 0.0), (0.0, 1.0), (1.0, 1.0))
    for bad in (
        None,
        {"negatives": [1, 2]},
        {"negatives": [1, 2], "positives": [1]},
        {"negatives": [1, True], "positives": [1, 1]},
        {"negatives": [1, 0.5], "positives": [1, 1]},
        {"negatives": [0, 0], "positives": [1, 1]},
        {"negatives": [], "positives": []},
    ):
        assert roc_curve(bad) is None
