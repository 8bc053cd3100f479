"""The report's disclosure section: what the coordinator learned in each round.

Sources, each labelled in the section: ``group.partition`` (signed by the server: the group
sizes and how the partition was chosen -- not its members), ``round.survivors`` and
``round.unmask`` (signed by the server: who is in the round's sums, how many aggregates were
unmasked, whether they stayed blinded for their target), ``config.toml`` (unsigned, but
attested when the SHA-256 of its canonical form equals the signed ``config_sha256``), and
``metrics.json`` (unsigned: the partition's members). What no source records is said to be
"not recorded", with what would be needed: the members of each released sum are the group's
members among the round's survivors, derived here from the unsigned partition and the signed
survivors; attention-mode weight rows, the secret-sharing threshold t, k_min and the exposure
bound are not ledgered.

Releases outside the training rounds, when the run directory has sub-runs (one-round secure
sums with their own signed ledgers): one row each, with what the server learned, whether
differential privacy covers it and the sub-run's verdict. The evaluation sub-run's row quotes the
hazard its ledgers record (the pooled test-score histograms: not covered by DP); the
preprocessing sum is covered when this run's ledgers record the releases it adds (``round.spend``
of mechanism ``gaussian-statistic``).
"""

from __future__ import annotations

from collections.abc import Mapping

from securefed.audit.document import Block, Cell, Flagged, Para, Section, Table
from securefed.audit.events import EventType
from securefed.audit.report_format import MISSING, NOT_RECORDED, cell, fmt, last_payload, parties
from securefed.audit.rundata import RunData
from securefed.audit.verify import EVALUATION_DIR, PREPROCESSING_DIR, SubRun, VerifyStatus

__all__ = ["NOT_LEDGERED", "disclosure_section", "subrun_purpose"]

NOT_LEDGERED = (
    "attention-mode weight rows (the weights each target's blinded sum used)",
    "t, the secret-sharing threshold of each group's sum",
    "k_min, the least number of honest members in a released sum",
    "the exposure bound of each member",
    "the members of each group (group.partition records the sizes only)",
)


def disclosure_section(data: RunData) -> Section:
    """Per round: the partition, the members of each released sum, what was unmasked; and the
    collusion parameters where a signed or attested source states them."""
    blocks: list[Block] = [
        Para(
            "What the coordinator learned in each round. With secure aggregation it sees only "
            "the sums it unmasks (one per group in group mode; one per target, still blinded "
            "for that target, in attention modes) and who took part."
        ),
        *_parameters(data),
        *_partition(data),
        _rounds(data),
        *_subrun_releases(data),
        Para(
            "Not recorded in the ledgers (nothing here is inferred for them): "
            + "; ".join(NOT_LEDGERED)
            + "."
        ),
    ]
    return Section("disclosure", "Disclosure: what the server learned", tuple(blocks))


def _attested_config(data: RunData) -> tuple[Mapping[str, object] | None, str]:
    """config.toml if its digest equals the signed config_sha256, and a sentence saying so."""
    signed = last_payload(data.events(EventType.RUN_CONFIGURED)).get("config_sha256")
    if data.config is None:
        return None, "config.toml: absent or unreadable."
    if signed is None:
        return None, "config.toml: no signed config_sha256 to check it against."
    if data.config_sha256 != signed:
        return None, "config.toml does NOT match the signed config_sha256: not used."
    return data.config, "config.toml matches the signed config_sha256 (attested)."


def _parameters(data: RunData) -> list[Block]:
    config, note = _attested_config(data)
    personalize = config.get("personalize", {}) if config is not None else {}
    table = personalize if isinstance(personalize, Mapping) else {}
    mode = last_payload(data.events(EventType.RUN_CONFIGURED)).get("mode", MISSING)
    colluders = table.get("colluders", MISSING)
    rho = table.get("min_exposure", MISSING)
    default = "the configuration's default (not stated in config.toml)"
    rows: tuple[tuple[str, str], ...] = (
        ("mode (run.configured, signed)", fmt(mode)),
        (
            "n_C, colluders assumed (config.toml)",
            default if colluders is MISSING else fmt(colluders),
        ),
        ("rho, min_exposure (config.toml)", default if rho is MISSING else fmt(rho)),
        ("t, threshold", f"{NOT_RECORDED} (not ledgered)"),
        ("k_min", f"{NOT_RECORDED} (not ledgered)"),
        ("exposure bound", f"{NOT_RECORDED} (not ledgered)"),
    )
    strong = config is None and data.config is not None
    if config is None:
        rows = tuple((k, NOT_RECORDED if "config.toml" in k else v) for k, v in rows)
    return [
        Para(note, strong=strong),
        Table(("parameter", "value"), rows, id="disclosure-parameters"),
    ]


