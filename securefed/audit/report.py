"""The audit report of a run: one self-contained HTML page and its Markdown twin.

:func:`render_report` reads a run directory (:mod:`securefed.audit.rundata`), verifies its
ledgers, and writes the report. Sections, each an element with a stable id
(:data:`SECTION_IDS`): ``summary``, ``verification``, ``unit-of-privacy``, ``epsilon`` (ε per
institution per round, a plot with one line per institution and a table), ``dp-parameters``
(δ, accountant and version, sigma, C, q, steps), ``trust-model``, ``unmask-log``, ``dropouts``,
``policy-refusals`` (policy and budget refusals), ``hazards``, ``empirical-audit``, ``accuracy``
and ``compliance`` (the mapping of :mod:`securefed.audit.compliance`).

Privacy figures come from the signed ledgers (``round.spend``, ``budget.configured``, ...);
``metrics.json`` and ``canary.json`` are unsigned and shown as found. Anything missing is shown
as "not recorded", never guessed. All text is escaped; the page loads nothing from anywhere.
The report states no absolute path of the machine that rendered it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from securefed.audit.compliance import load_compliance_mapping
from securefed.audit.document import Block, Para, Plot, Section, Table, render_html, render_markdown
from securefed.audit.entry import LedgerEntry
from securefed.audit.events import EventType
from securefed.audit.rundata import RunData, load_run_data
from securefed.audit.svg import Series, line_plot
from securefed.errors import ConfigError
from securefed.secagg.roster import Roster

__all__ = ["NOT_RECORDED", "SECTION_IDS", "ReportSummary", "build_sections", "render_report"]

NOT_RECORDED = "not recorded"
SECTION_IDS = (
    "summary",
    "verification",
    "unit-of-privacy",
    "epsilon",
    "dp-parameters",
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
_MISSING = object()
_SIGMA = "\N{GREEK SMALL LETTER SIGMA}"


@dataclass(frozen=True, slots=True)
class ReportSummary:
    """What :func:`render_report` wrote and found.

    ``verified`` is True (ledgers intact), False (a problem) or None (verification could not
    run, e.g. no roster). ``clients_plotted`` counts the ε lines, ``rounds_plotted`` the
    distinct rounds on the ε plot.
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
    spend = _spend_series(data)
    return ReportSummary(
        html_path=html_path,
        md_path=md_path,
        sections=tuple(s.id for s in sections),
        verified=None if data.verification is None else data.verification.ok,
        clients_plotted=len(spend),
        rounds_plotted=len({x for s in spend for x, _ in s.points}),
    )


def build_sections(data: RunData) -> list[Section]:
    """The report's sections, in :data:`SECTION_IDS` order."""
    return [
        _summary(data),
        _verification(data),
        _unit_of_privacy(data),
        _epsilon(data),
        _dp_parameters(data),
        _trust_model(data),
        _unmask_log(data),
        _dropouts(data),
        _refusals(data),
        _hazards(data),
        _empirical_audit(data),
        _accuracy(data),
        _compliance(),
    ]


# --- sections --------------------------------------------------------------------------------


