"""The engine's messages: coordinator requests and institution replies, typed and bounded.

One frozen dataclass per kind (:class:`Kind`). Each message has one canonical encoding::

    MAGIC "SE" || u8 version || u8 kind || body

with every field fixed-width or length-prefixed against an explicit limit, checked before
anything is allocated. :func:`decode` reads exactly one message and refuses anything else --
an unknown kind, a truncated or oversized field, trailing bytes, a value out of range -- with a
:class:`~securefed.errors.RemoteProtocolError`; nothing else escapes it (no pickle, nothing is
evaluated). Secure-aggregation messages travel inside as their own signed encoding
(:mod:`securefed.secagg.messages`); the engine never trusts a field it cannot check itself.

The in-memory transport and Flower carry exactly these bytes (docs/deploy.md, "Exchanges").
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from securefed.audit import Head
from securefed.errors import ConfigError, RemoteProtocolError
from securefed.secagg.wire import Reader, Writer

__all__ = [
    "MAX_BLOB_BYTES",
    "MAX_PARTIES",
    "Advert",
    "AdvertPart",
    "Advertised",
    "ClientInfo",
    "Evaluation",
    "Finish",
    "Finished",
    "Join",
    "Joined",
    "Kind",
    "NextRound",
    "Refused",
    "Reply",
    "Request",
    "Result",
    "ResultKind",
    "RunStatus",
    "Seal",
    "Sealed",
    "Setup",
    "SetupReply",
    "Step",
    "StepPhase",
    "StepReply",
    "Train",
    "Trained",
    "decode",
    "encode",
]

MAGIC = b"SE"
VERSION = 1
MAX_BLOB_BYTES = 1 << 30  # one secure-aggregation message: a masked vector of a large model
MAX_MESSAGES = 1 << 16  # secure-aggregation messages in one request or reply
MAX_PARTIES = 1 << 16
MAX_VECTOR = 1 << 27  # float64 values in one vector (1 GiB)
MAX_TEXT = 4096
ERROR_NAME_BYTES = 64
CHALLENGE_BYTES = 32
SESSION_BYTES = 32

Vector = npt.NDArray[np.float64]


class Kind(IntEnum):
    """Every message kind, requests (coordinator -> institution) then replies."""

    JOIN = 1
    SETUP = 2
    ADVERT = 3
    TRAIN = 4
    STEP = 5
    FINISH = 6
    SEAL = 7
    JOINED = 101
    SETUP_REPLY = 102
    ADVERTISED = 103
    TRAINED = 104
    STEP_REPLY = 105
    FINISHED = 106
    SEALED = 107
    REFUSED = 199


class StepPhase(Enum):
    """The protocol phases after training, one exchange each."""

    KEYS = "keys"  # key directory in, sealed shares out (attention, or a newly learned partition)
    VERIFY = "verify"  # share bundle in, share receipt (complaints about bad shares) out
    MASK = "mask"  # mask request (the members) in, masked input(s) out
    CONFIRM = "confirm"  # survivor set in, consistency signature out
    UNMASK = "unmask"  # consistency signatures in, unmasking shares (and next round's keys) out


class ResultKind(IntEnum):
    """What a party gets back after a round."""

    GROUP_SUM = 1  # fedavg / group: the decoded sum of the group and its contributors
    BLINDED = 2  # attention: the target-blinded output (a signed secure-aggregation message)
    PLAIN = 3  # plaintext comparison runs: the personalized model itself


class RunStatus(Enum):
    """How a run ended. ``completed``: every aggregating round produced an aggregate;
    ``degraded``: some did not (no survivors, an aborted protocol); ``failed``: none did, or the
    run could not go on; ``interrupted``: the driver gave up (an error outside the engine)."""

    COMPLETED = "completed"
    DEGRADED = "degraded"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


# --- field codecs -------------------------------------------------------------------------------


def _bytes(w: Writer, data: bytes, limit: int = MAX_BLOB_BYTES) -> None:
    w.blob(data, limit=limit)


def _clipped(text: str, limit: int) -> bytes:
    """``text`` in UTF-8, cut to at most ``limit`` bytes at a character boundary (an error
    text is informative, never worth failing a reply over)."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", errors="ignore").encode("utf-8")


