"""`securefed keys ...`: identity keys on disk and the pinned roster, from the command line.

Only one test pays for the default scrypt work factor (2**17, about 0.3 s per call): the others
use --unsafe-plaintext keys or write public identity files directly.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from securefed.cli import main
from securefed.crypto import available_suites, get_suite, load_signing_key
from securefed.crypto.cleartext import load_unencrypted_signing_key_unsafe
from securefed.crypto.suites import SuiteId
from securefed.secagg.roster import (
    PublicIdentity,
    Roster,
    load_public_identity,
    load_roster,
    save_public_identity,
)

PASSPHRASE = "correct horse battery staple"  # noqa: S105 -- a test passphrase

Capture = pytest.CaptureFixture[str]


def _identity_files(folder: Path, suite_name: str, names: list[str]) -> list[Path]:
    """Public identity files for ``names`` (keys generated in memory, no scrypt)."""
    suite = get_suite(suite_name)
    folder.mkdir(exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.pub.toml"
        save_public_identity(PublicIdentity(name, suite.generate_signing_key().verify_key()), path)
        paths.append(path)
    return paths


def _roster_args(server: Path, clients: list[Path], out: Path) -> list[str]:
    args = ["keys", "roster", "--server", str(server), "--out", str(out)]
    for client in clients:
        args += ["--client", str(client)]
    return args


# --- generate ----------------------------------------------------------------------------------


def test_generate_with_passphrase_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    monkeypatch.setenv("BANK_A_PASSPHRASE", PASSPHRASE)
    out = tmp_path / "keys"
    args = ["keys", "generate", "--id", "bank-a", "--out", str(out)]
    assert main([*args, "--passphrase-env", "BANK_A_PASSPHRASE"]) == 0
    stdout, stderr = capsys.readouterr()
    key_path, pub_path = out / "bank-a.key", out / "bank-a.pub.toml"
    assert sorted(p.name for p in out.iterdir()) == ["bank-a.key", "bank-a.pub.toml"]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    identity = load_public_identity(pub_path)
    assert identity.party_id == "bank-a"
    assert identity.suite is get_suite("default")
    key = load_signing_key(key_path.read_bytes(), PASSPHRASE.encode())
    assert key.verify_key() == identity.identity
    assert stdout.strip() == identity.identity.fingerprint().hex()
    assert PASSPHRASE not in stdout + stderr
    assert PASSPHRASE.encode() not in key_path.read_bytes()
    assert key.secret_bytes_for_storage().hex() not in stdout + stderr


def test_generate_unsafe_plaintext_warns_loudly(tmp_path: Path, capsys: Capture) -> None:
    args = ["keys", "generate", "--id", "bank-b", "--out", str(tmp_path), "--suite", "fips-p256"]
    assert main([*args, "--unsafe-plaintext"]) == 0
    _, stderr = capsys.readouterr()
    assert "WARNING" in stderr
    assert "WITHOUT encryption" in stderr
    key_path = tmp_path / "bank-b.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = load_unencrypted_signing_key_unsafe(key_path.read_bytes())
    assert key.suite is get_suite("fips-p256")
    assert key.verify_key() == load_public_identity(tmp_path / "bank-b.pub.toml").identity


def test_generate_refuses_to_overwrite(tmp_path: Path, capsys: Capture) -> None:
    args = ["keys", "generate", "--id", "bank-a", "--out", str(tmp_path), "--unsafe-plaintext"]
    assert main(args) == 0
    before = (tmp_path / "bank-a.key").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == ""
    assert "refusing to overwrite" in stderr
    assert (tmp_path / "bank-a.key").read_bytes() == before


@pytest.mark.parametrize(
    "case",
    [
        ("SF_PASSPHRASE", None, "SF_PASSPHRASE is not set"),
        ("SF_PASSPHRASE", "", "SF_PASSPHRASE is not set or empty"),
        ("SF_PASSPHRASE", "short", "too short"),
        ("my secret passphrase", None, "NAME of an environment variable"),
    ],
    ids=["unset", "empty", "short", "not-a-name"],
)
def test_generate_passphrase_errors_exit_2(
    case: tuple[str, str | None, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Capture,
) -> None:
    variable, value, expected = case
    monkeypatch.delenv("SF_PASSPHRASE", raising=False)
    if value is not None:
        monkeypatch.setenv(variable, value)
    args = ["keys", "generate", "--id", "bank-a", "--out", str(tmp_path / "k")]
    assert main([*args, "--passphrase-env", variable]) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == ""
    assert expected in stderr
    assert "my secret passphrase" not in stderr
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize(
    "protection",
    [[], ["--passphrase-env", "SF_PASSPHRASE", "--unsafe-plaintext"]],
    ids=["neither", "both"],
)
def test_generate_needs_exactly_one_protection_option(
    protection: list[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["keys", "generate", "--id", "bank-a", "--out", str(tmp_path), *protection])
    assert info.value.code == 2


def test_generate_rejects_a_bad_id(tmp_path: Path, capsys: Capture) -> None:
    args = ["keys", "generate", "--id", "../bank-a", "--out", str(tmp_path), "--unsafe-plaintext"]
    assert main(args) == 2
    assert "1 to 64 characters" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(SuiteId.SM in available_suites(), reason="an SM provider is installed")
def test_generate_with_the_unavailable_sm_suite_exits_2(tmp_path: Path, capsys: Capture) -> None:
    args = ["keys", "generate", "--id", "a", "--out", str(tmp_path), "--suite", "sm"]
    assert main([*args, "--unsafe-plaintext"]) == 2
    assert "no implementation installed" in capsys.readouterr().err


# --- roster and show-roster ----------------------------------------------------------------------


def test_roster_assembly_prints_the_digest(tmp_path: Path, capsys: Capture) -> None:
    server, *clients = _identity_files(tmp_path, "default", ["coordinator", "b", "a", "c"])
    out = tmp_path / "roster.toml"
    assert main(_roster_args(server, clients, out)) == 0
    stdout, _ = capsys.readouterr()
    roster = load_roster(out)
    assert stdout == roster.digest().hex() + "\n"
    assert [c.party_id for c in roster.clients] == ["b", "a", "c"]  # in the order given
    assert roster == Roster.assemble(
        load_public_identity(server), [load_public_identity(p) for p in clients]
    )


def test_roster_refuses_to_overwrite(tmp_path: Path, capsys: Capture) -> None:
    server, *clients = _identity_files(tmp_path, "default", ["coordinator", "a", "b"])
    out = tmp_path / "roster.toml"
    out.write_text("keep me\n")
    assert main(_roster_args(server, clients, out)) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert out.read_text() == "keep me\n"


def test_roster_errors_exit_2_and_list_problems(tmp_path: Path, capsys: Capture) -> None:
    server, a = _identity_files(tmp_path, "default", ["coordinator", "a"])
    (other,) = _identity_files(tmp_path / "p256", "fips-p256", ["c"])
    out = tmp_path / "roster.toml"
    assert main(_roster_args(server, [a, a, other], out)) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == ""
    assert "configuration error" in stderr
    assert "same party id" in stderr
    assert "same identity key" in stderr
    assert "belongs to suite 'fips-p256'" in stderr
    assert not out.exists()
    assert main(_roster_args(server, [a], out)) == 2
    assert "at least 2 clients" in capsys.readouterr().err
    assert main(_roster_args(server, [a, tmp_path / "missing.pub.toml"], out)) == 2
    assert "cannot read public identity file" in capsys.readouterr().err


def test_show_roster(tmp_path: Path, capsys: Capture) -> None:
    server, *clients = _identity_files(tmp_path, "fips-p256", ["coordinator", "bank-a", "bank-b"])
    out = tmp_path / "roster.toml"
    assert main(_roster_args(server, clients, out)) == 0
    capsys.readouterr()
    assert main(["keys", "show-roster", str(out)]) == 0
    stdout, _ = capsys.readouterr()
    roster = load_roster(out)
    assert "fips-p256" in stdout
    assert roster.digest().hex() in stdout
    keys = {roster.server.party_id: roster.server.identity}
    keys.update((c.party_id, c.identity) for c in roster.clients)
    for party_id, key in keys.items():
        assert party_id in stdout
        assert key.fingerprint().hex()[:16] in stdout
    assert "  1  bank-b" in stdout


def test_show_roster_errors_exit_2(tmp_path: Path, capsys: Capture) -> None:
    bad = tmp_path / "roster.toml"
    bad.write_text('format = "securefed/roster/v1"\nsuite = "default"\n')
    assert main(["keys", "show-roster", str(bad)]) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == ""
    assert "missing key(s) 'server', 'clients'" in stderr
    assert main(["keys", "show-roster", str(tmp_path / "missing.toml")]) == 2


def test_generate_roster_show_end_to_end(tmp_path: Path, capsys: Capture) -> None:
    for name in ("coordinator", "bank-a", "bank-b"):
        args = ["keys", "generate", "--id", name, "--out", str(tmp_path / name)]
        assert main([*args, "--unsafe-plaintext"]) == 0
    pub = {n: tmp_path / n / f"{n}.pub.toml" for n in ("coordinator", "bank-a", "bank-b")}
    out = tmp_path / "roster.toml"
    capsys.readouterr()
    assert main(_roster_args(pub["coordinator"], [pub["bank-a"], pub["bank-b"]], out)) == 0
    digest = capsys.readouterr().out.strip()
    assert main(["keys", "show-roster", str(out)]) == 0
    assert digest in capsys.readouterr().out


def test_keys_needs_a_subcommand() -> None:
    with pytest.raises(SystemExit) as info:
        main(["keys"])
    assert info.value.code == 2
