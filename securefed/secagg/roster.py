"""The pinned roster: who takes part in secure aggregation, and under which identity keys.

A :class:`Roster` names the cipher suite, the server (coordinator) and the N >= 2 clients
(institutions), each with a long-term identity :class:`~securefed.crypto.VerifyKey`. It is fixed
in the deployment configuration before any session starts, and its :meth:`Roster.digest` is bound
into every protocol transcript, so the server cannot add, drop or swap a client (no Sybil
clients, DESIGN §3): a signature under a key that is not in the roster is never accepted.

Constructors validate, so an invalid roster cannot exist. A party validates its own fields (id,
index, key type); the roster validates the whole and raises one
:class:`~securefed.errors.ConfigError` that lists *every* problem it found:

* clients have indices exactly ``0..N-1`` in order, and N >= 2;
* party ids are 1 to 64 characters of ``[A-Za-z0-9._-]`` and unique (server included);
* no identity key is used by two parties (server included);
* every key belongs to the roster's suite.

Roster file (``roster.toml``), written by :meth:`Roster.to_toml` and read by
:meth:`Roster.from_toml`::

    format = "securefed/roster/v1"
    suite = "default"                          # or "fips-p256" (or "sm" with a provider)

    [server]
    id = "coordinator"
    identity_key = "<hex of VerifyKey.to_bytes()>"

    [[clients]]
    index = 0
    id = "bank-a"
    identity_key = "<hex>"

    [[clients]]
    index = 1
    ...

Public identity file (``<id>.pub.toml``): what an institution sends to the coordinator to be put
into the roster (:class:`PublicIdentity`)::

    format = "securefed/public-identity/v1"
    suite = "default"
    id = "bank-a"
    identity_key = "<hex>"

Keys are lowercase hex on output; either case is accepted on input. Every key is required, unknown
keys are refused at every level, and the loaders report all problems of a file at once. An unknown
suite is a ``ConfigError``; the known but uninstalled ``sm`` suite raises
:class:`~securefed.errors.CipherSuiteUnavailable` (itself a ``ConfigError``) as it is.

Files are written atomically (a temporary file in the same directory, fsync, then a rename or a
hard link, then an fsync of the directory) and, by default, never over an existing file.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from securefed.crypto import CipherSuite, VerifyKey, get_suite
from securefed.errors import CipherSuiteUnavailable, ConfigError, InvalidKey
from securefed.files import write_atomic

__all__ = [
    "MIN_CLIENTS",
    "PARTY_ID_RULE",
    "PUBLIC_IDENTITY_FORMAT",
    "ROSTER_FORMAT",
    "ClientParty",
    "PublicIdentity",
    "Roster",
    "ServerParty",
    "is_party_id",
    "load_public_identity",
    "load_roster",
    "save_identity_files",
    "save_public_identity",
    "save_roster",
]

ROSTER_FORMAT = "securefed/roster/v1"
PUBLIC_IDENTITY_FORMAT = "securefed/public-identity/v1"
MIN_CLIENTS = 2
DIGEST_LABEL = b"securefed/v1/roster"
_PARTY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
PARTY_ID_RULE = "1 to 64 characters of A-Z a-z 0-9 . _ -"
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_ROSTER_KEYS = ("format", "suite", "server", "clients")
_SERVER_KEYS = ("id", "identity_key")
_CLIENT_KEYS = ("index", "id", "identity_key")
_IDENTITY_KEYS = ("format", "suite", "id", "identity_key")
_PUBLIC_FILE_MODE = 0o644
_PRIVATE_FILE_MODE = 0o600

StrPath = str | os.PathLike[str]


# --- parties -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientParty:
    """A client (institution) of the roster: its id, roster index and identity key.

    Raises:
        ConfigError: a malformed id, a negative or non-integer index, or a non-key identity.
    """

    party_id: str
    index: int
    identity: VerifyKey

    def __post_init__(self) -> None:
        problems = _id_problems(self.party_id, "client id") + _key_type_problems(self.identity)
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            problems.append(f"client index must be a non-negative integer, not {self.index!r}")
        _raise_if_any(problems, "invalid client")


@dataclass(frozen=True, slots=True)
class ServerParty:
    """The server (coordinator) of the roster: its id and the identity key it signs with.

    Raises:
        ConfigError: a malformed id or a non-key identity.
    """

    party_id: str
    identity: VerifyKey

    def __post_init__(self) -> None:
        problems = _id_problems(self.party_id, "server id") + _key_type_problems(self.identity)
        _raise_if_any(problems, "invalid server")


@dataclass(frozen=True, slots=True)
class PublicIdentity:
    """One party's public identity as it travels to the coordinator (``<id>.pub.toml``).

    Raises:
        ConfigError: a malformed id or a non-key identity.
    """

    party_id: str
    identity: VerifyKey

    def __post_init__(self) -> None:
        problems = _id_problems(self.party_id, "id") + _key_type_problems(self.identity)
        _raise_if_any(problems, "invalid public identity")

    @property
    def suite(self) -> CipherSuite:
        """The cipher suite of the identity key."""
        return self.identity.suite

    def to_toml(self) -> str:
        """The public identity file (format ``securefed/public-identity/v1``)."""
        return "".join(
            [
                f'format = "{PUBLIC_IDENTITY_FORMAT}"\n',
                f'suite = "{self.suite.suite_id.value}"\n',
                f'id = "{self.party_id}"\n',
                f'identity_key = "{self.identity.to_bytes().hex()}"\n',
            ]
        )

    @classmethod
    def from_toml(cls, text: str) -> PublicIdentity:
        """Parse and validate a public identity file.

        Raises:
            ConfigError: listing every problem of the file.
            CipherSuiteUnavailable: the file names a suite that is not installed.
        """
        problems: list[str] = []
        top = _table(_parse_toml(text, "public identity"), "top level", _IDENTITY_KEYS, problems)
        _check_format(top, PUBLIC_IDENTITY_FORMAT, problems)
        suite = _suite_field(top, problems)
        party_id = _id_field(top, "id", problems)
        identity = _key_field(top, f"id {party_id!r}" if party_id else "top level", suite, problems)
        _raise_if_any(problems, "invalid public identity file")
        if party_id is None or identity is None:  # pragma: no cover -- reported above
            raise ConfigError("invalid public identity file")
        return cls(party_id, identity)


# --- the roster ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Roster:
    """The pinned set of parties of a deployment. Immutable; validated on construction.

    Raises:
        ConfigError: listing every problem (see the module docstring for the rules).
    """

    suite: CipherSuite
    server: ServerParty
    clients: tuple[ClientParty, ...]
    # Computed once (every message check binds it): see digest().
    _digest: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not isinstance(self.suite, CipherSuite):
            problems.append("suite must be a CipherSuite (use securefed.crypto.get_suite)")
        if not isinstance(self.server, ServerParty):
            problems.append("server must be a ServerParty")
        if not isinstance(self.clients, tuple) or not all(
            isinstance(c, ClientParty) for c in self.clients
        ):
            problems.append("clients must be a tuple of ClientParty")
        _raise_if_any(problems, "invalid roster")
        entries = [_Entry.of(self.server), *(_Entry.of(c) for c in self.clients)]
        indices = [c.index for c in self.clients]
        _raise_if_any(_composition_problems(self.suite, entries, indices), "invalid roster")
        object.__setattr__(self, "_digest", self._compute_digest())

    @classmethod
    def assemble(cls, server: PublicIdentity, clients: Sequence[PublicIdentity]) -> Roster:
        """A roster of ``server`` and ``clients``, indexed in the order given.

        The suite is that of the server's key; a client key of another suite is an error.

        Raises:
            ConfigError: listing every problem of the resulting roster.
        """
        return cls(
            suite=server.suite,
            server=ServerParty(server.party_id, server.identity),
            clients=tuple(
                ClientParty(ident.party_id, index, ident.identity)
                for index, ident in enumerate(clients)
            ),
        )

    @property
    def size(self) -> int:
        """N, the number of clients."""
        return len(self.clients)

    def is_member(self, index: int) -> bool:
        """Whether ``index`` is the roster index of a client (0 <= index < N)."""
        return isinstance(index, int) and not isinstance(index, bool) and 0 <= index < self.size

    def client(self, index: int) -> ClientParty:
        """The client with roster index ``index``.

        Raises:
            ConfigError: no client has that index.
        """
        if not self.is_member(index):
            raise ConfigError(f"no client with roster index {index!r} (the roster has {self.size})")
        return self.clients[index]

    def index_of(self, party_id: str) -> int:
        """The roster index of the client called ``party_id``.

        Raises:
            ConfigError: no client has that id (the server's id included: it has no index).
        """
        for party in self.clients:
            if party.party_id == party_id:
                return party.index
        if party_id == self.server.party_id:
            raise ConfigError(f"{party_id!r} is the server, not a client; it has no roster index")
        raise ConfigError(f"{party_id!r} is not a client in the roster")

    def sub_roster(self, members: Sequence[int]) -> Roster:
        """The roster of one group: ``members`` (roster indices, in order) re-indexed 0..m-1,
        with their ids and identity keys, and the same server.

        Raises:
            ConfigError: a member that is not in this roster, or a repeated member.
        """
        if len(set(members)) != len(members):
            raise ConfigError("a group lists a member twice")
        clients = tuple(
            ClientParty(self.client(g).party_id, j, self.client(g).identity)
            for j, g in enumerate(members)
        )
        return Roster(suite=self.suite, server=self.server, clients=clients)

    def digest(self) -> bytes:
        """SHA-256 of the canonical encoding (32 bytes); protocol transcripts bind this value.

        Encoding, with ``lp(x) = len(x) as 4-byte big-endian || x`` and ``u32`` big-endian::

            lp("securefed/v1/roster") || lp(suite name)
            || lp(server id) || lp(server key bytes) || u32(N)
            || for each client in index order: u32(index) || lp(id) || lp(key bytes)

        Ids are ASCII; key bytes are ``VerifyKey.to_bytes()``.
        """
        return self._digest

    def _compute_digest(self) -> bytes:
        parts = [
            _lp(DIGEST_LABEL),
            _lp(self.suite.suite_id.value.encode("ascii")),
            _lp(self.server.party_id.encode("ascii")),
            _lp(self.server.identity.to_bytes()),
            _u32(self.size),
        ]
        for party in self.clients:
            parts += [
                _u32(party.index),
                _lp(party.party_id.encode("ascii")),
                _lp(party.identity.to_bytes()),
            ]
        return hashlib.sha256(b"".join(parts)).digest()

    def to_toml(self) -> str:
        """The roster file (format ``securefed/roster/v1``, see the module docstring)."""
        lines = [
            f'format = "{ROSTER_FORMAT}"',
            f'suite = "{self.suite.suite_id.value}"',
            "",
            "[server]",
            f'id = "{self.server.party_id}"',
            f'identity_key = "{self.server.identity.to_bytes().hex()}"',
        ]
        for party in self.clients:
            lines += [
                "",
                "[[clients]]",
                f"index = {party.index}",
                f'id = "{party.party_id}"',
                f'identity_key = "{party.identity.to_bytes().hex()}"',
            ]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str) -> Roster:
        """Parse and validate a roster file.

        Raises:
            ConfigError: listing every problem of the file (syntax, format string, unknown or
                missing keys, wrong types, bad hex, malformed keys, duplicates, indices).
            CipherSuiteUnavailable: the file names a suite that is not installed.
        """
        problems: list[str] = []
        top = _table(_parse_toml(text, "roster"), "top level", _ROSTER_KEYS, problems)
        _check_format(top, ROSTER_FORMAT, problems)
        suite = _suite_field(top, problems)
        server = _parse_server(top, suite, problems)
        clients = _parse_clients(top, suite, problems)
        if clients is not None:
            parties = [*([] if server is None else [server]), *clients]
            problems += _composition_problems(suite, parties, [c.index for c in clients])
        _raise_if_any(problems, "invalid roster file")
        if suite is None or server is None or clients is None:  # pragma: no cover -- reported
            raise ConfigError("invalid roster file")
        return cls(suite, server.server_party(), tuple(c.client_party() for c in clients))


# --- files ---------------------------------------------------------------------------------


def load_roster(path: StrPath) -> Roster:
    """Read and validate a roster file.

    Raises:
        ConfigError: the file cannot be read, or is invalid (every problem listed).
        CipherSuiteUnavailable: the file names a suite that is not installed.
    """
    return Roster.from_toml(_read_text(Path(path), "roster"))


def save_roster(roster: Roster, path: StrPath, *, overwrite: bool = False) -> None:
    """Write ``roster`` atomically to ``path`` (mode 0o644).

    Raises:
        ConfigError: ``path`` exists and ``overwrite`` is false, or it cannot be written.
    """
    write_atomic(
        Path(path), roster.to_toml().encode("ascii"), mode=_PUBLIC_FILE_MODE, overwrite=overwrite
    )


def load_public_identity(path: StrPath) -> PublicIdentity:
    """Read and validate a public identity file (``<id>.pub.toml``).

    Raises:
        ConfigError: the file cannot be read, or is invalid (every problem listed).
        CipherSuiteUnavailable: the file names a suite that is not installed.
    """
    return PublicIdentity.from_toml(_read_text(Path(path), "public identity"))


def save_public_identity(
    identity: PublicIdentity, path: StrPath, *, overwrite: bool = False
) -> None:
    """Write ``identity`` atomically to ``path`` (mode 0o644).

    Raises:
        ConfigError: ``path`` exists and ``overwrite`` is false, or it cannot be written.
    """
    write_atomic(
        Path(path), identity.to_toml().encode("ascii"), mode=_PUBLIC_FILE_MODE, overwrite=overwrite
    )


def save_identity_files(
    directory: StrPath, identity: PublicIdentity, private_key_file: bytes
) -> tuple[Path, Path]:
    """Write one party's key pair: ``<id>.key`` (mode 0o600) and ``<id>.pub.toml`` (0o644).

    ``private_key_file`` is the content produced by
    :func:`securefed.crypto.encrypt_signing_key` (or, for throwaway fixtures only, by
    :func:`securefed.crypto.cleartext.export_unencrypted_signing_key_unsafe`); it is written as
    given. ``directory`` is created (mode 0o700) if it does not exist. Nothing is overwritten.

    Returns:
        The paths of the private key file and of the public identity file.

    Raises:
        ConfigError: either file exists already, or a file cannot be written.
    """
    folder = Path(directory)
    key_path = folder / f"{identity.party_id}.key"
    pub_path = folder / f"{identity.party_id}.pub.toml"
    existing = [str(p) for p in (key_path, pub_path) if p.exists()]
    if existing:
        raise ConfigError(f"refusing to overwrite existing file(s): {', '.join(existing)}")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create directory {folder}: {exc.strerror}") from None
    write_atomic(key_path, private_key_file, mode=_PRIVATE_FILE_MODE, overwrite=False)
    save_public_identity(identity, pub_path)
    return key_path, pub_path


# --- validation helpers --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    """One party as the composition checks see it; fields a loader could not parse are None."""

    where: str
    party_id: str | None
    identity: VerifyKey | None
    index: int | None = None

    @classmethod
    def of(cls, party: ClientParty | ServerParty) -> _Entry:
        if isinstance(party, ServerParty):
            return cls(f"server {party.party_id!r}", party.party_id, party.identity)
        where = f"client {party.index} {party.party_id!r}"
        return cls(where, party.party_id, party.identity, party.index)

    def server_party(self) -> ServerParty:
        if self.party_id is None or self.identity is None:  # pragma: no cover -- checked
            raise ConfigError(f"{self.where} is incomplete")
        return ServerParty(self.party_id, self.identity)

    def client_party(self) -> ClientParty:
        if self.party_id is None or self.identity is None or self.index is None:  # pragma: no cover
            raise ConfigError(f"{self.where} is incomplete")
        return ClientParty(self.party_id, self.index, self.identity)


def _composition_problems(
    suite: CipherSuite | None,
    entries: Sequence[_Entry],
    indices: Sequence[int | None],
) -> list[str]:
    """Roster-wide rules over ``entries`` (server first) and the clients' ``indices`` (one per
    client, in order); fields a loader could not parse (None) are skipped."""
    problems: list[str] = []
    if len(indices) < MIN_CLIENTS:
        problems.append(f"a roster needs at least {MIN_CLIENTS} clients, it has {len(indices)}")
    for position, index in enumerate(indices):
        if index is not None and index != position:
            problems.append(
                f"client at position {position} has index {index}; indices must be "
                f"0..N-1 in order, so it must be {position}"
            )
    problems += _duplicates(
        ((e.party_id, e.where) for e in entries if e.party_id is not None), "party id"
    )
    problems += _duplicates(
        ((e.identity, e.where) for e in entries if e.identity is not None), "identity key"
    )
    if suite is not None:
        problems += [
            f"{e.where}: its identity key belongs to suite {e.identity.suite.suite_id.value!r}, "
            f"the roster's suite is {suite.suite_id.value!r}"
            for e in entries
            if e.identity is not None and e.identity.suite is not suite
        ]
    return problems


def _duplicates(items: Iterable[tuple[object, str]], what: str) -> list[str]:
    holders: dict[object, list[str]] = {}
    for value, where in items:
        holders.setdefault(value, []).append(where)
    return [
        f"the same {what} is used by {' and '.join(places)}"
        for places in holders.values()
        if len(places) > 1
    ]


def is_party_id(value: object) -> bool:
    """Whether ``value`` is a valid party id: 1 to 64 characters of ``[A-Za-z0-9._-]`` (the
    rule every roster, ledger actor and ``[data] parties`` entry follows)."""
    return isinstance(value, str) and _PARTY_ID.fullmatch(value) is not None


def _id_problems(value: object, what: str) -> list[str]:
    if is_party_id(value):
        return []
    return [f"{what} {value!r} must be {PARTY_ID_RULE}"]


def _key_type_problems(value: object) -> list[str]:
    if isinstance(value, VerifyKey):
        return []
    return [f"identity must be a VerifyKey, not {type(value).__name__}"]


def _raise_if_any(problems: Sequence[str], what: str) -> None:
    """Opacus-validator style: raise one ConfigError listing every problem found."""
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{what} ({count}):\n{listing}")


# --- TOML parsing helpers ------------------------------------------------------------------


def _parse_toml(text: str, what: str) -> object:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the {what} file is not valid TOML: {exc}") from None


def _table(
    value: object, where: str, keys: tuple[str, ...], problems: list[str]
) -> dict[str, object]:
    """``value`` as a table with exactly ``keys`` (problems noted); {} if it is not a table."""
    if not isinstance(value, dict):
        problems.append(f"{where} must be a table, not {_type_name(value)}")
        return {}
    unknown = sorted(set(value) - set(keys))
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")
    missing = [key for key in keys if key not in value]
    if missing:
        problems.append(f"{where}: missing key(s) {', '.join(map(repr, missing))}")
    return {str(key): item for key, item in value.items()}


def _check_format(top: dict[str, object], expected: str, problems: list[str]) -> None:
    if "format" in top and top["format"] != expected:
        problems.append(f"format must be {expected!r}, not {top['format']!r}")


def _suite_field(top: dict[str, object], problems: list[str]) -> CipherSuite | None:
    if "suite" not in top:
        return None
    name = top["suite"]
    if not isinstance(name, str):
        problems.append(f"suite must be a string, not {_type_name(name)}")
        return None
    try:
        return get_suite(name)
    except CipherSuiteUnavailable:
        raise
    except ConfigError as exc:
        problems.append(str(exc))
        return None


def _id_field(table: dict[str, object], where: str, problems: list[str]) -> str | None:
    if "id" not in table:
        return None
    value = table["id"]
    found = _id_problems(value, f"{where}: id")
    problems += found
    return value if isinstance(value, str) and not found else None


def _key_field(
    table: dict[str, object], where: str, suite: CipherSuite | None, problems: list[str]
) -> VerifyKey | None:
    if "identity_key" not in table:
        return None
    value = table["identity_key"]
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        problems.append(f"{where}: identity_key must be a string of hex digit pairs")
        return None
    if suite is None:
        return None
    try:
        return suite.verify_key(bytes.fromhex(value))
    except InvalidKey:
        problems.append(
            f"{where}: identity_key is not a valid {suite.suite_id.value!r} identity key"
        )
        return None


def _parse_server(
    top: dict[str, object], suite: CipherSuite | None, problems: list[str]
) -> _Entry | None:
    if "server" not in top:
        return None
    table = _table(top["server"], "[server]", _SERVER_KEYS, problems)
    party_id = _id_field(table, "[server]", problems)
    where = f"server {party_id!r}" if party_id else "[server]"
    return _Entry(where, party_id, _key_field(table, where, suite, problems))


def _parse_clients(
    top: dict[str, object], suite: CipherSuite | None, problems: list[str]
) -> list[_Entry] | None:
    if "clients" not in top:
        return None
    rows = top["clients"]
    if not isinstance(rows, list):
        problems.append(f"clients must be an array of tables ([[clients]]), not {_type_name(rows)}")
        return None
    entries: list[_Entry] = []
    for position, row in enumerate(rows):
        where = f"clients[{position}]"
        table = _table(row, where, _CLIENT_KEYS, problems)
        index = table.get("index")
        if "index" in table and (isinstance(index, bool) or not isinstance(index, int)):
            problems.append(f"{where}: index must be an integer, not {_type_name(index)}")
            index = None
        party_id = _id_field(table, where, problems)
        where = f"client {position} {party_id!r}" if party_id else where
        identity = _key_field(table, where, suite, problems)
        entries.append(_Entry(where, party_id, identity, index if isinstance(index, int) else None))
    return entries


def _type_name(value: object) -> str:
    names = {
        dict: "a table",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
    }
    return names.get(type(value), type(value).__name__)


# --- encoding and file helpers -------------------------------------------------------------


def _lp(data: bytes) -> bytes:
    return _u32(len(data)) + data


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} file {path} is not UTF-8 text") from None
