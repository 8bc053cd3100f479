"""Anchoring a run: the signed final heads of its ledgers, kept outside the run directory.

Every party's final checkpoint lists every party's head, so cutting one ledger (or several, as
long as one sealed ledger that lists them is left) contradicts the others
(:func:`securefed.audit.verify.verify_run` reports it ``truncated``). What the ledgers cannot show
is a cut of *every* ledger back to a common earlier point: without its final checkpoints the run
looks like one that crashed (INCOMPLETE), and whoever holds every party's identity key can even
re-seal the shorter ledgers, or put another complete run of the same roster in its place (INTACT).

An :class:`Anchor` is made once, from a sealed run that verifies INTACT (:func:`make_anchor`),
and kept where whoever can change the ledgers cannot change it. It records the digest of the
run's roster and, for every roster party, the head of its sealed ledger -- its last entry, the
final checkpoint: seq and hash -- with the party's own ledger signature of that entry.
:func:`check_anchor` (the anchor problems alone) and :func:`verify_anchored` (a whole
verification plus them) then report, per party:

* ``truncated``: its ledger ends before the anchored seq, or it has no ledger;
* ``edited``: the entry at the anchored seq has another hash, or the ledger goes on past it
  (the ledger was rewritten, or another run put in its place);
* ``edited`` (file ``roster.toml``): the roster's digest is not the anchored one.

For a ledger whose chain is broken, the head compared is where its intact chain ends. Any anchor
problem makes the result TAMPERED (exit status 1).

File format (written by ``securefed audit anchor RUN_DIR --out FILE``): one line of canonical
JSON (:mod:`securefed.audit.canonical`) and a newline, at most :data:`MAX_ANCHOR_BYTES`::

    {"format":"securefed-audit-anchor","heads":{"bank-0":{"hash":"<64 hex>","seq":11,
    "signature":"<hex>"},...,"server":{...}},"roster_digest":"<64 hex>","version":1}

``signature`` is the party's ledger-entry signature of the anchored entry
(:data:`~securefed.audit.entry.SIGNATURE_LABEL` || the 32 hash bytes, under its roster identity
key). So an anchor checks against the roster it names on its own: one whose heads are not exactly
the roster's parties, or do not verify under their keys, was altered and is refused
(:class:`AnchorFormatError`, a :class:`~securefed.errors.ConfigError`), like a malformed one.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from securefed.audit.canonical import JsonValue, decode_canonical, encode_canonical
from securefed.audit.chain import Problem, ProblemKind
from securefed.audit.checkpoint import Checkpoint, Head
from securefed.audit.entry import SIGNATURE_LABEL, parse_entry
from securefed.audit.events import EventType
from securefed.audit.ledger import LEDGER_DIR
from securefed.audit.verify import ROSTER_FILE, VerifyResult, VerifyStatus, verify_run
from securefed.crypto import VerifyKey
from securefed.errors import ConfigError, CryptoError, LedgerIntegrityError
from securefed.files import write_atomic
from securefed.secagg.roster import Roster, load_roster

__all__ = [
    "ANCHOR_FORMAT",
    "ANCHOR_VERSION",
    "MAX_ANCHOR_BYTES",
    "Anchor",
    "AnchorFormatError",
    "AnchorRefused",
    "AnchoredHead",
    "check_anchor",
    "load_anchor",
    "make_anchor",
    "verify_anchored",
    "write_anchor",
]

ANCHOR_FORMAT = "securefed-audit-anchor"
ANCHOR_VERSION = 1
MAX_ANCHOR_BYTES = 1 << 20  # about 4,000 parties
StrPath = str | os.PathLike[str]

_DIGEST = re.compile(r"[0-9a-f]{64}")
_SIGNATURE = re.compile(r"(?:[0-9a-f]{2}){1,256}")
_FIELDS = frozenset({"format", "heads", "roster_digest", "version"})
_HEAD_FIELDS = frozenset({"hash", "seq", "signature"})
_SHORT = 16  # hex digits of a hash shown in a problem
_MAX_REASON = 200  # characters of why a file is not an anchor (it may quote the file)


class AnchorFormatError(ConfigError):
    """An anchor that cannot be used: a file that cannot be read, is too large or malformed, of
    another format or version; or heads that are not exactly the parties of the roster the anchor
    names, or that their owners did not sign (the anchor was altered)."""


#: Verdicts of a sealed run whose chains all hold: anchoring pins them as they are (the two ε
#: verdicts are findings about what the parties signed, which an anchor must keep as evidence).
ANCHORABLE = frozenset(
    {VerifyStatus.INTACT, VerifyStatus.EPSILON_UNDERSTATED, VerifyStatus.OVER_BUDGET}
)


class AnchorRefused(LedgerIntegrityError):
    """The run cannot be anchored: its ledgers are not sealed and intact (``result`` says
    why)."""

    def __init__(self, run_dir: StrPath, result: VerifyResult) -> None:
        super().__init__(
            f"refusing to anchor {run_dir}: only a sealed run whose ledgers verify INTACT can be "
            f"anchored, and they are {result.status.value} ({result.summary()})"
        )
        self.result = result


@dataclass(frozen=True, slots=True)
class AnchoredHead:
    """One party's anchored head: the last entry of its sealed ledger (seq and hash, the entry
    being its final checkpoint) and the party's ledger-entry signature of it (hex).

    Raises:
        ConfigError: a head of an empty ledger (seq -1), or a signature that is not hex.
    """

    head: Head
    signature: str

    def __post_init__(self) -> None:
        if self.head.seq < 0:
            raise ConfigError(f"the anchored head of {self.head.actor!r} is not an entry (seq -1)")
        if not isinstance(self.signature, str) or not _SIGNATURE.fullmatch(self.signature):
            raise ConfigError(f"the anchored signature of {self.head.actor!r} is not lowercase hex")

    @property
    def actor(self) -> str:
        return self.head.actor

    def verify(self, key: VerifyKey) -> None:
        """Check the signature under ``key``, as :meth:`LedgerEntry.verify_signature` does.

        Raises:
            InvalidSignature: it does not verify.
        """
        message = SIGNATURE_LABEL + bytes.fromhex(self.head.hash)
        key.verify(bytes.fromhex(self.signature), message)

    def describe(self) -> str:
        """``seq 11 (hash 0123456789abcdef...)``."""
        return f"seq {self.head.seq} (hash {self.head.hash[:_SHORT]}...)"


@dataclass(frozen=True, slots=True)
class Anchor:
    """The roster digest (hex) of a sealed run and the anchored head of each of its parties
    (sorted by actor).

    Raises:
        ConfigError: a digest that is not 64 lowercase hex, no heads, or two of one actor.
    """

    roster_digest: str
    heads: tuple[AnchoredHead, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.roster_digest, str) or not _DIGEST.fullmatch(self.roster_digest):
            raise ConfigError("the anchored roster digest must be 64 lowercase hex digits")
        ordered = tuple(sorted(self.heads, key=lambda anchored: anchored.actor))
        if not ordered:
            raise ConfigError("an anchor holds at least one head")
        actors = [anchored.actor for anchored in ordered]
        if len(set(actors)) != len(actors):
            raise ConfigError("an anchor holds one head per party")
        object.__setattr__(self, "heads", ordered)

    @property
    def parties(self) -> tuple[str, ...]:
        return tuple(anchored.actor for anchored in self.heads)

    def head_of(self, actor: str) -> AnchoredHead | None:
        """The anchored head of ``actor``, if any."""
        return next((anchored for anchored in self.heads if anchored.actor == actor), None)

    def to_json(self) -> dict[str, JsonValue]:
        """The file's JSON object (see the module docstring)."""
        heads: dict[str, JsonValue] = {
            anchored.actor: {
                "hash": anchored.head.hash,
                "seq": anchored.head.seq,
                "signature": anchored.signature,
            }
            for anchored in self.heads
        }
        return {
            "format": ANCHOR_FORMAT,
            "heads": heads,
            "roster_digest": self.roster_digest,
            "version": ANCHOR_VERSION,
        }

    def to_bytes(self) -> bytes:
        """The file's content: the canonical JSON of :meth:`to_json` and a newline."""
        return encode_canonical(self.to_json()) + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "the anchor") -> Anchor:
        """Parse an anchor file's content, strictly (the inverse of :meth:`to_bytes`).

        Raises:
            AnchorFormatError: anything but exactly one anchor of this format and version, in
                canonical form, of at most :data:`MAX_ANCHOR_BYTES` (one-line message naming
                ``source``).
        """
        try:
            return cls._parse(data)
        except ValueError as exc:  # ConfigError included
            reason = " ".join(str(exc).split()) or "unreadable"
            if len(reason) > _MAX_REASON:
                reason = reason[: _MAX_REASON - 3] + "..."
            raise AnchorFormatError(f"{source} is not a securefed anchor: {reason}") from None

    @classmethod
    def _parse(cls, data: bytes) -> Anchor:
        if len(data) > MAX_ANCHOR_BYTES:
            raise ValueError(f"larger than {MAX_ANCHOR_BYTES} bytes")
        if not data.endswith(b"\n") or data.count(b"\n") != 1:
            raise ValueError("an anchor is one line of canonical JSON and a newline")
        value = decode_canonical(data[:-1])
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        if value.get("format") != ANCHOR_FORMAT:
            raise ValueError(f"format is {value.get('format')!r}, not {ANCHOR_FORMAT!r}")
        version = value.get("version")
        if type(version) is not int or version != ANCHOR_VERSION:
            raise ValueError(f"version {version!r} is not supported (only {ANCHOR_VERSION})")
        if set(value) != _FIELDS:
            raise ValueError(f"the fields must be exactly {sorted(_FIELDS)}")
        digest, heads = value["roster_digest"], value["heads"]
        if not isinstance(digest, str):
            raise ValueError("roster_digest must be a string")
        if not isinstance(heads, dict) or not heads:
            raise ValueError("heads must be a non-empty object")
        return cls(digest, tuple(_parse_head(actor, item) for actor, item in heads.items()))