def _summary(data: RunData) -> Section:
    metrics = data.metrics or {}
    configured = _last_payload(data.events(EventType.RUN_CONFIGURED))
    dp = metrics.get("dp", _MISSING)
    dp_text = NOT_RECORDED if dp is _MISSING else ("off" if dp is None else "on")
    secure = metrics.get("secure", _MISSING)
    rows = [
        ("run", data.name),
        ("mode", _fmt(metrics.get("mode", configured.get("mode", _MISSING)))),
        ("rounds", _fmt(metrics.get("rounds", _MISSING))),
        ("secure aggregation", NOT_RECORDED if secure is _MISSING else _on_off(secure)),
        ("differential privacy", dp_text),
        ("mean test accuracy", _fmt(metrics.get("mean_test_accuracy", _MISSING))),
        ("configuration SHA-256 (metrics.json)", _fmt(metrics.get("config_sha256", _MISSING))),
        ("configuration SHA-256 (ledger)", _fmt(configured.get("config_sha256", _MISSING))),
        ("cipher suite", _fmt(configured.get("cipher_suite", _MISSING))),
        ("software version", _fmt(configured.get("software_version", _MISSING))),
        ("ledgers", ", ".join(data.ledgers) or "none"),
        ("ledger verification", _status(data)),
        ("run outcome (server's run.finished)", _outcome(data)),
        ("spend carried in from earlier runs on the same records", _carried(data)),
    ]
    blocks: list[Block] = [Table(("item", "value"), tuple(rows))]
    outcome = _outcome(data)
    if outcome != "completed":
        blocks.append(
            Para(
                f"Warning: the run did not complete ({outcome}). Rounds without an aggregate "
                "are listed under Dropouts and in the hazards; accuracy and epsilon describe "
                "what was run, not the configured plan.",
                strong=True,
            )
        )
    resumed = [
        str(e.payload.get("text", ""))
        for e in data.events(EventType.HAZARD)
        if e.actor == "server" and str(e.payload.get("text", "")).startswith("run resumed")
    ]
    for text in resumed:
        blocks.append(Para(f"Note: {text} (securefed run --resume).", strong=True))
    for error in (data.metrics_error, data.canary_error):
        if error:
            blocks.append(Para(error, strong=True))
    if data.metrics is None and data.metrics_error is None:
        blocks.append(Para("metrics.json: not recorded (the file is absent)."))
    return Section("summary", "Run summary", tuple(blocks))


def _verification(data: RunData) -> Section:
    result = data.verification
    if result is None:
        text = f"The ledgers could not be verified: {data.verification_error}"
        return Section("verification", "Ledger verification", (Para(text, strong=True),))
    blocks: list[Block] = [
        Para(
            f"{result.summary()} (checked: the hash chain, the signatures under the roster's "
            "identity keys, the sequence, and the cross-party checkpoints).",
            strong=not result.ok,
        ),
        Table(
            ("file", "line", "seq", "kind", "detail"),
            tuple(
                (p.file, _fmt(p.line), _fmt(p.seq), p.kind.value, p.detail) for p in result.problems
            ),
            empty="No problem found.",
        ),
    ]
    blocks += [Para(f"Note: {note}") for note in result.notes]
    blocks.append(
        Table(
            ("party", "last seq", "head hash"),
            tuple((h.actor, str(h.seq), h.hash) for h in result.heads),
        )
    )
    blocks.append(_roster_agreement(data))
    blocks.append(Para("Re-run this check with: securefed audit verify RUN_DIR"))
    return Section("verification", "Ledger verification", tuple(blocks))


def _roster_agreement(data: RunData) -> Para:
    """The roster's digest (to confirm with the institutions out of band), and whether every
    party's run.configured entry recorded the same digest."""
    if data.roster is None:
        return Para(f"Roster digest: {NOT_RECORDED} (no roster).")
    digest = data.roster.digest().hex()
    recorded = {
        e.actor: e.payload.get("roster_digest") for e in data.events(EventType.RUN_CONFIGURED)
    }
    other = sorted(actor for actor, value in recorded.items() if value != digest)
    text = f"Roster digest (SHA-256, confirm it with every institution): {digest}. "
    if other:
        text += f"The run.configured entries of {', '.join(other)} record a different roster."
        return Para(text, strong=True)
    if not recorded:
        return Para(text + "No run.configured entry records a roster digest.", strong=True)
    return Para(text + f"Recorded in the run.configured entries of: {', '.join(sorted(recorded))}.")


def _unit_of_privacy(data: RunData) -> Section:
    payloads = _payloads(data, EventType.BUDGET_CONFIGURED)
    units = sorted({str(p["unit_of_privacy"]) for p in payloads if "unit_of_privacy" in p})
    blocks: list[Block] = [
        Para(
            "Unit of privacy: one record of one institution. ε bounds how much any single "
            "record held by one institution can change the distribution of what that institution "
            "releases (its masked updates and everything computed from them). DP-SGD runs at "
            "each institution before its update is masked, so the bound holds against the "
            "coordinator and the other institutions as well as against users of the final models."
        ),
        Para(
            "A customer with records at k institutions, or with several records at one, is "
            "protected by up to k·ε (group privacy). DP outputs are de-identified, not "
            "anonymised: they remain personal information in law (PIPL Art. 73(3)/(4))."
        ),
        Para(f"Unit recorded in the ledgers: {', '.join(units) if units else NOT_RECORDED}."),
    ]
    if data.metrics is not None and data.metrics.get("dp", _MISSING) is None:
        text = "Differential privacy was OFF in this run: no ε bound applies to any release."
        blocks.insert(0, Para(text, strong=True))
    return Section("unit-of-privacy", "Unit of privacy", tuple(blocks))