def _partition(data: RunData) -> list[Block]:
    entries = data.events(EventType.PARTITION)
    rows = tuple(
        (
            cell(data, e, e.payload.get("round", MISSING)),
            fmt(e.payload.get("method", MISSING)),
            fmt(e.payload.get("group_sizes", MISSING)),
        )
        for e in entries
    )
    blocks: list[Block] = [
        Table(
            ("from round", "method", "group sizes"),
            rows,
            empty="No group.partition entries (not group mode, or not recorded).",
        )
    ]
    members = _members(data)
    if members:
        sizes = sorted(len(m) for m in members.values())
        signed = entries[-1].payload.get("group_sizes") if entries else None
        blocks.append(Para("Members of each group (metrics.json, unsigned):"))
        blocks.append(
            Table(
                ("group", "members"),
                tuple((str(g), ", ".join(names)) for g, names in sorted(members.items())),
            )
        )
        signed_sizes = (
            sorted(v for v in signed if isinstance(v, int)) if isinstance(signed, list) else None
        )
        if signed_sizes is not None and signed_sizes != sizes:
            text = (
                f"metrics.json's partition has groups of {sizes}, the signed group.partition "
                f"{signed_sizes}: the unsigned members do not match the signed sizes."
            )
            blocks.append(Para(text, strong=True))
    return blocks


def _members(data: RunData) -> dict[int, list[str]]:
    """metrics.json's partition (a group label per roster index) as group -> party names."""
    partition = (data.metrics or {}).get("partition")
    if not isinstance(partition, list):
        return {}
    groups: dict[int, list[str]] = {}
    for index, label in enumerate(partition):
        if isinstance(label, int) and not isinstance(label, bool):
            groups.setdefault(label, []).append(data.party(index))
    return groups


def _rounds(data: RunData) -> Table:
    """One row per run of consecutive rounds that disclosed the same (rounds ``a-b``)."""
    survivors = {e.payload.get("round"): e for e in data.events(EventType.ROUND_SURVIVORS)}
    unmasks = {e.payload.get("round"): e for e in data.events(EventType.UNMASK)}
    partition = (data.metrics or {}).get("partition")
    rounds = sorted(r for r in set(survivors) | set(unmasks) if isinstance(r, int))
    spans: list[tuple[int, int, tuple[str, ...], str | None]] = []
    for r in rounds:
        s, u = survivors.get(r), unmasks.get(r)
        alive = s.payload.get("survivors") if s is not None else None
        dropped = s.payload.get("dropouts") if s is not None else None
        row: tuple[str, ...] = (
            _count(alive),
            parties(data, dropped) if s is not None else NOT_RECORDED,
            fmt(u.payload.get("outputs", MISSING)) if u is not None else NOT_RECORDED,
            fmt(u.payload.get("target_blinded", MISSING)) if u is not None else NOT_RECORDED,
            _released_sums(data, partition, alive),
        )
        disputed = next((d for e in (s, u) if e is not None and (d := data.disputed(e))), None)
        last = spans[-1] if spans else None
        if last is not None and last[1] == r - 1 and last[2] == row and not (disputed or last[3]):
            spans[-1] = (last[0], r, row, None)
        else:
            spans.append((r, r, row, disputed))
    rows: list[tuple[Cell, ...]] = []
    for first, last_round, cells, why in spans:
        label = str(first) if first == last_round else f"{first}-{last_round}"
        rows.append((label if why is None else Flagged(label, f"TAMPERED: {why}"), *cells))
    return Table(
        (
            "rounds",
            "in the sums (round.survivors)",
            "dropped out",
            "aggregates unmasked",
            "target-blinded",
            "members of each released sum (derived: partition and survivors)",
        ),
        tuple(rows),
        empty="No round.survivors or round.unmask entries.",
        id="disclosure-rounds",
    )


