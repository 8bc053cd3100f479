"""The pinned roster and public identity files (DESIGN §3: no Sybil clients; §7: roster in TOML)."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securefed.crypto import CipherSuite, VerifyKey, available_suites, get_suite
from securefed.crypto.suites import SuiteId
from securefed.errors import CipherSuiteUnavailable, ConfigError
from securefed.secagg.roster import (
    PUBLIC_IDENTITY_FORMAT,
    ROSTER_FORMAT,
    ClientParty,
    PublicIdentity,
    Roster,
    ServerParty,
    load_public_identity,
    load_roster,
    save_identity_files,
    save_public_identity,
    save_roster,
)

DEFAULT = get_suite("default")
P256 = get_suite("fips-p256")
SUITES = [DEFAULT, P256]
IDS = ["default", "fips-p256"]

# Known answers: the roster of fixed_roster(suite), i.e. server key signing_key(01*32) and
# clients bank-a, bank-b, bank-c with signing_key(02*32), (03*32), (04*32). Any change of the
# encoding changes these values, and every transcript that binds the roster with them.
KNOWN_DIGESTS = {
    "default": "5491acaa033fb00fb3cab6b2ac0de05a95f4c219b064e7f4def6e1045709ea95",
    "fips-p256": "0ef9e7eb1d4071d3d738c2b3fa79016c841ac845e8a990476ba57153976e7a9a",
}


def fixed_key(suite: CipherSuite, byte: int) -> VerifyKey:
    return suite.signing_key(bytes([byte]) * 32).verify_key()


def fixed_roster(suite: CipherSuite, clients: int = 3) -> Roster:
    server = ServerParty("coordinator", fixed_key(suite, 1))
    parties = tuple(
        ClientParty(f"bank-{chr(ord('a') + i)}", i, fixed_key(suite, i + 2)) for i in range(clients)
    )
    return Roster(suite, server, parties)


def roster_problems(excinfo: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    """The problem lines of a roster ConfigError."""
    return [line[4:] for line in str(excinfo.value).splitlines() if line.startswith("  - ")]


# --- digest ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES, ids=IDS)
def test_digest_known_answer(suite: CipherSuite) -> None:
    assert fixed_roster(suite).digest().hex() == KNOWN_DIGESTS[suite.suite_id.value]


def test_digest_matches_documented_layout() -> None:
    roster = fixed_roster(DEFAULT)

    def lp(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    encoding = (
        lp(b"securefed/v1/roster")
        + lp(b"default")
        + lp(b"coordinator")
        + lp(fixed_key(DEFAULT, 1).to_bytes())
        + (3).to_bytes(4, "big")
    )
    for i, name in enumerate([b"bank-a", b"bank-b", b"bank-c"]):
        encoding += i.to_bytes(4, "big") + lp(name) + lp(fixed_key(DEFAULT, i + 2).to_bytes())
    assert roster.digest() == hashlib.sha256(encoding).digest()


def _variants(base: Roster) -> list[Roster]:
    """Rosters that differ from ``base`` in exactly one respect."""
    server, (a, b, c) = base.server, base.clients
    suite = base.suite
    return [
        Roster(suite, ServerParty("coordinator2", server.identity), base.clients),
        Roster(suite, ServerParty(server.party_id, fixed_key(suite, 9)), base.clients),
        Roster(suite, server, (ClientParty("bank-x", 0, a.identity), b, c)),
        Roster(suite, server, (a, ClientParty(b.party_id, 1, fixed_key(suite, 9)), c)),
        Roster(  # the same parties, a and b swapped in the index order
            suite,
            server,
            (ClientParty(b.party_id, 0, b.identity), ClientParty(a.party_id, 1, a.identity), c),
        ),
        Roster(suite, server, (a, b)),
        Roster(suite, server, (a, b, c, ClientParty("bank-d", 3, fixed_key(suite, 9)))),
        fixed_roster(P256 if suite is DEFAULT else DEFAULT),
    ]


def test_digest_changes_when_any_field_changes() -> None:
    base = fixed_roster(DEFAULT)
    digests = {base.digest(), *(variant.digest() for variant in _variants(base))}
    assert len(digests) == 1 + len(_variants(base))
    assert base.digest() == fixed_roster(DEFAULT).digest()  # and is deterministic


# --- construction and validation --------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES, ids=IDS)
def test_accessors(suite: CipherSuite) -> None:
    roster = fixed_roster(suite)
    assert roster.size == 3
    assert roster.client(1).party_id == "bank-b"
    assert roster.index_of("bank-c") == 2
    assert [roster.is_member(i) for i in (-1, 0, 2, 3)] == [False, True, True, False]
    assert not roster.is_member(True)  # a bool is not an index
    for bad in (3, -1, True):
        with pytest.raises(ConfigError, match="no client with roster index"):
            roster.client(bad)
    with pytest.raises(ConfigError, match="not a client"):
        roster.index_of("bank-z")
    with pytest.raises(ConfigError, match="is the server"):
        roster.index_of("coordinator")


def test_assemble_indexes_in_the_order_given() -> None:
    server = PublicIdentity("coordinator", fixed_key(DEFAULT, 1))
    clients = [PublicIdentity(f"bank-{c}", fixed_key(DEFAULT, i + 2)) for i, c in enumerate("abc")]
    assert Roster.assemble(server, clients) == fixed_roster(DEFAULT)
    swapped = Roster.assemble(server, [clients[1], clients[0], clients[2]])
    assert swapped.index_of("bank-b") == 0
    assert swapped.digest() != fixed_roster(DEFAULT).digest()


@pytest.mark.parametrize(
    "party_id", ["", "x" * 65, "bank a", "bank/a", "bänk", "bank-a\n", "a:b", "..\\x"]
)
def test_party_ids_are_restricted(party_id: str) -> None:
    key = fixed_key(DEFAULT, 1)
    with pytest.raises(ConfigError, match="1 to 64 characters"):
        ClientParty(party_id, 0, key)
    with pytest.raises(ConfigError, match="1 to 64 characters"):
        ServerParty(party_id, key)
    with pytest.raises(ConfigError, match="1 to 64 characters"):
        PublicIdentity(party_id, key)


def test_longest_and_all_allowed_characters_are_accepted() -> None:
    ClientParty("x" * 64, 0, fixed_key(DEFAULT, 1))
    ClientParty("Az09._-", 0, fixed_key(DEFAULT, 1))


@pytest.mark.parametrize("index", [-1, True, 1.0, "0"])
def test_client_index_must_be_a_non_negative_int(index: object) -> None:
    with pytest.raises(ConfigError, match="non-negative integer"):
        ClientParty("bank-a", index, fixed_key(DEFAULT, 1))  # type: ignore[arg-type]


def test_identity_must_be_a_verify_key() -> None:
    raw = fixed_key(DEFAULT, 1).to_bytes()
    with pytest.raises(ConfigError, match="VerifyKey"):
        ServerParty("coordinator", raw)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="VerifyKey"):
        ClientParty("bank-a", 0, DEFAULT.signing_key(bytes(32)))  # type: ignore[arg-type]


def _invalid(
    suite: CipherSuite, server: ServerParty, clients: tuple[ClientParty, ...]
) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        Roster(suite, server, clients)
    return roster_problems(excinfo)


SERVER = ServerParty("coordinator", fixed_key(DEFAULT, 1))
A = ClientParty("bank-a", 0, fixed_key(DEFAULT, 2))
B = ClientParty("bank-b", 1, fixed_key(DEFAULT, 3))


@pytest.mark.parametrize(
    ("clients", "expected"),
    [
        ((A,), "at least 2 clients"),
        ((), "at least 2 clients"),
        ((A, ClientParty("bank-b", 2, B.identity)), "has index 2"),
        ((ClientParty("bank-a", 1, A.identity), ClientParty("bank-b", 0, B.identity)), "index"),
        ((A, ClientParty("bank-a", 1, B.identity)), "same party id"),
        ((A, ClientParty("coordinator", 1, B.identity)), "same party id"),
        ((A, ClientParty("bank-b", 1, A.identity)), "same identity key"),
        ((A, ClientParty("bank-b", 1, SERVER.identity)), "same identity key"),
        ((A, ClientParty("bank-b", 1, fixed_key(P256, 3))), "belongs to suite 'fips-p256'"),
    ],
)
def test_each_roster_rule(clients: tuple[ClientParty, ...], expected: str) -> None:
    problems = _invalid(DEFAULT, SERVER, clients)
    assert any(expected in p for p in problems), problems


def test_a_server_key_of_the_other_suite_is_rejected() -> None:
    server = ServerParty("coordinator", fixed_key(P256, 1))
    assert _invalid(DEFAULT, server, (A, B)) == [
        "server 'coordinator': its identity key belongs to suite 'fips-p256', "
        "the roster's suite is 'default'"
    ]


def test_all_problems_are_listed_at_once() -> None:
    clients = (
        ClientParty("bank-a", 0, A.identity),
        ClientParty("bank-a", 2, A.identity),  # same id, same key, wrong index
        ClientParty("coordinator", 2, fixed_key(P256, 4)),  # server's id, other suite
    )
    with pytest.raises(ConfigError, match=r"invalid roster \(5 problems\)") as excinfo:
        Roster(DEFAULT, SERVER, clients)
    problems = roster_problems(excinfo)
    assert len(problems) == 5
    for fragment in ("has index 2", "same party id", "coordinator", "same identity key", "suite"):
        assert any(fragment in p for p in problems), (fragment, problems)


def test_wrong_field_types_are_rejected() -> None:
    with pytest.raises(ConfigError, match="tuple of ClientParty"):
        Roster(DEFAULT, SERVER, [A, B])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="CipherSuite"):
        Roster("default", SERVER, (A, B))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ServerParty"):
        Roster(DEFAULT, PublicIdentity("coordinator", SERVER.identity), (A, B))  # type: ignore[arg-type]


# --- roster TOML -------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES, ids=IDS)
def test_toml_round_trip(suite: CipherSuite) -> None:
    roster = fixed_roster(suite, clients=5)
    loaded = Roster.from_toml(roster.to_toml())
    assert loaded == roster
    assert loaded.digest() == roster.digest()
    assert loaded.to_toml() == roster.to_toml()


def test_toml_layout() -> None:
    roster = fixed_roster(DEFAULT, clients=2)
    key = [fixed_key(DEFAULT, i).to_bytes().hex() for i in (1, 2, 3)]
    assert roster.to_toml() == (
        f'format = "{ROSTER_FORMAT}"\nsuite = "default"\n\n'
        f'[server]\nid = "coordinator"\nidentity_key = "{key[0]}"\n\n'
        f'[[clients]]\nindex = 0\nid = "bank-a"\nidentity_key = "{key[1]}"\n\n'
        f'[[clients]]\nindex = 1\nid = "bank-b"\nidentity_key = "{key[2]}"\n'
    )


def test_uppercase_hex_is_accepted() -> None:
    text = fixed_roster(DEFAULT).to_toml()
    upper = "\n".join(
        line.upper().replace("IDENTITY_KEY", "identity_key") if "identity_key" in line else line
        for line in text.splitlines()
    )
    assert Roster.from_toml(upper) == fixed_roster(DEFAULT)


def _load_problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        Roster.from_toml(text)
    return roster_problems(excinfo) or [str(excinfo.value)]


GOOD = fixed_roster(DEFAULT).to_toml()
SERVER_HEX = fixed_key(DEFAULT, 1).to_bytes().hex()
BANK_B_HEX = fixed_key(DEFAULT, 3).to_bytes().hex()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("format = [", "not valid TOML"),
        (GOOD.replace(ROSTER_FORMAT, "securefed/roster/v2"), "format must be"),
        (GOOD.replace(f'format = "{ROSTER_FORMAT}"\n', ""), "missing key(s) 'format'"),
        (GOOD.replace(f'"{ROSTER_FORMAT}"', "1"), "format must be"),
        (GOOD.replace('suite = "default"', 'suite = "aes"'), "unknown cipher suite 'aes'"),
        (GOOD.replace('suite = "default"', "suite = 1"), "suite must be a string"),
        (GOOD.replace('suite = "default"\n', 'suite = "default"\nextra = 1\n'), "'extra'"),
        (GOOD.replace('id = "coordinator"\n', 'id = "coordinator"\nport = 1\n'), "'port'"),
        (GOOD.replace("index = 1\n", "index = 1\nweight = 1\n"), "'weight'"),
        (GOOD.replace("index = 1\n", 'index = "1"\n'), "index must be an integer"),
        (GOOD.replace("index = 1\n", "index = true\n"), "index must be an integer"),
        (GOOD.replace("index = 1\n", ""), "missing key(s) 'index'"),
        (GOOD.replace('id = "bank-b"', "id = 7"), "1 to 64 characters"),
        (GOOD.replace('id = "bank-b"', 'id = "bank b"'), "1 to 64 characters"),
        (GOOD.replace(BANK_B_HEX, BANK_B_HEX[:-1]), "hex digit pairs"),
        (GOOD.replace(BANK_B_HEX, "zz" + BANK_B_HEX[2:]), "hex digit pairs"),
        (GOOD.replace(BANK_B_HEX, BANK_B_HEX[:2] + " " + BANK_B_HEX[2:]), "hex digit pairs"),
        (GOOD.replace(f'"{BANK_B_HEX}"', "7"), "hex digit pairs"),
        (GOOD.replace(BANK_B_HEX, BANK_B_HEX[:-2]), "client 1 'bank-b': identity_key is not"),
        (GOOD.replace(SERVER_HEX, BANK_B_HEX), "same identity key"),
        (GOOD.replace('"bank-c"', '"bank-a"'), "same party id"),
        (GOOD.replace("index = 2", "index = 3"), "has index 3"),
        (GOOD.split("[[clients]]")[0], "missing key(s) 'clients'"),
        ("clients = 3\n" + GOOD.split("[[clients]]")[0], "array of tables"),
        ("clients = [3, 4]\n" + GOOD.split("[[clients]]")[0], "clients[0] must be a table"),
        ("[[clients]]\n".join(GOOD.split("[[clients]]")[:2]), "at least 2 clients"),
        (GOOD.replace("[server]", "[servers]"), "'servers'"),
    ],
)
def test_loader_rejects(text: str, expected: str) -> None:
    problems = _load_problems(text)
    assert any(expected in p for p in problems), problems


def test_loader_lists_every_problem_of_a_file() -> None:
    text = (
        GOOD.replace(ROSTER_FORMAT, "nope")
        .replace('id = "coordinator"\n', 'id = "coordinator"\nport = 1\n')
        .replace("index = 1\n", 'index = "1"\n')
        .replace(BANK_B_HEX, "zz")
        .replace('"bank-c"', '"bank-a"')
    )
    with pytest.raises(ConfigError, match=r"invalid roster file \(5 problems\)") as excinfo:
        Roster.from_toml(text)
    problems = roster_problems(excinfo)
    for fragment in ("format", "'port'", "index must be", "hex digit pairs", "same party id"):
        assert any(fragment in p for p in problems), (fragment, problems)


def test_loader_rejects_a_key_of_the_other_suite_naming_the_party() -> None:
    p256_hex = fixed_key(P256, 3).to_bytes().hex()
    problems = _load_problems(GOOD.replace(BANK_B_HEX, p256_hex))
    assert problems == ["client 1 'bank-b': identity_key is not a valid 'default' identity key"]
    text = fixed_roster(P256).to_toml().replace('suite = "fips-p256"', 'suite = "default"')
    assert len(_load_problems(text)) == 4  # all four keys, each named


def test_loader_rejects_a_point_off_the_curve() -> None:
    good = fixed_roster(P256).to_toml()
    bad_hex = "04" + "00" * 64
    problems = _load_problems(good.replace(fixed_key(P256, 3).to_bytes().hex(), bad_hex))
    assert problems == ["client 1 'bank-b': identity_key is not a valid 'fips-p256' identity key"]


@pytest.mark.skipif(SuiteId.SM in available_suites(), reason="an SM provider is installed")
def test_unavailable_sm_suite_propagates_as_is() -> None:
    with pytest.raises(CipherSuiteUnavailable, match="no implementation installed"):
        Roster.from_toml(GOOD.replace('suite = "default"', 'suite = "sm"'))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_edit_of_a_roster_file_parses_or_raises_config_error(data: st.DataObject) -> None:
    """Fuzz invariant (h11 style): a file either loads as a valid roster or raises ConfigError."""
    start = data.draw(st.integers(0, len(GOOD)))
    end = data.draw(st.integers(start, min(len(GOOD), start + 8)))
    insert = data.draw(st.text(alphabet='0123456789abcdef"=[]\n .-_x', max_size=8))
    text = GOOD[:start] + insert + GOOD[end:]
    try:
        roster = Roster.from_toml(text)
    except ConfigError:
        return
    assert Roster.from_toml(roster.to_toml()) == roster


# --- public identity files -------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES, ids=IDS)
def test_public_identity_round_trip(suite: CipherSuite) -> None:
    identity = PublicIdentity("bank-a", fixed_key(suite, 2))
    text = identity.to_toml()
    assert text == (
        f'format = "{PUBLIC_IDENTITY_FORMAT}"\nsuite = "{suite.suite_id.value}"\n'
        f'id = "bank-a"\nidentity_key = "{fixed_key(suite, 2).to_bytes().hex()}"\n'
    )
    loaded = PublicIdentity.from_toml(text)
    assert loaded == identity
    assert loaded.suite is suite


def test_public_identity_loader_lists_every_problem() -> None:
    good = PublicIdentity("bank-a", fixed_key(DEFAULT, 2)).to_toml()
    text = (
        good.replace(PUBLIC_IDENTITY_FORMAT, "securefed/roster/v1")
        .replace('id = "bank-a"', 'id = "bank a"\nemail = "x"')
        .replace(fixed_key(DEFAULT, 2).to_bytes().hex(), "00" * 31)
    )
    with pytest.raises(ConfigError, match=r"\(4 problems\)") as excinfo:
        PublicIdentity.from_toml(text)
    problems = roster_problems(excinfo)
    for fragment in ("'email'", "format must be", "1 to 64 characters", "not a valid 'default'"):
        assert any(fragment in p for p in problems), (fragment, problems)
    with pytest.raises(ConfigError, match="not valid TOML"):
        PublicIdentity.from_toml("id = ")
    with pytest.raises(ConfigError, match="missing key"):
        PublicIdentity.from_toml(good.replace('suite = "default"\n', ""))


# --- files -------------------------------------------------------------------------------------


def test_save_and_load_roster(tmp_path: Path) -> None:
    path = tmp_path / "roster.toml"
    roster = fixed_roster(P256)
    save_roster(roster, path)
    assert load_roster(path) == roster
    assert [p.name for p in tmp_path.iterdir()] == ["roster.toml"]  # no temporary file left
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_save_roster_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "roster.toml"
    save_roster(fixed_roster(DEFAULT), path)
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        save_roster(fixed_roster(P256), path)
    assert load_roster(path) == fixed_roster(DEFAULT)
    save_roster(fixed_roster(P256), path, overwrite=True)
    assert load_roster(path) == fixed_roster(P256)
    assert [p.name for p in tmp_path.iterdir()] == ["roster.toml"]


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read roster file"):
        load_roster(tmp_path / "missing.toml")
    (tmp_path / "latin1.toml").write_bytes(b"id = '\xe9'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_public_identity(tmp_path / "latin1.toml")
    with pytest.raises(ConfigError, match="cannot write"):
        save_roster(fixed_roster(DEFAULT), tmp_path / "no" / "such" / "dir" / "roster.toml")


def test_public_identity_files(tmp_path: Path) -> None:
    identity = PublicIdentity("bank-a", fixed_key(DEFAULT, 2))
    save_public_identity(identity, tmp_path / "a.pub.toml")
    assert load_public_identity(tmp_path / "a.pub.toml") == identity
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        save_public_identity(identity, tmp_path / "a.pub.toml")


def test_save_identity_files(tmp_path: Path) -> None:
    identity = PublicIdentity("bank-a", fixed_key(DEFAULT, 2))
    folder = tmp_path / "keys"
    key_path, pub_path = save_identity_files(folder, identity, b"PRIVATE KEY FILE")
    assert (key_path, pub_path) == (folder / "bank-a.key", folder / "bank-a.pub.toml")
    assert key_path.read_bytes() == b"PRIVATE KEY FILE"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0
    assert load_public_identity(pub_path) == identity
    assert sorted(p.name for p in folder.iterdir()) == ["bank-a.key", "bank-a.pub.toml"]
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        save_identity_files(folder, identity, b"OTHER")
    key_path.unlink()  # the public file alone also blocks a new pair
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        save_identity_files(folder, identity, b"OTHER")
    assert not key_path.exists()