def _epsilon(data: RunData) -> Section:
    series = _spend_series(data)
    rounds = sorted({int(x) for s in series for x, _ in s.points})
    by_actor = {s.name: dict(s.points) for s in series}
    rows = tuple(
        (str(r), *(_fmt(by_actor[s.name].get(float(r), _MISSING)) for s in series)) for r in rounds
    )
    blocks: list[Block] = [
        Plot(
            line_plot(
                series,
                title="Cumulative ε per institution",
                x_label="round",
                y_label="ε",
                element_id="epsilon-plot",
            ),
            "Cumulative ε after each round, one line per institution (from round.spend entries).",
        ),
        Table(("round", *(s.name for s in series)), rows, empty="No round.spend entries."),
    ]
    clients = _records(data.metrics, "clients")
    if clients:
        blocks.append(Para("Final privacy per institution (metrics.json):"))
        blocks.append(
            Table(
                ("institution", "ε", "δ", "test accuracy"),
                tuple(
                    (
                        _fmt(c.get("id", _MISSING)),
                        _fmt(c.get("epsilon", _MISSING)),
                        _fmt(c.get("delta", _MISSING)),
                        _fmt(c.get("test_accuracy", _MISSING)),
                    )
                    for c in clients
                ),
            )
        )
        blocks.append(_epsilon_agreement(series, clients))
    return Section("epsilon", "ε per institution per round", tuple(blocks))


def _epsilon_agreement(series: Sequence[Series], clients: Sequence[Mapping[str, object]]) -> Para:
    """Whether metrics.json's final ε of each institution equals its last signed round.spend
    (to 1e-9 relative): an unsigned file that understates ε must not go unnoticed."""
    signed = {s.name: max(s.points)[1] for s in series if s.points}
    differ = []
    for client in clients:
        party, claimed = client.get("id"), _number(client.get("epsilon"))
        if not isinstance(party, str) or party not in signed or claimed is None:
            continue
        if not math.isclose(claimed, signed[party], rel_tol=1e-9, abs_tol=1e-12):
            differ.append(f"{party}: metrics.json {_fmt(claimed)}, ledger {_fmt(signed[party])}")
    if differ:
        text = (
            "metrics.json disagrees with the signed ledgers on the final ε of "
            + "; ".join(differ)
            + ". The signed round.spend entries are the record; treat metrics.json as suspect."
        )
        return Para(text, strong=True)
    return Para(
        "Every final ε in metrics.json that has a signed round.spend equals the last one "
        "(institutions without either are not compared)."
    )


def _dp_parameters(data: RunData) -> Section:
    blocks: list[Block] = [_dp_ledger_table(data), *_dp_metrics(data)]
    blocks.append(
        Para(
            f"{_SIGMA}: noise multiplier; C: per-example clipping norm; q: sampling rate; "
            "steps: DP-SGD steps over all rounds. δ is the probability allowance of the "
            "(ε, δ) guarantee. A value that changed during the run is shown as 'a → b'."
        )
    )
    return Section("dp-parameters", "Differential-privacy parameters", tuple(blocks))


def _dp_ledger_table(data: RunData) -> Table:
    """One row per institution from its signed budget.configured and round.spend entries."""
    budgets = {e.actor: e.payload for e in data.events(EventType.BUDGET_CONFIGURED)}
    spends: dict[str, list[Mapping[str, object]]] = {}
    for entry in data.events(EventType.ROUND_SPEND):
        spends.setdefault(entry.actor, []).append(entry.payload)
    rows = tuple(
        _dp_row(actor, budgets.get(actor, {}), spends.get(actor, []))
        for actor in sorted(set(budgets) | set(spends))
    )
    headers = ("institution", "target ε", "δ", "accountant", "version", _SIGMA, "C", "q", "steps")
    return Table(headers, rows, empty="No budget.configured or round.spend entries.")


