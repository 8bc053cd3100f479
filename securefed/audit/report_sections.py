"""The report's sections other than the verdict, the privacy figures, the disclosure and the
provenance (:mod:`securefed.audit.report`): summary, ledger verification, unit of privacy, trust
model, unmask log, dropouts, refusals, hazards (grouped), the empirical audit, accuracy and the
compliance mapping.

Signed and unsigned sources stay apart: every value from ``metrics.json`` or ``canary.json``
(unsigned) is in a table or section that says so; every value from a ledger entry that
verification disputes is flagged in place (:func:`~securefed.audit.report_format.cell`).
"""

from __future__ import annotations

from collections.abc import Mapping

from securefed.audit.compliance import load_compliance_mapping
from securefed.audit.document import Block, Cell, Para, Plot, Section, Table
from securefed.audit.events import EventType
from securefed.audit.hazards import group_hazards
from securefed.audit.plots import Series, metric_plot
from securefed.audit.report_disclosure import subrun_purpose
from securefed.audit.report_format import (
    MISSING,
    NOT_RECORDED,
    cell,
    fmt,
    last_payload,
    number,
    parties,
    plain,
    records,
)
from securefed.audit.rundata import RunData

__all__ = [
    "accuracy_section",
    "compliance_section",
    "dropouts_section",
    "empirical_audit_section",
    "hazards_section",
    "outcome",
    "refusals_section",
    "summary_section",
    "trust_model_section",
    "unit_of_privacy_section",
    "unmask_log_section",
    "verification_section",
]