def _text(w: Writer, text: str, limit: int = MAX_TEXT) -> None:
    w.blob(_clipped(text, limit), limit=limit)


def _read_text(r: Reader, limit: int = MAX_TEXT) -> str:
    try:
        return r.blob(limit=limit).decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError("a text field is not UTF-8") from None


def _flag(w: Writer, value: bool) -> None:
    w.u8(1 if value else 0)


def _read_flag(r: Reader) -> bool:
    value = r.u8()
    if value > 1:
        raise RemoteProtocolError("a flag is 0 or 1")
    return value == 1


_NONE_FLOAT = struct.pack(">d", math.nan)  # the one encoding of an absent number


def _float(w: Writer, value: float | None) -> None:
    """An optional finite float64 (one NaN bit pattern stands for None; any NaN is sent so)."""
    absent = value is None or math.isnan(value)
    w.fixed(_NONE_FLOAT if absent else struct.pack(">d", value), 8)


def _read_float(r: Reader) -> float | None:
    raw = r.fixed(8)
    if raw == _NONE_FLOAT:
        return None
    value = float(struct.unpack(">d", raw)[0])
    if not math.isfinite(value):  # another NaN would be a second encoding of None
        raise RemoteProtocolError("a number is NaN or infinite")
    return value


def _vector(w: Writer, vector: Vector | None) -> None:
    data = b"" if vector is None else np.ascontiguousarray(vector, dtype="<f8").tobytes()
    w.u8(0 if vector is None else 1).blob(data, limit=8 * MAX_VECTOR)


def _read_vector(r: Reader) -> Vector | None:
    present = _read_flag(r)
    data = r.blob(limit=8 * MAX_VECTOR)
    if not present:
        if data:
            raise RemoteProtocolError("an absent vector carries no bytes")
        return None
    if len(data) % 8:
        raise RemoteProtocolError("a float64 vector's length is a multiple of 8")
    vector = np.frombuffer(data, dtype="<f8").astype(np.float64)
    if not np.isfinite(vector).all():
        raise RemoteProtocolError("a vector holds NaN or infinite values")
    return vector


def _blobs(w: Writer, items: tuple[bytes, ...]) -> None:
    w.items(list(items), lambda wr, b: wr.blob(b, limit=MAX_BLOB_BYTES), limit=MAX_MESSAGES)


def _read_blobs(r: Reader) -> tuple[bytes, ...]:
    return r.items(lambda rd: rd.blob(limit=MAX_BLOB_BYTES), limit=MAX_MESSAGES)


def _ints(w: Writer, values: tuple[int, ...]) -> None:
    w.items(list(values), Writer.u32, limit=MAX_PARTIES)


def _read_ints(r: Reader) -> tuple[int, ...]:
    return r.items(Reader.u32, limit=MAX_PARTIES)


def _heads(w: Writer, heads: tuple[Head, ...]) -> None:
    w.items([h.to_bytes() for h in heads], lambda wr, b: wr.blob(b, limit=256), limit=MAX_PARTIES)


def _read_heads(r: Reader) -> tuple[Head, ...]:
    heads = tuple(
        Head.from_bytes(b) for b in r.items(lambda rd: rd.blob(limit=256), limit=MAX_PARTIES)
    )
    if len({h.actor for h in heads}) != len(heads):
        raise RemoteProtocolError("two heads of one party")
    return heads


def _optional_head(w: Writer, head: Head | None) -> None:
    w.blob(b"" if head is None else head.to_bytes(), limit=256)


def _read_optional_head(r: Reader) -> Head | None:
    data = r.blob(limit=256)
    return None if not data else Head.from_bytes(data)


def _check(condition: bool, what: str) -> None:
    """Constructor validation: an invalid message cannot exist (RemoteProtocolError, so a
    decoder that builds one from bad bytes reports the peer)."""
    if not condition:
        raise RemoteProtocolError(what)