def _dp_row(
    actor: str, budget: Mapping[str, object], spends: Sequence[Mapping[str, object]]
) -> tuple[str, ...]:
    def values(key: str) -> str:
        """Every distinct value of ``key`` in the budget and then the spends, in order."""
        seen: list[object] = []
        for payload in (budget, *spends):
            value = payload.get(key, _MISSING)
            if value is not _MISSING and value not in seen:
                seen.append(value)
        return " → ".join(_fmt(v) for v in seen) if seen else NOT_RECORDED

    steps = [p.get("steps") for p in spends]
    total = sum(s for s in steps if isinstance(s, int)) if steps else _MISSING
    return (
        actor,
        _fmt(budget.get("target_epsilon", _MISSING)),
        values("delta"),
        values("accountant"),
        values("accountant_version"),
        values("noise_multiplier"),
        _fmt(budget.get("max_grad_norm", _MISSING)),
        values("sample_rate"),
        _fmt(total),
    )


def _dp_metrics(data: RunData) -> list[Block]:
    """The DP configuration as metrics.json (unsigned) states it."""
    dp = (data.metrics or {}).get("dp", _MISSING)
    if dp is None:
        return [Para("metrics.json records that DP was off in this run.", strong=True)]
    if not isinstance(dp, Mapping):
        return [Para(f"DP configuration in metrics.json: {NOT_RECORDED}.")]
    keys = (
        "target_epsilon",
        "delta",
        "accountant",
        "accountant_version",
        "noise_multiplier",
        "max_grad_norm",
        "sample_rate",
    )
    blocks: list[Block] = [
        Para("Configured in metrics.json (unsigned):"),
        Table(("parameter", "value"), tuple((k, _fmt(dp.get(k, _MISSING))) for k in keys)),
    ]
    by_client = dp.get("by_client")
    if isinstance(by_client, Mapping) and by_client:
        columns = ("noise_multiplier", "sample_rate", "steps_per_round")
        rows = tuple(
            (str(party), *(_fmt(v.get(c, _MISSING)) for c in columns))
            for party, v in by_client.items()
            if isinstance(v, Mapping)
        )
        blocks.append(Para("Per institution in metrics.json (unsigned):"))
        blocks.append(Table(("institution", _SIGMA, "q", "steps per round"), rows))
    return blocks


def _trust_model(data: RunData) -> Section:
    secure = (data.metrics or {}).get("secure", _MISSING)
    blocks: list[Block] = [
        Para(
            "Coordinator: treated as malicious for confidentiality. It may deviate from the "
            "protocol, drop or reorder messages and claim dropouts, but it cannot forge an "
            "institution's signature or add parties (the roster of identity keys is pinned). "
            "With secure aggregation it sees only the aggregates it needs: the sum over at least "
            "t surviving institutions (or, in personalized modes, outputs that stay blinded for "
            "their target institution), plus metadata (who took part, dropouts, sizes, timing)."
        ),
        Para(
            "Institutions: may collude with the coordinator up to the declared bound n_C; "
            "beyond that the guarantees do not hold. Differential privacy is applied locally at "
            "each institution before masking."
        ),
        Para(
            "Details and measured residual risks: threat_model/README.md, "
            "threat_model/residual_risk.md and docs/protocol.md in the securefed sources."
        ),
    ]
    if secure is False:
        text = (
            "Secure aggregation was OFF in this run: the coordinator saw each institution's "
            "update in the clear."
        )
        blocks.insert(0, Para(text, strong=True))
    elif secure is _MISSING:
        blocks.insert(0, Para(f"Whether secure aggregation was on: {NOT_RECORDED}."))
    return Section("trust-model", "Trust model", tuple(blocks))