def _parse_head(actor: str, item: JsonValue) -> AnchoredHead:
    if not isinstance(item, dict) or set(item) != _HEAD_FIELDS:
        raise ValueError(f"the head of {actor!r} must have exactly {sorted(_HEAD_FIELDS)}")
    seq, digest, signature = item["seq"], item["hash"], item["signature"]
    if type(seq) is not int or not isinstance(digest, str) or not isinstance(signature, str):
        raise ValueError(f"the head of {actor!r} has a malformed seq, hash or signature")
    return AnchoredHead(Head(actor, seq, digest), signature)


def load_anchor(path: StrPath) -> Anchor:
    """Read and parse an anchor file (at most :data:`MAX_ANCHOR_BYTES` are read).

    Raises:
        AnchorFormatError: it cannot be read, is not a regular file, or is not a valid anchor.
    """
    path = Path(path)
    try:
        if not path.is_file():
            raise AnchorFormatError(f"anchor {path} is not a file")
        with path.open("rb") as handle:
            data = handle.read(MAX_ANCHOR_BYTES + 1)
    except OSError as exc:
        raise AnchorFormatError(f"cannot read anchor {path}: {exc.strerror}") from None
    return Anchor.from_bytes(data, source=f"anchor {path}")


def write_anchor(anchor: Anchor, path: StrPath) -> None:
    """Write ``anchor`` to ``path`` atomically and durably, mode 0o644; never over a file.

    Raises:
        ConfigError: ``path`` exists, or cannot be written.
    """
    write_atomic(path, anchor.to_bytes(), mode=0o644, overwrite=False)


