"""Pickle-bearing data and model files: code execution through a file an institution loads.

ADVERSARY: whoever can place or replace a file that an institution's securefed loads -- a data
file in the seed layout (``client_train_labels_<i>.npy`` ...), a source pool (``.npz``) given to
``securefed data prepare``, a model file, or the accountant state in a client's state directory:
a supplier of "prepared" data, a compromised share, an insider. Goal: run code with the
institution's privileges (and from there read every record, key and budget it holds). The seed
sample (ModelArts FedAMP) loaded its tenant files with ``np.load(..., allow_pickle=True)``, and
``torch.load`` without ``weights_only=True`` unpickles by default in older torch: both run a
crafted pickle's ``REDUCE`` opcodes on load.

ASSUMPTIONS: the attacker controls the bytes of the file, not the securefed code or the Python
environment.

DEFENCE (expected and measured): every loader refuses with a typed error naming the file, and the
payload never runs (its marker file is never created):
* seed-layout ``.npy`` files and ``.npz`` sources are read with ``allow_pickle=False``
  (`securefed/data/layout.py`, `securefed/data/source.py`) -> :class:`DataFormatError`;
* model files are safetensors only (`securefed/models/io.py`); a ``torch.save`` checkpoint, or a
  raw pickle renamed ``.safetensors``, -> :class:`ConfigError`;
* the accountant state is JSON (`securefed/dp/state.py`); a pickle in its place ->
  :class:`ConfigError`, the budget is not reset;
* ``securefed data prepare`` on a pickle-bearing source exits non-zero with the message.
The control runs the same files through the loaders the seed used, in a child process, and shows
that there the payload does run -- so the files used here are live exploits, not inert bytes.
The repository-wide ban on unsafe loaders is
`tests/test_hygiene.py::test_no_unsafe_deserialisation`.
"""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from securefed.cli import main
from securefed.data import DataFormatError, TenantData, load_tenants, write_tenants
from securefed.data.source import load_source
from securefed.errors import ConfigError

torch = pytest.importorskip("torch")

from securefed.dp.state import STATE_FILE, load_state  # noqa: E402
from securefed.models.io import load_model  # noqa: E402
from securefed.models.nets import cnn  # noqa: E402


def payload(marker: Path) -> bytes:
    """A protocol-0 pickle whose unpickling calls ``open(marker, "w")``: it creates ``marker``.

    Written opcode by opcode so that this file needs no pickle module: GLOBAL builtins.open,
    MARK, two UNICODE arguments, TUPLE, REDUCE, STOP.
    """
    return b"cbuiltins\nopen\n(V" + os.fsencode(marker) + b"\nVw\ntR."


def object_npy(marker: Path) -> bytes:
    """A well-formed ``.npy`` file (format 1.0) with an object dtype whose body is the payload."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"
    pad = 64 - (10 + len(header) + 1) % 64
    header_bytes = (header + " " * pad + "\n").encode("latin1")
    return (
        b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header_bytes)) + header_bytes + payload(marker)
    )


def torch_checkpoint(marker: Path) -> bytes:
    """A ``torch.save``-format zip archive whose ``data.pkl`` is the payload."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("checkpoint/data.pkl", payload(marker))
        archive.writestr("checkpoint/byteorder", "little")
        archive.writestr("checkpoint/version", "3\n")
    return buffer.getvalue()


def run_child(code: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 -- our own interpreter and code; the path is a tmp file
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def good_tenants(directory: Path, count: int = 2) -> None:
    write_tenants(
        directory,
        [
            TenantData(
                index,
                np.linspace(0.0, 1.0, 4 * 28 * 28, dtype=np.float32).reshape(4, 28, 28),
                np.arange(4) % 3,
                np.linspace(1.0, 0.0, 2 * 28 * 28, dtype=np.float32).reshape(2, 28, 28),
                np.arange(2) % 3,
            )
            for index in range(count)
        ],
    )


# --- control: the files are live exploits under the seed's loaders ----------------------------


def test_control_the_seed_loader_runs_the_data_payload(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "client_train_labels_0.npy"
    path.write_bytes(object_npy(marker))
    child = run_child("import sys, numpy; numpy.load(sys.argv[1], allow_pickle=True)", path)
    assert marker.exists(), child.stderr


def test_control_an_unsafe_torch_load_runs_the_model_payload(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "model.pt"
    path.write_bytes(torch_checkpoint(marker))
    child = run_child("import sys, torch; torch.load(sys.argv[1], weights_only=False)", path)
    assert marker.exists(), child.stderr


def test_control_torch_weights_only_also_refuses(tmp_path: Path) -> None:
    """The rule our hygiene test enforces on any torch.load: weights_only=True stops the payload."""
    marker = tmp_path / "ran"
    path = tmp_path / "model.pt"
    path.write_bytes(torch_checkpoint(marker))
    child = run_child("import sys, torch; torch.load(sys.argv[1], weights_only=True)", path)
    assert child.returncode != 0
    assert not marker.exists()


# --- attack: the same files against securefed's loaders ---------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "client_train_samples_1.npy",
        "client_train_labels_1.npy",
        "client_test_samples_0.npy",
        "client_test_labels_0.npy",
    ],
)
def test_a_pickle_bearing_tenant_file_is_refused_and_named(tmp_path: Path, name: str) -> None:
    good_tenants(tmp_path)
    marker = tmp_path / "ran"
    (tmp_path / name).write_bytes(object_npy(marker))
    with pytest.raises(DataFormatError, match=re.escape(name) + ".*pickle"):
        load_tenants(tmp_path)
    assert not marker.exists()


def test_a_pickle_bearing_source_archive_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    source = tmp_path / "pool.npz"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("x.npy", object_npy(marker))
        archive.writestr("y.npy", object_npy(marker))
    with pytest.raises(DataFormatError, match=r"pool\.npz.*pickle"):
        load_source(source)
    assert not marker.exists()


def test_data_prepare_on_a_pickle_bearing_source_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    source = tmp_path / "pool.npz"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("x.npy", object_npy(marker))
        archive.writestr("y.npy", object_npy(marker))
    out = tmp_path / "prepared"
    argv = ["data", "prepare", "--source", str(source), "--tenants", "3", "--groups", "1"]
    assert main([*argv, "--out", str(out)]) != 0
    assert "pickle" in capsys.readouterr().err
    assert not marker.exists()
    assert not out.exists() or not any(out.glob("client_*.npy"))


@pytest.mark.parametrize("name", ["model.pt", "model.safetensors"])
def test_a_pickled_model_file_is_refused(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / name
    path.write_bytes(torch_checkpoint(marker))
    model = cnn(10)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ConfigError, match="not a readable safetensors model file"):
        load_model(model, path)
    assert not marker.exists()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_raw_pickle_named_safetensors_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "model.safetensors"
    path.write_bytes(payload(marker))
    with pytest.raises(ConfigError, match="not a readable safetensors model file"):
        load_model(cnn(10), path)
    assert not marker.exists()


def test_a_pickle_in_place_of_the_accountant_state_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    state = tmp_path / STATE_FILE
    state.write_bytes(payload(marker))
    with pytest.raises(ConfigError, match=re.escape(STATE_FILE) + " is not valid JSON"):
        load_state(tmp_path)
    assert not marker.exists()
    assert state.read_bytes() == payload(marker)  # left for the operator, not reset