def _unmask_log(data: RunData) -> Section:
    rows = tuple(
        (
            _fmt(p.get("round", _MISSING)),
            e.actor,
            _fmt(p.get("outputs", _MISSING)),
            _fmt(p.get("target_blinded", _MISSING)),
            _parties(data, p.get("self_seeds_of", _MISSING)),
            _parties(data, p.get("mask_keys_of", _MISSING)),
        )
        for e in data.events(EventType.UNMASK)
        for p in (e.payload,)
    )
    headers = (
        "round",
        "by",
        "outputs unmasked",
        "target-blinded",
        "self seeds reconstructed of",
        "mask keys reconstructed of",
    )
    blocks: list[Block] = [
        Para(
            "What the coordinator unmasked in each round and whose secrets it reconstructed to do "
            "so: the self-mask seeds of the institutions in the sum (U3), and the pairwise mask "
            "keys of institutions that shared keys but are not in the sum (they dropped out "
            "before their masked update counted). Honest institutions reveal only one of the two "
            "secrets of any institution, so no individual update can be unmasked."
        ),
        Table(headers, rows, empty="No round.unmask entries."),
    ]
    blocks += _both_secrets(data)
    return Section("unmask-log", "Unmask log", tuple(blocks))


def _both_secrets(data: RunData) -> list[Block]:
    """A warning for every round.unmask that lists one institution in both columns: with its
    self-mask seed and its mask key the coordinator could unmask that institution's update."""
    warnings: list[Block] = []
    for entry in data.events(EventType.UNMASK):
        seeds, keys = entry.payload.get("self_seeds_of"), entry.payload.get("mask_keys_of")
        if not isinstance(seeds, list) or not isinstance(keys, list):
            continue
        both = sorted({v for v in seeds if isinstance(v, int)} & set(keys))
        if both:
            round_ = _fmt(entry.payload.get("round", _MISSING))
            parties = ", ".join(data.party(v) for v in both)
            text = (
                f"Round {round_}: {entry.actor} records reconstructing BOTH secrets of "
                f"{parties}; that is enough to unmask an individual update."
            )
            warnings.append(Para(text, strong=True))
    return warnings


def _dropouts(data: RunData) -> Section:
    rows = tuple(
        (
            _fmt(e.payload.get("round", _MISSING)),
            e.actor,
            _count(e.payload.get("survivors", _MISSING)),
            _parties(data, e.payload.get("dropouts", _MISSING)),
        )
        for e in data.events(EventType.ROUND_SURVIVORS)
    )
    table = Table(
        ("round", "by", "survivors", "dropouts"), rows, empty="No round.survivors entries."
    )
    caught = tuple(
        (
            _fmt(e.payload.get("round", _MISSING)),
            data.party(e.payload.get("party")),
            _fmt(e.payload.get("kind", _MISSING)),
            _accuser(data, e.payload.get("accuser", _MISSING)),
            _fmt(e.payload.get("evidence_sha256", _MISSING)),
        )
        for e in data.events(EventType.MISBEHAVIOUR)
    )
    misbehaviour = Table(
        ("round", "party", "caught", "accused by", "evidence sha256"),
        caught,
        empty="No party was caught misbehaving (round.misbehaviour).",
    )
    note = Para(
        "Parties the protocol caught on their own signed messages (docs/protocol.md, "
        "Verifiable shares): left out of the round before masking (bad-commitment, bad-shares, "
        "false-complaint) or their revealed share ignored (bad-share-revealed). The evidence "
        "file is evidence/round-<r>-<party>.bin next to the ledgers."
    )
    return Section("dropouts", "Dropouts per round", (table, note, misbehaviour))


def _accuser(data: RunData, value: object) -> str:
    if value is _MISSING:
        return NOT_RECORDED
    return "-" if value == -1 else data.party(value)


def _refusals(data: RunData) -> Section:
    rows = []
    for e in data.events(EventType.POLICY_REFUSAL):
        target, reason = data.party(e.payload.get("target")), e.payload.get("reason", _MISSING)
        detail = f"target {target}: {_fmt(reason)}"
        rows.append((_fmt(e.payload.get("round", _MISSING)), e.actor, "policy refusal", detail))
    for e in data.events(EventType.BUDGET_REFUSED):
        would, target_eps = e.payload.get("epsilon_would_be"), e.payload.get("target_epsilon")
        detail = f"ε would be {_fmt(would)}, target {_fmt(target_eps)}"
        rows.append((_fmt(e.payload.get("round", _MISSING)), e.actor, "budget refusal", detail))
    table = Table(("round", "by", "kind", "detail"), tuple(rows), empty="No refusals recorded.")
    return Section("policy-refusals", "Policy and budget refusals", (table,))