def make_anchor(run_dir: StrPath, roster: Roster | None = None) -> Anchor:
    """The anchor of a sealed run: verify it (:func:`verify_run`, under ``roster`` or the run's
    ``roster.toml``); if INTACT, record every party's last entry and its signature.

    Raises:
        AnchorRefused: the ledgers are not INTACT (TAMPERED or INCOMPLETE: unsealed, cut, ...),
            apart from the ε verdicts (:data:`ANCHORABLE`): an understated or over-budget ε is
            signed evidence, anchored as it is.
        ConfigError: no roster or no ledgers (as :func:`verify_run`), or a ledger that changed
            while it was being anchored.
    """
    run_dir = Path(run_dir)
    roster = roster if roster is not None else load_roster(run_dir / ROSTER_FILE)
    result = verify_run(run_dir, roster)
    if result.status not in ANCHORABLE:
        raise AnchorRefused(run_dir, result)
    keys = _roster_keys(roster)
    files = _ledger_files(run_dir)
    heads = []
    for head in result.heads:
        anchored = _last_entry(files[head.actor], head, keys[head.actor])
        heads.append(anchored)
    if {anchored.actor for anchored in heads} != set(keys):  # pragma: no cover -- INTACT
        raise AnchorRefused(run_dir, result)
    return Anchor(roster.digest().hex(), tuple(heads))


