"""Signed, hash-chained audit ledgers, their verification, and the audit report (docs/audit.md).

* :mod:`~securefed.audit.events` -- :class:`EventType` and one typed record per event
* :mod:`~securefed.audit.ledger` -- :class:`Ledger`, one party's append-only, fsync'ed ledger
* :mod:`~securefed.audit.checkpoint` -- heads, their transcript binding, end-of-run checkpoints
* :mod:`~securefed.audit.verify` -- :func:`verify_ledger`, :func:`verify_run`, :func:`verify_path`
* :mod:`~securefed.audit.report` -- :func:`render_report` (self-contained HTML + Markdown)
* :mod:`~securefed.audit.compliance` -- the compliance mapping shipped as ``compliance.toml``
* :mod:`~securefed.audit.canonical`, :mod:`~securefed.audit.payload`,
  :mod:`~securefed.audit.entry`, :mod:`~securefed.audit.chain` -- the entry format and its checks

Layering: imports only :mod:`securefed.crypto`, :mod:`securefed.secagg` (the roster),
:mod:`securefed.errors` and the standard library; never torch, opacus, or the runtime.
See ``docs/audit.md``.
"""

from securefed.audit.chain import Problem, ProblemKind
from securefed.audit.checkpoint import (
    HEADS_CONTEXT_LABEL,
    Checkpoint,
    Head,
    collect_heads,
    head_context,
    heads_context,
    record_checkpoint,
    record_final_checkpoint,
)
from securefed.audit.compliance import (
    ComplianceMapping,
    Gap,
    Mechanism,
    load_compliance_mapping,
    render_compliance_markdown,
)
from securefed.audit.entry import GENESIS_HASH, LedgerEntry
from securefed.audit.events import (
    BudgetConfigured,
    BudgetRefused,
    EventRecord,
    EventType,
    Hazard,
    InconsistentHeads,
    KeyRotation,
    Misbehaviour,
    OutputsWithheld,
    Partition,
    PolicyRefusal,
    PreprocessingApplied,
    RoundSpend,
    RoundSurvivors,
    RunConfigured,
    RunFinished,
    SketchReleased,
    SketchSeedDealt,
    Unmask,
    UpdateReleased,
)
from securefed.audit.ledger import Ledger, ledger_path
from securefed.audit.payload import check_payload
from securefed.audit.report import SECTION_IDS, ReportSummary, render_report
from securefed.audit.verify import VerifyResult, verify_ledger, verify_path, verify_run

__all__ = [
    "GENESIS_HASH",
    "HEADS_CONTEXT_LABEL",
    "SECTION_IDS",
    "BudgetConfigured",
    "BudgetRefused",
    "Checkpoint",
    "ComplianceMapping",
    "EventRecord",
    "EventType",
    "Gap",
    "Hazard",
    "Head",
    "InconsistentHeads",
    "KeyRotation",
    "Ledger",
    "LedgerEntry",
    "Mechanism",
    "Misbehaviour",
    "OutputsWithheld",
    "Partition",
    "PolicyRefusal",
    "PreprocessingApplied",
    "Problem",
    "ProblemKind",
    "ReportSummary",
    "RoundSpend",
    "RoundSurvivors",
    "RunConfigured",
    "RunFinished",
    "SketchReleased",
    "SketchSeedDealt",
    "Unmask",
    "UpdateReleased",
    "VerifyResult",
    "check_payload",
    "collect_heads",
    "head_context",
    "heads_context",
    "ledger_path",
    "load_compliance_mapping",
    "record_checkpoint",
    "record_final_checkpoint",
    "render_compliance_markdown",
    "render_report",
    "verify_ledger",
    "verify_path",
    "verify_run",
]