def _hazards(data: RunData) -> Section:
    rows = tuple(
        (e.actor, str(e.seq), e.time, _fmt(e.payload.get("text", _MISSING)))
        for e in data.events(EventType.HAZARD)
    )
    blocks: list[Block] = [
        Table(("party", "seq", "time", "hazard"), rows, empty="No hazard entries.")
    ]
    metrics = data.metrics or {}
    if metrics.get("secure", _MISSING) is False:
        blocks.append(Para("Derived from metrics.json: secure aggregation was off.", strong=True))
    if "dp" in metrics and metrics["dp"] is None:
        blocks.append(Para("Derived from metrics.json: differential privacy was off.", strong=True))
    return Section("hazards", "Hazards", tuple(blocks))


def _empirical_audit(data: RunData) -> Section:
    canary = data.canary
    if canary is None:
        return Section("empirical-audit", "Empirical privacy audit", (Para("Not run."),))
    lower = canary.get("epsilon_lower_bound", _MISSING)
    claimed = canary.get("claimed_epsilon", _MISSING)
    rows = (
        ("method", _fmt(canary.get("method", _MISSING))),
        ("what was audited", _fmt(canary.get("configuration", _MISSING))),
        ("claimed ε (accountant)", _fmt(claimed)),
        ("empirical ε lower bound", _fmt(lower)),
        ("confidence", _fmt(canary.get("confidence", _MISSING))),
        ("δ", _fmt(canary.get("delta", _MISSING))),
        ("canaries (m)", _fmt(canary.get("canaries", _MISSING))),
        ("guesses (r)", _fmt(canary.get("guesses", _MISSING))),
        ("correct guesses (v)", _fmt(canary.get("correct", _MISSING))),
    )
    blocks: list[Block] = [
        Table(("quantity", "value"), rows),
        Para(
            "The empirical ε is a LOWER bound (one-run canary audit, Steinke, Nasr and Jagielski, "
            "NeurIPS 2023): with the stated confidence the true ε is at least this large. It "
            "can refute a claimed ε, never confirm one."
        ),
    ]
    low, claim = _number(lower), _number(claimed)
    if low is not None and claim is not None:
        if low > claim:
            text = (
                "VIOLATION: the empirical lower bound exceeds the claimed ε; the DP "
                "implementation or its accounting is wrong."
            )
            blocks.append(Para(text, strong=True))
        else:
            blocks.append(
                Para(
                    "Consistent: the audit found no evidence against the claimed ε. A lower "
                    "bound below the claim does not prove the claim."
                )
            )
    note = canary.get("note", _MISSING)
    if note is not _MISSING:
        blocks.append(Para(f"Note in canary.json: {_fmt(note)}"))
    blocks.append(Para("canary.json is not signed; it is shown as found."))
    return Section("empirical-audit", "Empirical privacy audit", tuple(blocks))


def _accuracy(data: RunData) -> Section:
    metrics = data.metrics or {}
    history = _records(metrics, "history")
    pairs = ((_number(h.get("round")), _number(h.get("mean_test_accuracy"))) for h in history)
    points = tuple((x, y) for x, y in pairs if x is not None and y is not None)
    blocks: list[Block] = []
    if points:
        plot = line_plot(
            [Series("mean test accuracy", points)],
            title="Mean test accuracy per round",
            x_label="round",
            y_label="accuracy",
            element_id="accuracy-plot",
        )
        blocks.append(Plot(plot, "Mean test accuracy over the institutions after each round."))
    rows = tuple(
        tuple(_fmt(h.get(key, _MISSING)) for key in ("round", "mean_test_accuracy", "max_epsilon"))
        for h in history
    )
    blocks.append(
        Table(("round", "mean test accuracy", "max ε"), rows, empty=f"History: {NOT_RECORDED}.")
    )
    baselines = metrics.get("baselines", _MISSING)
    if isinstance(baselines, Mapping) and baselines:
        baseline_rows = tuple(
            (
                str(name),
                _fmt(v.get("mean_test_accuracy", _MISSING) if isinstance(v, Mapping) else v),
            )
            for name, v in baselines.items()
        )
        blocks.append(Table(("baseline", "mean test accuracy"), baseline_rows))
    else:
        blocks.append(Para(f"Baselines: {NOT_RECORDED}."))
    return Section("accuracy", "Accuracy (metrics.json, unsigned)", tuple(blocks))