def _last_entry(path: Path, head: Head, key: VerifyKey) -> AnchoredHead:
    """The last entry of ``path`` as an anchored head, once it is still the verified ``head``
    (a sealed ledger's final checkpoint) and its signature verifies."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read ledger {path}: {exc.strerror}") from None
    changed = ConfigError(f"ledger {path} changed while it was being anchored: anchor it again")
    try:
        entry = parse_entry(lines[-1]) if lines else None
    except ValueError:
        entry = None
    if entry is None or (entry.seq, entry.hash, entry.actor) != (head.seq, head.hash, head.actor):
        raise changed
    if entry.event is not EventType.CHECKPOINT or not Checkpoint.from_payload(entry.payload).final:
        raise changed
    anchored = AnchoredHead(head, entry.signature)
    try:
        anchored.verify(key)
    except CryptoError:
        raise changed from None
    return anchored


def check_anchor(
    anchor: Anchor,
    run_dir: StrPath,
    roster: Roster | None = None,
    *,
    source: str = "the anchor",
) -> tuple[Problem, ...]:
    """The anchor problems of a run directory (module docstring), after verifying it
    (:func:`verify_run`); empty when every party's ledger ends at its anchored head.

    Raises:
        AnchorFormatError: the roster digest is the anchored one, but the anchor's heads are not
            exactly the roster's parties or do not verify under their keys (altered).
        ConfigError: as :func:`verify_run`.
    """
    return _Checked.of(anchor, run_dir, roster, source).problems


def verify_anchored(
    run_dir: StrPath,
    anchor: Anchor,
    roster: Roster | None = None,
    *,
    source: str = "the anchor",
) -> VerifyResult:
    """:func:`verify_run` of ``run_dir``, with the problems of :func:`check_anchor` added after
    its own (so any makes the result TAMPERED, exit status 1) and a note that the anchor was
    checked. A party with an anchor problem is not also listed as ``missing``.

    Raises:
        AnchorFormatError, ConfigError: as :func:`check_anchor`.
    """
    checked = _Checked.of(anchor, run_dir, roster, source)
    result, extra = checked.result, checked.problems
    # an anchor problem that a cross-ledger check already found (same file, kind and seq) once
    seen = {(problem.file, problem.kind, problem.seq) for problem in result.problems}
    problems = [*result.problems, *(p for p in extra if (p.file, p.kind, p.seq) not in seen)]
    named = {problem.file for problem in extra}
    digest = anchor.roster_digest[:_SHORT]
    parties = "1 party" if len(anchor.heads) == 1 else f"{len(anchor.heads)} parties"
    verdict = "they do not all match" if extra else "every ledger ends at its anchored head"
    note = (
        f"Checked against an anchor of the final heads of {parties} (roster digest "
        f"{digest}...): {verdict}."
    )
    return dataclasses.replace(
        result,
        ok=not problems,
        problem=problems[0] if problems else None,
        problems=tuple(problems),
        notes=(*result.notes, note),
        missing=tuple(gap for gap in result.missing if gap.file not in named),
    )


@dataclass(frozen=True, slots=True)
class _Checked:
    result: VerifyResult
    problems: tuple[Problem, ...]

    @classmethod
    def of(cls, anchor: Anchor, run_dir: StrPath, roster: Roster | None, source: str) -> _Checked:
        run_dir = Path(run_dir)
        roster_file = ROSTER_FILE if roster is None else "the given roster"
        if roster is None:
            roster = load_roster(run_dir / ROSTER_FILE)
        problems: list[Problem] = []
        digest = roster.digest().hex()
        if digest == anchor.roster_digest:  # an altered anchor is refused before any work
            _check_signatures(anchor, _roster_keys(roster), source)
        else:
            detail = (
                f"the roster's digest is {digest[:_SHORT]}..., not the anchored "
                f"{anchor.roster_digest[:_SHORT]}...: the run is not under the anchored roster"
            )
            problems.append(Problem(roster_file, ProblemKind.EDITED, detail))
        result = verify_run(run_dir, roster)
        files = {
            actor: path.relative_to(run_dir).as_posix()
            for actor, path in _ledger_files(run_dir).items()
        }
        problems += _head_problems(anchor, result, files)
        return cls(result, tuple(problems))


def _check_signatures(anchor: Anchor, keys: Mapping[str, VerifyKey], source: str) -> None:
    """The anchor's heads are exactly the roster's parties, each signed by its owner."""
    altered = f"{source} does not match the roster it names, so it was altered"
    if set(anchor.parties) != set(keys):
        unknown = sorted(set(anchor.parties) - set(keys))
        absent = sorted(set(keys) - set(anchor.parties))
        raise AnchorFormatError(
            f"{altered}: parties not in the roster {unknown}, roster parties absent {absent}"
        )
    for anchored in anchor.heads:
        try:
            anchored.verify(keys[anchored.actor])
        except CryptoError:
            raise AnchorFormatError(
                f"{altered}: the head of {anchored.actor!r} is not signed by {anchored.actor!r}"
            ) from None


def _head_problems(anchor: Anchor, result: VerifyResult, files: Mapping[str, str]) -> list[Problem]:
    """Each party's verified head against its anchored head. For a ledger that already has a
    problem the verified head is where its intact chain ends, and the text says so."""
    found = {head.actor: head for head in result.heads}
    damaged = {problem.file for problem in result.problems}
    problems: list[Problem] = []
    for anchored in anchor.heads:
        actor, seq = anchored.actor, anchored.head.seq
        file = files.get(actor, f"{LEDGER_DIR}/{actor}.jsonl")
        anchored_at = f"the anchor records its final head at {anchored.describe()}"
        head = found.get(actor)
        if head is None:
            detail = f"no ledger of {actor!r}, but {anchored_at}"
            problems.append(Problem(file, ProblemKind.TRUNCATED, detail, seq=0))
            continue
        ledger = f"the intact chain of {actor!r}" if file in damaged else f"the ledger of {actor!r}"
        if head.seq < seq:
            detail = f"{ledger} ends at seq {head.seq}, but {anchored_at}: cut"
            problems.append(
                Problem(file, ProblemKind.TRUNCATED, detail, seq=head.seq + 1, line=head.seq + 2)
            )
        elif head.seq > seq:
            detail = f"{ledger} goes on to seq {head.seq}, but {anchored_at}: rewritten"
            problems.append(Problem(file, ProblemKind.EDITED, detail, seq=seq, line=seq + 1))
        elif head.hash != anchored.head.hash:
            detail = (
                f"{ledger} ends at seq {seq} with hash {head.hash[:_SHORT]}..., but "
                f"{anchored_at}: rewritten"
            )
            problems.append(Problem(file, ProblemKind.EDITED, detail, seq=seq, line=seq + 1))
    return problems


def _roster_keys(roster: Roster) -> dict[str, VerifyKey]:
    keys = {roster.server.party_id: roster.server.identity}
    keys.update({client.party_id: client.identity for client in roster.clients})
    return keys


def _ledger_files(run_dir: Path) -> dict[str, Path]:
    """The ledger file of each actor, as :func:`verify_run` picks it (the first in sorted
    order)."""
    directory = run_dir / LEDGER_DIR
    files: dict[str, Path] = {}
    try:
        found: Iterable[Path] = sorted(p for p in directory.rglob("*.jsonl") if p.is_file())
    except OSError as exc:
        raise ConfigError(f"cannot read {exc.filename or directory}: {exc.strerror}") from None
    for path in found:
        files.setdefault(path.stem, path)
    return files
