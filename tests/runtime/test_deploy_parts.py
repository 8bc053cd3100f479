"""The deployment's pieces that need no Flower: wire format, local socket, certificates, keys,
the Flower App file, and the refusals of configurations a deployment does not run."""

from __future__ import annotations

import dataclasses
import socket
import threading
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from securefed.crypto.cleartext import export_unencrypted_signing_key_unsafe
from securefed.crypto.keyfile import encrypt_signing_key
from securefed.errors import ConfigError, DecryptionError, RemoteProtocolError
from securefed.runtime.config import (
    PersonalizeConfig,
    RunConfig,
    PersonalizationMode,
    SegmentSource,
    SimilaritySource,
)
from securefed.runtime.flower.agent import SERVER_RUN_CONFIG, write_flower_app
from securefed.runtime.flower.certs import write_test_certificates
from securefed.runtime.flower.hello import new_challenge, sign_hello, verified_party
from securefed.runtime.flower.identity import load_identity_key
from securefed.runtime.flower.institution import deployment_partition
from securefed.runtime.flower.relay import ask, read_frame, socket_path, write_frame
from securefed.runtime.flower.wire import (
    DeployMessage,
    decode_deploy,
    pack_blobs,
    u64,
    unpack_blobs,
    unpack_floats,
)
from securefed.testing import make_federation

messages = st.builds(
    DeployMessage,
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12),
    st.dictionaries(
        st.text(alphabet="abcdefghij_", min_size=1, max_size=8), st.binary(max_size=64), max_size=6
    ),
)


@given(messages)
def test_deploy_messages_round_trip(message: DeployMessage) -> None:
    assert decode_deploy(message.to_bytes()) == message


@settings(max_examples=300)
@given(messages, st.data())
def test_a_corrupted_message_is_refused_with_one_error_type(
    message: DeployMessage, data: st.DataObject
) -> None:
    encoded = bytearray(message.to_bytes())
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(encoded) - 1))
        corrupted = bytes(encoded[:cut])
    else:
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] ^= data.draw(st.integers(1, 255))
        corrupted = bytes(encoded)
    try:
        decoded = decode_deploy(corrupted)
    except RemoteProtocolError:
        return
    assert decoded.to_bytes() == corrupted  # what decodes is itself canonical


def test_fields_are_checked_by_kind() -> None:
    message = decode_deploy(DeployMessage("train", {"round": b"\x00" * 7}).to_bytes())
    with pytest.raises(RemoteProtocolError, match="u64"):
        message.integer("round")
    with pytest.raises(RemoteProtocolError, match="without field 'session'"):
        message.get("session")
    with pytest.raises(RemoteProtocolError, match="NaN"):
        unpack_floats(b"\x00\x00\x00\x00\x00\x00\xf8\x7f")
    assert unpack_blobs(pack_blobs([b"a", b"", b"bc"])) == (b"a", b"", b"bc")


def test_the_local_socket_carries_one_framed_request(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path(tmp_path)))
    listener.listen(1)

    def echo() -> None:
        conn, _ = listener.accept()
        with conn:
            write_frame(conn, read_frame(conn)[::-1])

    thread = threading.Thread(target=echo)
    thread.start()
    assert ask(tmp_path, b"request" * 1000, timeout=10) == (b"request" * 1000)[::-1]
    thread.join()
    listener.close()
    with pytest.raises(FileNotFoundError):
        ask(tmp_path / "nobody", b"x", timeout=1)