def _compliance() -> Section:
    mapping = load_compliance_mapping()
    rows = tuple(
        tuple(
            _plain(text) for text in (m.id, m.mechanism, "; ".join(m.clauses), m.evidence, m.limits)
        )
        for m in mapping.mechanisms
    )
    gaps = tuple(("; ".join(g.clauses), g.note) for g in mapping.not_addressed)
    blocks: list[Block] = [
        Para(
            "Which requirement each mechanism helps meet, the evidence, and the limits. No "
            "mechanism makes a deployment compliant by itself."
        ),
        Table(("id", "mechanism", "requirement (clause)", "evidence", "limits"), rows),
        Para("Not addressed by securefed:"),
        Table(("requirement (clause)", "why"), gaps),
    ]
    return Section("compliance", "Compliance mapping", tuple(blocks))


# --- helpers ---------------------------------------------------------------------------------


def _spend_series(data: RunData) -> list[Series]:
    by_actor: dict[str, dict[float, float]] = {}
    for entry in data.events(EventType.ROUND_SPEND):
        r, eps = _number(entry.payload.get("round")), _number(entry.payload.get("epsilon"))
        if r is not None and eps is not None:
            by_actor.setdefault(entry.actor, {})[r] = eps
    return [
        Series(actor, tuple(sorted(points.items()))) for actor, points in sorted(by_actor.items())
    ]


def _payloads(data: RunData, event: EventType) -> list[Mapping[str, object]]:
    return [entry.payload for entry in data.events(event)]


def _last_payload(entries: Sequence[LedgerEntry]) -> Mapping[str, object]:
    return entries[-1].payload if entries else {}


def _records(metrics: Mapping[str, object] | None, key: str) -> list[Mapping[str, object]]:
    value = (metrics or {}).get(key)
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _outcome(data: RunData) -> str:
    """How the server's ledger says the run ended: its last ``run.finished`` status, or that it
    has none (a crashed or cut run)."""
    finished = [e for e in data.events(EventType.RUN_FINISHED) if e.actor == "server"]
    if not finished:
        return "not finished (no run.finished in the server's ledger)"
    return str(finished[-1].payload.get("status", NOT_RECORDED))


def _carried(data: RunData) -> str:
    """The largest epsilon any institution's records had spent before this run (the budget
    follows the records: docs/dp.md)."""
    carried = [
        float(value)
        for e in data.events(EventType.BUDGET_CONFIGURED)
        if isinstance(value := e.payload.get("prior_epsilon"), int | float)
    ]
    if not carried:
        return NOT_RECORDED
    largest = max(carried)
    if largest == 0:
        return "none (every institution's records started this run unspent)"
    return f"up to ε = {largest:.4g} (included in the ε of this run; see each budget.configured)"


def _status(data: RunData) -> str:
    if data.verification is None:
        return "NOT VERIFIED"
    return data.verification.status.value


def _parties(data: RunData, value: object) -> str:
    if value is _MISSING:
        return NOT_RECORDED
    if isinstance(value, list):
        return ", ".join(data.party(v) for v in value) or "none"
    return _fmt(value)


def _count(value: object) -> str:
    return str(len(value)) if isinstance(value, list) else _fmt(value)


def _on_off(value: object) -> str:
    return (
        {True: "on", False: "off"}.get(value, _fmt(value))
        if isinstance(value, bool)
        else _fmt(value)
    )


def _number(value: object) -> float | None:
    """``value`` as a float if it is a finite int or float (not a bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _fmt(value: object) -> str:
    """A value for a table cell; missing and null values read "not recorded"."""
    if value is _MISSING or value is None:
        return NOT_RECORDED
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value) or "none"
    if isinstance(value, Mapping):  # e.g. a per-institution value: "bank-0: 0.01, bank-1: 0.02"
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) or "none"
    return str(value)


def _plain(text: str) -> str:
    """Mapping text without its Markdown code marks (the report escapes everything)."""
    return text.replace("`", "")


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