def summary_section(data: RunData) -> Section:
    metrics = data.metrics or {}
    configured = last_payload(data.events(EventType.RUN_CONFIGURED))
    dp = metrics.get("dp", MISSING)
    dp_text = NOT_RECORDED if dp is MISSING else ("off" if dp is None else "on")
    secure = metrics.get("secure", MISSING)
    rows = [
        ("run", data.name),
        ("mode", fmt(metrics.get("mode", configured.get("mode", MISSING)))),
        ("rounds", fmt(metrics.get("rounds", MISSING))),
        ("secure aggregation", NOT_RECORDED if secure is MISSING else _on_off(secure)),
        ("differential privacy", dp_text),
        ("mean test accuracy", fmt(metrics.get("mean_test_accuracy", MISSING))),
        ("configuration SHA-256 (metrics.json)", fmt(metrics.get("config_sha256", MISSING))),
        ("configuration SHA-256 (ledger)", fmt(configured.get("config_sha256", MISSING))),
        ("cipher suite", fmt(configured.get("cipher_suite", MISSING))),
        ("software version", fmt(configured.get("software_version", MISSING))),
        ("ledgers", ", ".join(data.ledgers) or "none"),
        ("ledger verification", _status(data)),
        ("run outcome (server's run.finished)", outcome(data)),
        ("spend carried in from earlier runs on the same records", _carried(data)),
    ]
    blocks: list[Block] = [Table(("item", "value"), tuple(rows))]
    ended = outcome(data)
    if ended != "completed":
        blocks.append(
            Para(
                f"Warning: the run did not complete ({ended}). Rounds without an aggregate "
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


def verification_section(data: RunData) -> Section:
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
                (p.file, fmt(p.line), fmt(p.seq), p.kind.value, p.detail) for p in result.problems
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
    blocks += _subruns(data)
    blocks.append(Para("Re-run this check with: securefed audit verify RUN_DIR"))
    return Section("verification", "Ledger verification", tuple(blocks))


def _subruns(data: RunData) -> list[Block]:
    """The sub-runs verified with the run (none: nothing is said)."""
    if not data.subruns:
        return []
    rows = tuple(
        (f"{sub.directory}/", subrun_purpose(sub.directory), sub.result.summary() + sub.remark())
        for sub in data.subruns
    )
    return [
        Para(
            "Sub-runs of the run directory, verified with it: each a one-round secure sum with "
            "its own ledgers, checked under this run's roster (its own roster.toml must be this "
            "run's: the sub-runs are signed by the same identities)."
        ),
        Table(("sub-run", "what it is", "verification"), rows, id="verification-subruns"),
    ]


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


def unit_of_privacy_section(data: RunData) -> Section:
    payloads = [e.payload for e in data.events(EventType.BUDGET_CONFIGURED)]
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
    if data.metrics is not None and data.metrics.get("dp", MISSING) is None:
        text = "Differential privacy was OFF in this run: no ε bound applies to any release."
        blocks.insert(0, Para(text, strong=True))
    return Section("unit-of-privacy", "Unit of privacy", tuple(blocks))


def trust_model_section(data: RunData) -> Section:
    secure = (data.metrics or {}).get("secure", MISSING)
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
    elif secure is MISSING:
        blocks.insert(0, Para(f"Whether secure aggregation was on: {NOT_RECORDED}."))
    return Section("trust-model", "Trust model", tuple(blocks))


def unmask_log_section(data: RunData) -> Section:
    rows = tuple(
        (
            cell(data, e, p.get("round", MISSING)),
            e.actor,
            fmt(p.get("outputs", MISSING)),
            fmt(p.get("target_blinded", MISSING)),
            parties(data, p.get("self_seeds_of", MISSING)),
            parties(data, p.get("mask_keys_of", MISSING)),
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
            round_ = fmt(entry.payload.get("round", MISSING))
            parties = ", ".join(data.party(v) for v in both)
            text = (
                f"Round {round_}: {entry.actor} records reconstructing BOTH secrets of "
                f"{parties}; that is enough to unmask an individual update."
            )
            warnings.append(Para(text, strong=True))
    return warnings


def dropouts_section(data: RunData) -> Section:
    rows = tuple(
        (
            cell(data, e, e.payload.get("round", MISSING)),
            e.actor,
            _count(e.payload.get("survivors", MISSING)),
            parties(data, e.payload.get("dropouts", MISSING)),
        )
        for e in data.events(EventType.ROUND_SURVIVORS)
    )
    table = Table(
        ("round", "by", "survivors", "dropouts"), rows, empty="No round.survivors entries."
    )
    caught = tuple(
        (
            cell(data, e, e.payload.get("round", MISSING)),
            data.party(e.payload.get("party")),
            fmt(e.payload.get("kind", MISSING)),
            _accuser(data, e.payload.get("accuser", MISSING)),
            fmt(e.payload.get("evidence_sha256", MISSING)),
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
    if value is MISSING:
        return NOT_RECORDED
    return "-" if value == -1 else data.party(value)


def refusals_section(data: RunData) -> Section:
    rows: list[tuple[Cell, ...]] = []
    for e in data.events(EventType.POLICY_REFUSAL):
        target, reason = data.party(e.payload.get("target")), e.payload.get("reason", MISSING)
        detail = f"target {target}: {fmt(reason)}"
        rows.append(
            (cell(data, e, e.payload.get("round", MISSING)), e.actor, "policy refusal", detail)
        )
    for e in data.events(EventType.BUDGET_REFUSED):
        would, target_eps = e.payload.get("epsilon_would_be"), e.payload.get("target_epsilon")
        detail = f"ε would be {fmt(would)}, target {fmt(target_eps)}"
        rows.append(
            (cell(data, e, e.payload.get("round", MISSING)), e.actor, "budget refusal", detail)
        )
    table = Table(("round", "by", "kind", "detail"), tuple(rows), empty="No refusals recorded.")
    return Section("policy-refusals", "Policy and budget refusals", (table,))


def hazards_section(data: RunData) -> Section:
    """Hazard entries grouped by text: severity, count, parties, first seq; disputed entries
    flagged in place."""
    groups = group_hazards(data)
    rows = tuple(
        (
            g.severity.value,
            str(g.count),
            _party_list(g.parties),
            f"{g.entries[0].actor} seq {g.entries[0].seq}, {g.entries[0].time}",
            cell(
                data,
                next((e for e in g.entries if data.disputed(e)), None),
                f"{g.text} (numbers differ between entries)" if g.varies else g.text,
            ),
        )
        for g in groups
    )
    total = sum(g.count for g in groups)
    blocks: list[Block] = [
        Para(
            f"{total} hazard entries, {len(groups)} distinct. Each distinct text once (texts "
            "that differ only in numbers together), with how many entries record it and by "
            "which parties. Severity is a reading aid "
            "assigned from the text (securefed/audit/hazards.py): high where a guarantee does "
            "not hold, medium where it is weakened or unknown, low for notes on the setting."
        ),
        Table(
            ("severity", "entries", "recorded by", "first", "hazard"),
            rows,
            empty="No hazard entries.",
            id="hazards-table",
        ),
    ]
    metrics = data.metrics or {}
    if metrics.get("secure", MISSING) is False:
        blocks.append(Para("Derived from metrics.json: secure aggregation was off.", strong=True))
    if "dp" in metrics and metrics["dp"] is None:
        blocks.append(Para("Derived from metrics.json: differential privacy was off.", strong=True))
    return Section("hazards", "Hazards", tuple(blocks))


def _party_list(names: tuple[str, ...], limit: int = 6) -> str:
    """``bank-0, bank-1, ...`` -- at most ``limit`` names, then how many more."""
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])} and {len(names) - limit} more ({len(names)} parties)"


def empirical_audit_section(data: RunData) -> Section:
    canary = data.canary
    if canary is None:
        return Section("empirical-audit", "Empirical privacy audit", (Para("Not run."),))
    lower = canary.get("epsilon_lower_bound", MISSING)
    claimed = canary.get("claimed_epsilon", MISSING)
    rows = (
        ("method", fmt(canary.get("method", MISSING))),
        ("what was audited", fmt(canary.get("configuration", MISSING))),
        ("claimed ε (accountant)", fmt(claimed)),
        ("empirical ε lower bound", fmt(lower)),
        ("confidence", fmt(canary.get("confidence", MISSING))),
        ("δ", fmt(canary.get("delta", MISSING))),
        ("canaries (m)", fmt(canary.get("canaries", MISSING))),
        ("guesses (r)", fmt(canary.get("guesses", MISSING))),
        ("correct guesses (v)", fmt(canary.get("correct", MISSING))),
    )
    blocks: list[Block] = [
        Table(("quantity", "value"), rows),
        Para(
            "The empirical ε is a LOWER bound (one-run canary audit, Steinke, Nasr and Jagielski, "
            "NeurIPS 2023): with the stated confidence the true ε is at least this large. It "
            "can refute a claimed ε, never confirm one."
        ),
    ]
    low, claim = number(lower), number(claimed)
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
    note = canary.get("note", MISSING)
    if note is not MISSING:
        blocks.append(Para(f"Note in canary.json: {fmt(note)}"))
    blocks.append(Para("canary.json is not signed; it is shown as found."))
    return Section("empirical-audit", "Empirical privacy audit", tuple(blocks))


_METRIC_KEYS = (
    ("mean_test_accuracy", "mean test accuracy"),
    ("mean_roc_auc", "mean ROC AUC"),
    ("mean_pr_auc", "mean PR AUC"),
)


def accuracy_section(data: RunData) -> Section:
    """Accuracy (and AUC where recorded) per round from metrics.json (unsigned), plotted in
    numeric round order, and the baselines' accuracy."""
    metrics = data.metrics or {}
    history = records(metrics, "history")
    keys = [(k, label) for k, label in _METRIC_KEYS if any(number(h.get(k)) for h in history)]
    series = []
    for key, label in keys:
        pairs = ((number(h.get("round")), number(h.get(key))) for h in history)
        points = tuple((x, y) for x, y in pairs if x is not None and y is not None)
        if points:
            series.append(Series(label, points))
    blocks: list[Block] = []
    if series:
        plot = metric_plot(
            series,
            title="Mean test metrics per round",
            y_label="mean over institutions",
            element_id="accuracy-plot",
        )
        blocks.append(Plot(plot, "Mean test metrics over the institutions after each round."))
    columns = [("round", "round"), *keys, ("max_epsilon", "max ε")]
    ordered = sorted(history, key=lambda h: number(h.get("round")) or 0.0)
    rows = tuple(tuple(fmt(h.get(key, MISSING)) for key, _ in columns) for h in ordered)
    blocks.append(
        Table(
            tuple(label for _, label in columns),
            rows,
            empty=f"History: {NOT_RECORDED}.",
            id="accuracy-table",
        )
    )
    baselines = metrics.get("baselines", MISSING)
    if isinstance(baselines, Mapping) and baselines:
        baseline_rows = tuple(
            (str(name), fmt(_baseline_accuracy(v))) for name, v in sorted(baselines.items())
        )
        blocks.append(Table(("baseline", "mean test accuracy"), baseline_rows))
    else:
        blocks.append(Para(f"Baselines: {NOT_RECORDED}."))
    return Section("accuracy", "Accuracy (metrics.json, unsigned)", tuple(blocks))


def _baseline_accuracy(value: object) -> object:
    """A baseline's mean test accuracy: recorded, or the mean of its clients' accuracies."""
    if not isinstance(value, Mapping):
        return value
    if "mean_test_accuracy" in value:
        return value["mean_test_accuracy"]
    accuracies = [number(c.get("test_accuracy")) for c in records(value, "clients")]
    found = [a for a in accuracies if a is not None]
    return sum(found) / len(found) if found else MISSING


def compliance_section() -> Section:
    mapping = load_compliance_mapping()
    rows = tuple(
        tuple(
            plain(text) for text in (m.id, m.mechanism, "; ".join(m.clauses), m.evidence, m.limits)
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


def outcome(data: RunData) -> str:
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


def _count(value: object) -> str:
    return str(len(value)) if isinstance(value, list) else fmt(value)


def _on_off(value: object) -> str:
    return (
        {True: "on", False: "off"}.get(value, fmt(value)) if isinstance(value, bool) else fmt(value)
    )