def test_test_certificates_chain_to_their_ca_and_name_the_loopback(tmp_path: Path) -> None:
    files = write_test_certificates(tmp_path)
    ca = x509.load_pem_x509_certificate(files.ca_certificate.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_certificate.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert str(names.get_values_for_type(x509.IPAddress)[0]) == "127.0.0.1"
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert files.server_key.stat().st_mode & 0o077 == 0
    with pytest.raises(ConfigError):
        write_test_certificates(tmp_path)  # never overwrites


def test_identity_keys_need_a_passphrase_or_an_explicit_unsafe_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_federation(3).client_keys[0]
    encrypted, clear = tmp_path / "e.key", tmp_path / "c.key"
    encrypted.write_bytes(encrypt_signing_key(key, b"a long enough passphrase"))
    clear.write_bytes(export_unencrypted_signing_key_unsafe(key))
    monkeypatch.setenv("SF_TEST_PASS", "a long enough passphrase")
    loaded = load_identity_key(encrypted, passphrase_env="SF_TEST_PASS")  # noqa: S106 -- a variable name
    assert loaded.verify_key() == key.verify_key()
    assert load_identity_key(clear, passphrase_env=None, unsafe_plaintext=True).verify_key() == (
        key.verify_key()
    )
    monkeypatch.setenv("SF_TEST_PASS", "a wrong but long passphrase")
    with pytest.raises(DecryptionError):
        load_identity_key(encrypted, passphrase_env="SF_TEST_PASS")  # noqa: S106 -- a variable name
    with pytest.raises(ConfigError, match="give the passphrase"):
        load_identity_key(clear, passphrase_env=None)
    with pytest.raises(ConfigError, match="cannot read"):
        load_identity_key(tmp_path / "absent.key", passphrase_env="SF_TEST_PASS")  # noqa: S106 -- a variable name


def test_the_flower_app_names_securefeds_apps_and_every_setting(tmp_path: Path) -> None:
    document = tomllib.loads(write_flower_app(tmp_path).read_text())
    components = document["tool"]["flwr"]["app"]["components"]
    assert components == {
        "serverapp": "securefed.runtime.flower.server_app:app",
        "clientapp": "securefed.runtime.flower.client_app:app",
    }
    assert document["tool"]["flwr"]["app"]["config"] == SERVER_RUN_CONFIG
    with pytest.raises(ConfigError):
        write_flower_app(tmp_path)


def test_a_deployment_runs_secure_attention_or_declared_group_mode_only() -> None:
    roster = make_federation(4).roster
    base = RunConfig(mode=PersonalizationMode.GROUP, personalize=PersonalizeConfig(segments=(0, 1, 0, 1)))
    assert deployment_partition(base, roster) == (0, 1, 0, 1)
    for mode in (PersonalizationMode.FEDAMP, PersonalizationMode.HEURFEDAMP):  # attention: one group of everyone
        attention = dataclasses.replace(base, mode=mode, personalize=PersonalizeConfig())
        assert deployment_partition(attention, roster) == (0, 0, 0, 0)
    statistic = PersonalizeConfig(similarity=SimilaritySource.STATISTIC)
    refused = [
        dataclasses.replace(base, mode=PersonalizationMode.FEDAVG),
        dataclasses.replace(base, mode=PersonalizationMode.LOCAL),
        dataclasses.replace(base, personalize=PersonalizeConfig()),  # segments not listed
        dataclasses.replace(base, personalize=PersonalizeConfig(segments=SegmentSource.LEARNED)),
        dataclasses.replace(base, mode=PersonalizationMode.HEURFEDAMP, personalize=statistic),
        dataclasses.replace(base, secure=False),
        dataclasses.replace(base, mode=PersonalizationMode.FEDAMP, secure=False),
        dataclasses.replace(base, personalize=PersonalizeConfig(segments=(0, 0, 0))),
    ]
    for config in refused:
        with pytest.raises(ConfigError):
            deployment_partition(config, roster)


def _hello_reply(party: str = "bank-1") -> DeployMessage:
    return DeployMessage("hello", {"party": party.encode(), "head": b"x", "dim": u64(7)})


def test_a_signed_hello_names_its_party() -> None:
    fed = make_federation(4)
    challenge = new_challenge()
    signed = sign_hello(fed.client_keys[1], challenge, _hello_reply())
    assert verified_party(fed.roster, challenge, decode_deploy(signed.to_bytes())) == "bank-1"


def test_a_hello_that_does_not_verify_is_refused() -> None:
    fed = make_federation(4)
    challenge = new_challenge()
    genuine = sign_hello(fed.client_keys[1], challenge, _hello_reply())
    refused = {
        "unsigned": _hello_reply(),
        "another party's key": sign_hello(fed.client_keys[0], challenge, _hello_reply()),
        "the server's key": sign_hello(fed.server_key, challenge, _hello_reply()),
        "another challenge": sign_hello(fed.client_keys[1], new_challenge(), _hello_reply()),
        "a field changed": DeployMessage("hello", {**genuine.fields, "dim": u64(8)}),
        "a field added": DeployMessage("hello", {**genuine.fields, "setup": b"k"}),
        "relabelled": DeployMessage("hello", {**genuine.fields, "party": b"bank-2"}),
        "not in the roster": sign_hello(fed.client_keys[1], challenge, _hello_reply("bank-9")),
        "no party": DeployMessage("hello", {"signature": genuine.fields["signature"]}),
    }
    for case, reply in refused.items():
        try:
            verified_party(fed.roster, challenge, reply)
        except RemoteProtocolError:
            continue
        pytest.fail(f"accepted a hello with {case}")
    with pytest.raises(RemoteProtocolError, match="challenge"):
        sign_hello(fed.client_keys[1], b"short", _hello_reply())
