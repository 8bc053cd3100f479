"""The audit report of a run: one self-contained HTML page and its Markdown twin.

:func:`render_report` reads a run directory (:mod:`securefed.audit.rundata`: the run's ledgers,
and each baseline's under ``baselines/<mode>/``), verifies its ledgers, and writes the report.
Sections, each an element with a stable id (:data:`SECTION_IDS`), in this order:

* ``verdict`` -- ledgers intact or not (this run's, each baseline's, each sub-run's), budgets
  held (alone and with every baseline), the canary audit, refusals, hazards by severity
  (:mod:`securefed.audit.report_verdict`);
* ``composed-epsilon`` -- ε per institution over this run and every baseline on the same
  records, against the budget (:mod:`securefed.audit.composition`);
* ``summary``, ``provenance`` (code version and source hash, configuration digest, data
  fingerprint per party, start and end in UTC), ``verification`` (with the sub-runs verified
  with the run, when it has any);
* ``epsilon`` (plot with the budget line, in round order; a band for many institutions),
  ``dp-parameters`` (per institution), ``unit-of-privacy``;
* ``disclosure`` (what the server learned each round; what is not ledgered says so),
  ``trust-model``, ``unmask-log``, ``dropouts``, ``policy-refusals``;
* ``hazards`` (grouped, with counts), ``empirical-audit``, ``accuracy`` and ``compliance``.

Between ``accuracy`` and ``compliance``, and only when ``metrics.json`` records credit metrics (a
run with a binary target), ``credit``: each institution's exact figures and the pooled ones from
the secure histograms, with the pooled ROC curve (:mod:`securefed.audit.report_credit`). It is
not in :data:`SECTION_IDS`, which lists the sections of every report.

Privacy figures come from the signed ledgers; ``metrics.json``, ``canary.json`` and
``config.toml`` are unsigned and every table built from them says so. A ledger value that
verification disputes is flagged in place (``TAMPERED: <why>``). Anything missing is shown as
"not recorded", never guessed. All text is escaped; the page loads nothing from anywhere; the
plots are matplotlib SVG inlined (:mod:`securefed.audit.plots`). The report states no
absolute path of the machine that rendered it. Output is deterministic for a given run
directory and installed package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from securefed.audit.composition import compose
from securefed.audit.document import Section, render_html, render_markdown
from securefed.audit.hazards import group_hazards
from securefed.audit.report_credit import credit_section
from securefed.audit.report_disclosure import disclosure_section
from securefed.audit.report_format import NOT_RECORDED
from securefed.audit.report_privacy import (
    composed_section,
    dp_parameters_section,
    epsilon_section,
    spend_entries,
)
from securefed.audit.report_provenance import provenance_section
from securefed.audit.report_sections import (
    accuracy_section,
    compliance_section,
    dropouts_section,
    empirical_audit_section,
    hazards_section,
    refusals_section,
    summary_section,
    trust_model_section,
    unit_of_privacy_section,
    unmask_log_section,
    verification_section,
)
from securefed.audit.report_verdict import verdict_section
from securefed.audit.rundata import RunData, load_run_data
from securefed.audit.verify import VerifyResult
from securefed.errors import ConfigError
from securefed.secagg.roster import Roster

__all__ = ["NOT_RECORDED", "SECTION_IDS", "ReportSummary", "build_sections", "render_report"]

SECTION_IDS = (
    "verdict",
    "composed-epsilon",
    "summary",
    "provenance",
    "verification",
    "epsilon",
    "dp-parameters",
    "unit-of-privacy",
    "disclosure",
    "trust-model",
    "unmask-log",
    "dropouts",
    "policy-refusals",
    "hazards",
    "empirical-audit",
    "accuracy",
    "compliance",
)
StrPath = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class ReportSummary:
    """What :func:`render_report` wrote and found.

    ``verified`` is True (ledgers intact), False (a problem, in this run's ledgers or in a
    counted sub-run's) or None (verification could not run, e.g. no roster).
    ``clients_plotted`` counts the institutions on the ε plot, ``rounds_plotted`` the distinct
    rounds on it.
    """

    html_path: Path
    md_path: Path | None
    sections: tuple[str, ...]
    verified: bool | None
    clients_plotted: int
    rounds_plotted: int


def render_report(
    run_dir: StrPath,
    *,
    out_html: StrPath,
    out_md: StrPath | None = None,
    roster: Roster | None = None,
) -> ReportSummary:
    """Write the HTML report (and the Markdown twin if ``out_md``) of ``run_dir``.

    ``roster`` defaults to ``<run_dir>/roster.toml``; without one the report still renders and
    says that the ledgers could not be verified.

    Raises:
        ConfigError: ``run_dir`` is not a directory, or an output file cannot be written.
    """
    data = load_run_data(run_dir, roster)
    sections = build_sections(data)
    title = f"securefed audit report: {data.name}"
    html_path = Path(out_html)
    _write(html_path, render_html(title, sections))
    md_path = None if out_md is None else Path(out_md)
    if md_path is not None:
        _write(md_path, render_markdown(title, sections))
    spends = spend_entries(data)
    return ReportSummary(
        html_path=html_path,
        md_path=md_path,
        sections=tuple(s.id for s in sections),
        verified=None if data.verification is None else _verified(data.verification),
        clients_plotted=len(spends),
        rounds_plotted=len({r for by_round in spends.values() for r in by_round}),
    )


def build_sections(data: RunData) -> list[Section]:
    """The report's sections, in :data:`SECTION_IDS` order, with ``credit`` before
    ``compliance`` when the run recorded credit metrics."""
    composed = compose(data)
    hazards = group_hazards(data)
    credit = credit_section(data)
    return [
        verdict_section(data, composed, hazards),
        composed_section(data),
        summary_section(data),
        provenance_section(data),
        verification_section(data),
        epsilon_section(data),
        dp_parameters_section(data),
        unit_of_privacy_section(data),
        disclosure_section(data),
        trust_model_section(data),
        unmask_log_section(data),
        dropouts_section(data),
        refusals_section(data),
        hazards_section(data),
        empirical_audit_section(data),
        accuracy_section(data),
        *([] if credit is None else [credit]),
        compliance_section(),
    ]


def _verified(result: VerifyResult) -> bool:
    """No tampering in this run's ledgers nor in a sub-run's that counts in its verdict."""
    return result.ok and all(sub.result.ok for sub in result.subruns if sub.counted)


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
