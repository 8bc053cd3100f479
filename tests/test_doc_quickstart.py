"""docs/quickstart.md prints what the commands print (issue 24): every console block on the page
is run here, command by command, and its quoted output is compared line by line with the real
output, so a changed count, sequence number, message or line fails this test.

What differs from the page, to keep it fast: `/tmp/` is the test's temporary directory; the runs
train the MLP instead of the CNN; and the demo of section 1 gets 45 records per institution, a
batch of 16 and the RDP accountant. The parties, rounds, mode, baselines and budget are the
page's, so every ledger, entry count, sequence number, hazard and message is too, and so is every
ε of section 6; in the demo's output, numbers with a decimal point (the ε values, which depend on
the sampling rate) and the party with the largest ε are not compared. Accuracies and timings
are never compared (they depend on the model and the machine); run ids are random.
docs/audit.md's session and report excerpt are checked by tests/audit/test_docs.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from securefed.audit.canonical import encode_canonical
from securefed.cli import main
from securefed.runtime import demo
from securefed.runtime.config import ModelName

DOC = Path(__file__).resolve().parents[1] / "docs" / "quickstart.md"
_PROMPT = "$ .venv/bin/securefed "
_DOC_TMP = "/tmp/"  # noqa: S108 -- the page's paths, replaced by the test's directory
_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _section(title: str) -> str:
    text = _doc()
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _console_blocks(text: str) -> list[str]:
    return re.findall(r"```console\n(.*?)```", text, re.DOTALL)


def _session(block: str) -> Iterator[tuple[str, list[str]]]:
    """(command after the prompt, quoted output lines) for each command of a console block."""
    command: str | None = None
    lines: list[str] = []
    for line in block.splitlines():
        if line.startswith(_PROMPT):
            if command is not None:
                yield command, lines
            command, lines = line.removeprefix(_PROMPT), []
        else:
            lines.append(line)
    assert command is not None, block
    yield command, lines


def _normalise(line: str, *, small_demo: bool = False) -> str:
    """Accuracies, timings and run ids masked; for the ``small_demo``, every decimal number (the
    ε values, which depend on the sampling rate) and the party with the largest ε too."""
    line = re.sub(r" +\d+\.\d%", " <acc>", line)
    line = re.sub(r" +\d+\.\ds$", " <s>", line)
    if small_demo:
        line = re.sub(r" *\d+\.\d+", " <x>", line)  # ε and what depends on q; counts stay integers
        line = re.sub(r"\blargest: [\w-]+", "largest: <party>", line).replace("<x> to <x>", "<x>")
    return re.sub(r"\brun [0-9a-f]{8}\b", "run <id>", line)


def _matches(quoted: str, real: str, *, small_demo: bool = False) -> bool:
    quoted = _normalise(quoted, small_demo=small_demo)
    real = _normalise(real, small_demo=small_demo)
    if "[... " not in quoted:
        return quoted == real
    pattern = re.sub(r"\\\[\\\.\\\.\\\.\\ .*?\\\]", ".*", re.escape(quoted))  # "[... shortened]"
    return re.fullmatch(pattern, real) is not None


def _assert_printed(
    quoted: list[str], out: str, err: str, command: str, *, small_demo: bool = False
) -> None:
    """The quoted lines are stdout and stderr interleaved, each in its own order, all of them."""
    outs, errs = out.splitlines(), err.splitlines()
    for line in quoted:
        if errs and _matches(line, errs[0], small_demo=small_demo):
            errs.pop(0)
        elif outs and _matches(line, outs[0], small_demo=small_demo):
            outs.pop(0)
        else:
            pytest.fail(
                f"{command}\n  quoted: {line}\n  next stdout: {outs[:1]}\n  next stderr: {errs[:1]}"
            )
    assert (outs, errs) == ([], []), f"{command}: printed but not quoted"


def _run(
    command: str,
    quoted: list[str],
    tmp: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    small_demo: bool = False,
) -> int:
    """Run one quoted command (with the page's /tmp/ in ``tmp``); check its output; its status."""
    argv = shlex.split(command.replace(_DOC_TMP, f"{tmp}/"), comments=True)
    status = main(argv)
    out, err = capsys.readouterr()
    expected = [line.replace(_DOC_TMP, f"{tmp}/") for line in quoted]
    _assert_printed(expected, out, err, command, small_demo=small_demo)
    return status


@pytest.fixture
def mlp_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """`securefed demo` small and fast: the page's parties, rounds, mode, baselines and budget."""
    config = demo.DEMO_CONFIG
    small = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, model=ModelName.MLP, samples_per_tenant=45),
        training=dataclasses.replace(config.training, batch_size=16),
        dp=dataclasses.replace(config.dp, accountant="rdp") if config.dp else None,
    )
    monkeypatch.setattr(demo, "DEMO_CONFIG", small)