def _round_ok(value: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 32


# --- shared parts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NextRound:
    """What a party needs to advertise keys for a round: its number, the partition (one group
    label per roster index, labels 0..G-1) and one fresh session id per group."""

    round: int
    partition: tuple[int, ...]
    sessions: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check(_round_ok(self.round) and self.round >= 1, "a round number is >= 1")
        groups = len(self.sessions)
        _check(groups >= 1 and set(self.partition) == set(range(groups)), "bad partition labels")
        _check(all(len(s) == SESSION_BYTES for s in self.sessions), "a session id is 32 bytes")

    def write(self, w: Writer) -> None:
        w.u32(self.round)
        _ints(w, self.partition)
        w.items(list(self.sessions), lambda wr, s: wr.fixed(s, SESSION_BYTES), limit=MAX_PARTIES)

    @classmethod
    def read(cls, r: Reader) -> NextRound:
        round_, partition = r.u32(), _read_ints(r)
        return cls(
            round_, partition, r.items(lambda rd: rd.fixed(SESSION_BYTES), limit=MAX_PARTIES)
        )


def _optional_next(w: Writer, value: NextRound | None) -> None:
    _flag(w, value is not None)
    if value is not None:
        value.write(w)


def _read_optional_next(r: Reader) -> NextRound | None:
    return NextRound.read(r) if _read_flag(r) else None


@dataclass(frozen=True, slots=True)
class Result:
    """One party's outcome of ``round``: see :class:`ResultKind`. ``values`` is the group sum
    (GROUP_SUM) or the model (PLAIN); ``contributors`` are roster indices (GROUP_SUM);
    ``blinded`` is the encoded blinded output (BLINDED)."""

    round: int
    kind: ResultKind
    values: Vector | None = None
    contributors: tuple[int, ...] = ()
    blinded: bytes = b""

    def __post_init__(self) -> None:
        _check(_round_ok(self.round) and self.round >= 1, "a result names its round")
        has_values = self.values is not None
        _check(
            has_values == (self.kind is not ResultKind.BLINDED), "values exactly without blinding"
        )
        _check(bool(self.blinded) == (self.kind is ResultKind.BLINDED), "blinded output mismatch")
        _check(
            bool(self.contributors) == (self.kind is ResultKind.GROUP_SUM), "contributors mismatch"
        )

    def write(self, w: Writer) -> None:
        w.u32(self.round).u8(self.kind)
        _vector(w, self.values)
        _ints(w, self.contributors)
        _bytes(w, self.blinded)

    @classmethod
    def read(cls, r: Reader) -> Result:
        round_, kind = r.u32(), r.u8()
        try:
            result_kind = ResultKind(kind)
        except ValueError:
            raise RemoteProtocolError("unknown result kind") from None
        return cls(
            round_, result_kind, _read_vector(r), _read_ints(r), r.blob(limit=MAX_BLOB_BYTES)
        )


def _optional_result(w: Writer, value: Result | None) -> None:
    _flag(w, value is not None)
    if value is not None:
        value.write(w)


def _read_optional_result(r: Reader) -> Result | None:
    return Result.read(r) if _read_flag(r) else None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A party's own numbers after ``round`` (0: before the first): test accuracy of its
    current model and its epsilon spent (None without DP)."""

    round: int
    accuracy: float | None
    epsilon: float | None

    def write(self, w: Writer) -> None:
        w.u32(self.round)
        _float(w, self.accuracy)
        _float(w, self.epsilon)

    @classmethod
    def read(cls, r: Reader) -> Evaluation:
        return cls(r.u32(), _read_float(r), _read_float(r))


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What a party reports once, for the run's metrics: record counts, and its DP settings."""

    train_samples: int
    test_samples: int
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    steps_per_round: int = 0
    statistic_noise_multiplier: float | None = None

    def write(self, w: Writer) -> None:
        w.u64(self.train_samples).u64(self.test_samples)
        _float(w, self.noise_multiplier)
        _float(w, self.sample_rate)
        w.u64(self.steps_per_round)
        _float(w, self.statistic_noise_multiplier)

    @classmethod
    def read(cls, r: Reader) -> ClientInfo:
        return cls(r.u64(), r.u64(), _read_float(r), _read_float(r), r.u64(), _read_float(r))


@dataclass(frozen=True, slots=True)
class AdvertPart:
    """A party's answer to a :class:`NextRound`: its signed key advertisement, or why it
    declines (its budget would be exceeded), and its ledger head (bound into that round)."""

    round: int
    head: Head
    advert: bytes = b""
    declined: str = ""

    def __post_init__(self) -> None:
        _check(bool(self.advert) != bool(self.declined), "an advertisement or a reason, not both")

    def write(self, w: Writer) -> None:
        w.u32(self.round)
        _optional_head(w, self.head)
        _bytes(w, self.advert, limit=1 << 16)
        _text(w, self.declined)

    @classmethod
    def read(cls, r: Reader) -> AdvertPart:
        round_, head = r.u32(), _read_optional_head(r)
        _check(head is not None, "an advertisement carries the party's head")
        assert head is not None  # noqa: S101 - checked above
        return cls(round_, head, r.blob(limit=1 << 16), _read_text(r))


def _optional_advert(w: Writer, value: AdvertPart | None) -> None:
    _flag(w, value is not None)
    if value is not None:
        value.write(w)


def _read_optional_advert(r: Reader) -> AdvertPart | None:
    return AdvertPart.read(r) if _read_flag(r) else None


# --- requests -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    """Who are you? Answered with a :class:`Joined` signed over ``challenge``, the roster, the
    ``node`` the request went to and ``setup`` (:mod:`~securefed.runtime.engine.signing`).
    ``setup`` is the session id of the sketch-seed setup (empty: none); ``next`` asks for keys
    for a round."""

    KIND: ClassVar[Kind] = Kind.JOIN
    challenge: bytes
    setup: bytes = b""
    next: NextRound | None = None
    node: int = 0

    def __post_init__(self) -> None:
        _check(len(self.challenge) == CHALLENGE_BYTES, "a challenge is 32 bytes")
        _check(len(self.setup) in (0, SESSION_BYTES), "a session id is 32 bytes")
        _check(0 <= self.node < 1 << 64, "a node id is a 64-bit number")

    def write(self, w: Writer) -> None:
        w.fixed(self.challenge, CHALLENGE_BYTES)
        _bytes(w, self.setup, limit=SESSION_BYTES)
        _optional_next(w, self.next)
        w.u64(self.node)

    @classmethod
    def read(cls, r: Reader) -> Join:
        challenge, setup = r.fixed(CHALLENGE_BYTES), r.blob(limit=SESSION_BYTES)
        return cls(challenge, setup, _read_optional_next(r), r.u64())


@dataclass(frozen=True, slots=True)
class Setup:
    """A step of a sketch-seed setup: the key ``directory`` (a signed secure-aggregation
    message), or -- between rounds, after the membership changed -- ``session``, the id of a
    fresh deal, for which the party answers with a new session key (docs/fedamp.md, "Sketch
    epochs"). Exactly one of the two is set."""

    KIND: ClassVar[Kind] = Kind.SETUP
    directory: bytes = b""
    session: bytes = b""

    def __post_init__(self) -> None:
        _check(bool(self.directory) != bool(self.session), "a setup step is a directory or a deal")
        _check(len(self.session) in (0, SESSION_BYTES), "a session id is 32 bytes")

    def write(self, w: Writer) -> None:
        _bytes(w, self.directory, limit=1 << 24)
        _bytes(w, self.session, limit=SESSION_BYTES)

    @classmethod
    def read(cls, r: Reader) -> Setup:
        return cls(r.blob(limit=1 << 24), r.blob(limit=SESSION_BYTES))


@dataclass(frozen=True, slots=True)
class Advert:
    """Advertise keys for ``next``; ``delivery`` is this party's sealed sketch seed (if any)."""

    KIND: ClassVar[Kind] = Kind.ADVERT
    next: NextRound
    delivery: bytes = b""

    def write(self, w: Writer) -> None:
        self.next.write(w)
        _bytes(w, self.delivery, limit=1 << 16)

    @classmethod
    def read(cls, r: Reader) -> Advert:
        return cls(NextRound.read(r), r.blob(limit=1 << 16))


@dataclass(frozen=True, slots=True)
class Train:
    """Round ``round`` begins for this party.

    First the previous round ends: ``result`` (if any) is applied and ``heads`` (the heads bound
    into that round) are checkpointed. Then, if ``train``, the party trains locally; in a
    secure round it gives its model to the round's protocol and answers ``messages`` (its key
    directory, bound to ``context``: the heads every party of this round signs). ``sketch``
    asks for its secret sketch (attention weights, or a partition to learn); ``delivery`` is its
    sealed sketch seed (the first round after the setup)."""

    KIND: ClassVar[Kind] = Kind.TRAIN
    round: int
    train: bool = True
    result: Result | None = None
    heads: tuple[Head, ...] = ()
    messages: tuple[bytes, ...] = ()
    context: tuple[Head, ...] = ()
    sketch: bool = False
    delivery: bytes = b""

    def __post_init__(self) -> None:
        _check(_round_ok(self.round) and self.round >= 1, "a round number is >= 1")
        _check(self.train or not (self.messages or self.sketch), "no protocol without training")

    def write(self, w: Writer) -> None:
        w.u32(self.round)
        _flag(w, self.train)
        _optional_result(w, self.result)
        _heads(w, self.heads)
        _blobs(w, self.messages)
        _heads(w, self.context)
        _flag(w, self.sketch)
        _bytes(w, self.delivery, limit=1 << 16)

    @classmethod
    def read(cls, r: Reader) -> Train:
        return cls(
            r.u32(),
            _read_flag(r),
            _read_optional_result(r),
            _read_heads(r),
            _read_blobs(r),
            _read_heads(r),
            _read_flag(r),
            r.blob(limit=1 << 16),
        )


@dataclass(frozen=True, slots=True)
class Step:
    """One protocol phase of round ``round`` (:class:`StepPhase`): the server's messages for
    this party in; ``context`` goes with a KEYS step's directory, ``next`` with UNMASK (keys
    for the following round are advertised in the same reply)."""

    KIND: ClassVar[Kind] = Kind.STEP
    round: int
    phase: StepPhase
    messages: tuple[bytes, ...]
    context: tuple[Head, ...] = ()
    next: NextRound | None = None

    def __post_init__(self) -> None:
        _check(_round_ok(self.round) and self.round >= 1, "a round number is >= 1")
        _check(not self.context or self.phase is StepPhase.KEYS, "context goes with KEYS only")
        _check(self.next is None or self.phase is StepPhase.UNMASK, "next goes with UNMASK only")

    def write(self, w: Writer) -> None:
        w.u32(self.round)
        _text(w, self.phase.value)
        _blobs(w, self.messages)
        _heads(w, self.context)
        _optional_next(w, self.next)

    @classmethod
    def read(cls, r: Reader) -> Step:
        round_ = r.u32()
        try:
            phase = StepPhase(_read_text(r))
        except ValueError:
            raise RemoteProtocolError("unknown step phase") from None
        return cls(round_, phase, _read_blobs(r), _read_heads(r), _read_optional_next(r))


@dataclass(frozen=True, slots=True)
class Finish:
    """The run ends after ``round``: apply ``result``, checkpoint ``heads``, record
    ``run.finished`` with ``status``; answered with the party's head."""

    KIND: ClassVar[Kind] = Kind.FINISH
    round: int
    status: RunStatus
    result: Result | None = None
    heads: tuple[Head, ...] = ()

    def write(self, w: Writer) -> None:
        w.u32(self.round)
        _text(w, self.status.value)
        _optional_result(w, self.result)
        _heads(w, self.heads)

    @classmethod
    def read(cls, r: Reader) -> Finish:
        round_ = r.u32()
        try:
            status = RunStatus(_read_text(r))
        except ValueError:
            raise RemoteProtocolError("unknown run status") from None
        return cls(round_, status, _read_optional_result(r), _read_heads(r))


@dataclass(frozen=True, slots=True)
class Seal:
    """Record the final checkpoint of every party's last head. ``signatures[i]`` is the owner's
    signature of ``heads[i]`` (the institutions' from their :class:`Finished` replies, the
    server's own), so a party seals no head its owner did not vouch for."""

    KIND: ClassVar[Kind] = Kind.SEAL
    heads: tuple[Head, ...]
    signatures: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        _check(len(self.signatures) == len(self.heads), "one signature per sealed head")

    def write(self, w: Writer) -> None:
        _heads(w, self.heads)
        w.items(list(self.signatures), lambda wr, b: wr.blob(b, limit=1024), limit=MAX_PARTIES)

    @classmethod
    def read(cls, r: Reader) -> Seal:
        return cls(_read_heads(r), r.items(lambda rd: rd.blob(limit=1024), limit=MAX_PARTIES))


# --- replies ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Joined:
    """A party's answer to :class:`Join`. ``signature`` is its identity key's signature over
    the challenge and this reply's encoding without the signature (docs/deploy.md)."""

    KIND: ClassVar[Kind] = Kind.JOINED
    party: str
    head: Head
    dim: int
    info: ClientInfo
    evaluation: Evaluation
    setup_key: bytes = b""
    advert: AdvertPart | None = None
    signature: bytes = b""

    def write(self, w: Writer) -> None:
        self.write_unsigned(w)
        _bytes(w, self.signature, limit=1024)

    def write_unsigned(self, w: Writer) -> None:
        _text(w, self.party)
        _optional_head(w, self.head)
        w.u64(self.dim)
        self.info.write(w)
        self.evaluation.write(w)
        _bytes(w, self.setup_key, limit=1 << 16)
        _optional_advert(w, self.advert)

    @classmethod
    def read(cls, r: Reader) -> Joined:
        party, head = _read_text(r), _read_optional_head(r)
        _check(head is not None, "a join reply carries the party's head")
        assert head is not None  # noqa: S101 - checked above
        return cls(
            party,
            head,
            r.u64(),
            ClientInfo.read(r),
            Evaluation.read(r),
            r.blob(limit=1 << 16),
            _read_optional_advert(r),
            r.blob(limit=1024),
        )


@dataclass(frozen=True, slots=True)
class SetupReply:
    """The sketch-seed dealer's sealed offer (other parties answer with nothing), or -- to a
    fresh deal -- the party's new session key."""

    KIND: ClassVar[Kind] = Kind.SETUP_REPLY
    messages: tuple[bytes, ...] = ()

    def write(self, w: Writer) -> None:
        _blobs(w, self.messages)

    @classmethod
    def read(cls, r: Reader) -> SetupReply:
        return cls(_read_blobs(r))


@dataclass(frozen=True, slots=True)
class Advertised:
    KIND: ClassVar[Kind] = Kind.ADVERTISED
    advert: AdvertPart

    def write(self, w: Writer) -> None:
        self.advert.write(w)

    @classmethod
    def read(cls, r: Reader) -> Advertised:
        return cls(AdvertPart.read(r))


@dataclass(frozen=True, slots=True)
class Trained:
    """A party's answer to :class:`Train`: its evaluation after the previous round, whether it
    trained (else ``refused`` says why), its head after training, and what the round needs
    from it: protocol ``messages``, its ``sketch`` (with the ``commitment`` of the sketch seed it
    sketched under), or (plaintext comparison runs only) its ``model`` and ``similarity``
    vector."""

    KIND: ClassVar[Kind] = Kind.TRAINED
    evaluation: Evaluation
    head: Head
    trained: bool
    refused: str = ""
    messages: tuple[bytes, ...] = ()
    sketch: Vector | None = field(default=None, compare=False)
    model: Vector | None = field(default=None, compare=False)
    similarity: Vector | None = field(default=None, compare=False)
    commitment: bytes = b""

    def __post_init__(self) -> None:
        _check(len(self.commitment) in (0, SESSION_BYTES), "a seed commitment is 32 bytes")

    def write(self, w: Writer) -> None:
        self.evaluation.write(w)
        _optional_head(w, self.head)
        _flag(w, self.trained)
        _text(w, self.refused)
        _blobs(w, self.messages)
        _vector(w, self.sketch)
        _vector(w, self.model)
        _vector(w, self.similarity)
        _bytes(w, self.commitment, limit=SESSION_BYTES)

    @classmethod
    def read(cls, r: Reader) -> Trained:
        evaluation, head = Evaluation.read(r), _read_optional_head(r)
        _check(head is not None, "a train reply carries the party's head")
        assert head is not None  # noqa: S101 - checked above
        return cls(
            evaluation,
            head,
            _read_flag(r),
            _read_text(r),
            _read_blobs(r),
            _read_vector(r),
            _read_vector(r),
            _read_vector(r),
            r.blob(limit=SESSION_BYTES),
        )


@dataclass(frozen=True, slots=True)
class StepReply:
    """Protocol messages for the server; ``error`` when the party's protocol aborted (it then
    sits the rest of the round out); ``advert`` answers a ``next`` round."""

    KIND: ClassVar[Kind] = Kind.STEP_REPLY
    messages: tuple[bytes, ...] = ()
    error: str = ""
    advert: AdvertPart | None = None

    def write(self, w: Writer) -> None:
        _blobs(w, self.messages)
        _text(w, self.error)
        _optional_advert(w, self.advert)

    @classmethod
    def read(cls, r: Reader) -> StepReply:
        return cls(_read_blobs(r), _read_text(r), _read_optional_advert(r))


@dataclass(frozen=True, slots=True)
class Finished:
    """The party's evaluation after the run and its last head, with its identity key's
    signature of that head (:func:`~securefed.runtime.engine.signing.sign_final_head`)."""

    KIND: ClassVar[Kind] = Kind.FINISHED
    evaluation: Evaluation
    head: Head
    signature: bytes = b""

    def write(self, w: Writer) -> None:
        self.evaluation.write(w)
        _optional_head(w, self.head)
        _bytes(w, self.signature, limit=1024)

    @classmethod
    def read(cls, r: Reader) -> Finished:
        evaluation, head = Evaluation.read(r), _read_optional_head(r)
        _check(head is not None, "a finish reply carries the party's head")
        assert head is not None  # noqa: S101 - checked above
        return cls(evaluation, head, r.blob(limit=1024))


@dataclass(frozen=True, slots=True)
class Sealed:
    KIND: ClassVar[Kind] = Kind.SEALED
    evaluation: Evaluation

    def write(self, w: Writer) -> None:
        self.evaluation.write(w)

    @classmethod
    def read(cls, r: Reader) -> Sealed:
        return cls(Evaluation.read(r))


@dataclass(frozen=True, slots=True)
class Refused:
    """The party refused the request: the error's type name and message (never a secret)."""

    KIND: ClassVar[Kind] = Kind.REFUSED
    error: str
    reason: str

    def write(self, w: Writer) -> None:
        _text(w, self.error, ERROR_NAME_BYTES)
        _text(w, self.reason)

    @classmethod
    def read(cls, r: Reader) -> Refused:
        return cls(_read_text(r, ERROR_NAME_BYTES), _read_text(r))


Request = Join | Setup | Advert | Train | Step | Finish | Seal
Reply = Joined | SetupReply | Advertised | Trained | StepReply | Finished | Sealed | Refused
_TYPES: dict[Kind, type[Request] | type[Reply]] = {
    cls.KIND: cls
    for cls in (
        Join,
        Setup,
        Advert,
        Train,
        Step,
        Finish,
        Seal,
        Joined,
        SetupReply,
        Advertised,
        Trained,
        StepReply,
        Finished,
        Sealed,
        Refused,
    )
}
M = TypeVar("M", bound=Request | Reply)


def encode(message: Request | Reply) -> bytes:
    """The canonical encoding. Raises ConfigError for a field beyond its limit (a local bug)."""
    w = Writer().fixed(MAGIC, 2).u8(VERSION).u8(message.KIND)
    message.write(w)
    return w.getvalue()


def decode(data: bytes) -> Request | Reply:
    """Exactly one message from ``data``.

    Raises:
        RemoteProtocolError: anything that is not one well-formed message of a known kind.
    """
    r = Reader(data)
    if r.fixed(2) != MAGIC or r.u8() != VERSION:
        raise RemoteProtocolError("not a securefed engine message (or another version)")
    try:
        cls = _TYPES[Kind(r.u8())]
    except ValueError:
        raise RemoteProtocolError("unknown message kind") from None
    try:
        message = cls.read(r)
    except ConfigError as exc:  # a nested value's own validation
        raise RemoteProtocolError(f"malformed {cls.__name__}: {exc}") from None
    r.finish()
    return message


def decode_as(data: bytes, expected: type[M]) -> M | Refused:
    """``decode`` that also checks the kind: ``expected`` or a :class:`Refused`.

    Raises:
        RemoteProtocolError: malformed, or a message of another kind.
    """
    message = decode(data)
    if not isinstance(message, expected | Refused):
        raise RemoteProtocolError(f"expected {expected.__name__}, got {type(message).__name__}")
    return message