def _count(value: object) -> str:
    return str(len(value)) if isinstance(value, list) else NOT_RECORDED


def _released_sums(data: RunData, partition: object, alive: object) -> str:
    if not isinstance(alive, list):
        return NOT_RECORDED
    if not isinstance(partition, list):
        return "one sum over all survivors" if alive else "none"
    sums = []
    for label in sorted({g for g in partition if isinstance(g, int)}):
        members = [i for i in alive if isinstance(i, int) and 0 <= i < len(partition)]
        inside = [_name(data, i) for i in members if partition[i] == label]
        sums.append(f"group {label}: {', '.join(inside) or 'none'}")
    return "; ".join(sums)


def _name(data: RunData, index: int) -> str:
    """A roster index as its party id (``#i`` when the roster does not name it)."""
    if data.roster is not None and data.roster.is_member(index):
        return data.roster.client(index).party_id
    return f"#{index}"


def subrun_purpose(directory: str) -> str:
    """What the sub-run ``directory`` (``evaluation``, ``baselines/local/preprocessing``, ...)
    is, in a few words."""
    name = directory.rsplit("/", 1)[-1]
    if name == PREPROCESSING_DIR:
        return "the secure sum of the institutions' released statistics, before round 1"
    if name == EVALUATION_DIR:
        return "the secure sum of the test-score histograms, after the last round"
    return "an interrupted attempt of the preprocessing sum, kept as evidence"


def _subrun_releases(data: RunData) -> list[Block]:
    """One row per sub-run of this run: what its secure sum disclosed to the server."""
    verdicts = {sub.directory: sub for sub in data.subruns if "/" not in sub.directory}
    names = list(data.subrun_ledgers) + [n for n in verdicts if n not in data.subrun_ledgers]
    if not names:
        return []
    statistic = [
        e for e in data.events(EventType.ROUND_SPEND) if e.payload.get("mechanism") == _STATISTIC
    ]
    rows = tuple(
        (
            f"{name}/",
            _learned(data, name),
            _covered(name, len(statistic)),
            _verdict(verdicts.get(name)),
        )
        for name in names
    )
    blocks: list[Block] = [
        Para(
            "Outside the training rounds: one-round secure sums on the engine, each with its "
            "own signed ledgers in a sub-run of the run directory (verified with the run, under "
            "its roster). The server learned each sum, no institution's own vector."
        ),
        Table(
            ("sub-run", "what the server learned", "covered by DP", "ledgers"),
            rows,
            id="disclosure-subruns",
        ),
    ]
    if EVALUATION_DIR in names:
        blocks.append(
            Para(
                f"The pooled evaluation ({EVALUATION_DIR}/) is a release that differential "
                "privacy does NOT cover.",
                strong=True,
            )
        )
    return blocks


_STATISTIC = "gaussian-statistic"


def _learned(data: RunData, name: str) -> str:
    if name != EVALUATION_DIR:
        return subrun_purpose(name) + (
            " (the federation-wide statistics; preprocessing/statistics.json)"
            if name == PREPROCESSING_DIR
            else " (the same released sums, sent again: not drawn or charged again)"
        )
    texts = sorted(
        {
            str(e.payload.get("text"))
            for entries in data.subrun_ledgers.get(name, {}).values()
            for e in entries
            if e.event is EventType.HAZARD
        }
    )
    if not texts:
        return f"{subrun_purpose(name)} (no hazard entry in its ledgers)"
    return "; ".join(f'"{text}" (the hazard its ledgers record)' for text in texts)


def _covered(name: str, statistic: int) -> str:
    if name == EVALUATION_DIR:
        return "NO (not noised: its hazard says so)"
    if statistic:
        return (
            f"yes: each institution's release was charged before its noise (round.spend of "
            f"mechanism {_STATISTIC} in this run's ledgers: {statistic})"
        )
    return f"no: no round.spend of mechanism {_STATISTIC} in this run's ledgers (DP off)"


def _verdict(sub: SubRun | None) -> Cell:
    if sub is None:
        return "not verified"
    text = sub.status.value + sub.remark()
    expected = sub.interrupted and sub.status is VerifyStatus.INCOMPLETE
    if sub.status is VerifyStatus.INTACT or expected:
        return text
    return Flagged("not intact", sub.result.summary())