def _tamper_recipe() -> tuple[int, str, str, float]:
    match = re.search(
        r"entry `seq` (\d+) of `([\w-]+)\.jsonl`, a `([\w.]+)`,\s+rewritten in canonical JSON with "
        r"`epsilon` set to ([\d.]+)",
        _doc(),
    )
    assert match is not None, "the tamper recipe of section 4"
    return int(match[1]), match[2], match[3], float(match[4])


def test_the_demo_and_its_verification_print_what_the_quickstart_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mlp_demo: None
) -> None:
    demo_block = next(b for b in _console_blocks(_doc()) if "securefed demo" in b)
    ((command, quoted),) = _session(demo_block)
    assert _run(command, quoted, tmp_path, capsys, small_demo=True) == 0
    run = tmp_path / "qs-demo"
    assert tomllib.loads((run / "config.toml").read_text())["data"]["model"] == "mlp"  # fast

    # Section 3: the hazards each institution and the server ledger.
    hazards = _section("3. The audit report")
    per_bank = re.search(r"each institution ledgers (\w+):", hazards)
    server = re.search(r"The server ledgers the first (\w+)\.", hazards)
    assert per_bank is not None
    assert server is not None
    texts = {
        ledger.stem: [
            json.loads(line)["payload"]["text"]
            for line in ledger.read_text().splitlines()
            if json.loads(line)["event"] == "hazard"
        ]
        for ledger in sorted((run / "ledgers").glob("*.jsonl"))
    }
    banks = [party for party in texts if party != "server"]
    assert {len(texts[b]) for b in banks} == {_NUMBERS[per_bank[1]]}
    first = texts[banks[0]][: _NUMBERS[server[1]]]
    assert [t.split(":")[0] for t in texts["server"]] == [t.split(":")[0] for t in first]

    # Section 4: verify the run and one ledger, then the tamper recipe, then a wrong path.
    seq, party, event, epsilon = _tamper_recipe()
    tampered = shutil.copytree(run, tmp_path / "qs-tampered") / "ledgers" / f"{party}.jsonl"
    lines = tampered.read_bytes().splitlines(keepends=True)
    entry = json.loads(lines[seq])
    assert (entry["seq"], entry["event"]) == (seq, event)
    entry["payload"]["epsilon"] = epsilon
    lines[seq] = encode_canonical(entry) + b"\n"
    tampered.write_bytes(b"".join(lines))
    statuses = []
    for block in _console_blocks(_section("4. Verify the ledgers yourself")):
        for command, quoted in _session(block):
            statuses.append(_run(command, quoted, tmp_path, capsys, small_demo=True))
    assert statuses == [0, 0, 1, 2]
    assert "Both exit 0." in _doc()


def test_the_smallest_demo_refusal_is_what_the_quickstart_quotes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mlp_demo: None
) -> None:
    match = re.search(r"`--tenants (\d+)` stops with\s+`([^`]+)`", _doc())
    assert match is not None
    out = tmp_path / "small"
    assert main(["demo", "--out", str(out), "--rounds", "1", "--tenants", match[1]]) == 2
    assert match[2] in capsys.readouterr().err


def test_your_own_configuration_prints_what_the_quickstart_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    section = _section("6. Your own configuration")
    (config,) = re.findall(
        r"```toml\n(.*?)```", section.split("**Learned segments", 1)[0], re.DOTALL
    )
    assert 'model = "cnn"' in config
    config = config.replace('model = "cnn"', 'model = "mlp"').replace(_DOC_TMP, f"{tmp_path}/")
    (tmp_path / "qs-run.toml").write_text(config, encoding="utf-8")
    typo = re.search(r'# "(\w+) = (\d+)", not "(\w+)"', section)
    assert typo is not None
    wrong = re.sub(rf"^{typo[3]} = .*$", f"{typo[1]} = {typo[2]}", config, flags=re.MULTILINE)
    (tmp_path / "qs-typo.toml").write_text(wrong, encoding="utf-8")
    statuses = []
    for block in _console_blocks(section):
        for command, quoted in _session(block):
            statuses.append(_run(command, quoted, tmp_path, capsys))
    # prepare, run, the two refusals, the spent budget (all three "exit status 2"), budget show
    assert statuses == [0, 0, 2, 2, 2, 0]
    assert not (tmp_path / "qs-run2").exists()
    assert not (tmp_path / "qs-typo").exists()
