"""The ``securefed`` command line. Thin: parse arguments, call a library function, print.

Output convention: machine-readable results (``--json``) are one JSON object on one line of
stdout; progress and diagnostics go to stderr. Exit status 0 on success, 2 on a usage or
configuration error (a :class:`~securefed.errors.ConfigError`), 1 on any other securefed error;
``run`` and ``demo`` exit 3 for a degraded run and 4 for a failed one (``RUN_EXIT_CODES``).

Commands: ``demo`` (the showcase, README), ``run --config`` and ``run --resume``
(``docs/run-config.md``), ``budget show|reset`` (the spend kept next to the records,
``docs/dp.md``), ``experiments``, ``data prepare`` (``docs/data.md``), ``data import`` (a
bank's CSV or Parquet files against a schema, ``docs/tabular.md``), ``predict`` and ``export``
(an institution's personalized model scoring new records, or written as ONNX,
``docs/tabular.md``), ``audit
verify|report|canary|anchor`` (``docs/audit.md``, ``docs/canary.md``), ``bench``
(``docs/benchmarks.md``) and ``keys`` (identity keys and the pinned roster,
``docs/keys-and-roster.md``). Secrets (passphrases,
private keys) are never taken from the command line and never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from securefed import __version__
from securefed.audit import ReportSummary, render_report, verify_path, verify_run
from securefed.audit.canary_bound import evaluate_canaries, write_canary_result
from securefed.audit.verify import VerifyResult, VerifyStatus
from securefed.bench import run_prg_benchmark
from securefed.bench.dp import run_dp_benchmark
from securefed.bench.personalize import run_personalize_benchmark
from securefed.bench.scale_cli import add_scale_parser
from securefed.bench.secagg import Baseline, run_secagg_benchmark
from securefed.bench.tabular import run_import_benchmark
from securefed.crypto import SuiteId, VerifyKey, encrypt_signing_key, get_suite
from securefed.crypto.cleartext import export_unencrypted_signing_key_unsafe
from securefed.crypto.keyfile import passphrase_from_env
from securefed.data import PartitionConfig, prepare
from securefed.data.layout import discover_indices
from securefed.data.schema import load_schema
from securefed.data.tabular import import_tabular
from securefed.dp.canary import run_canary_audit
from securefed.dp.spend import describe, load_spend, reset_spend
from securefed.errors import ConfigError, SecureFedError
from securefed.personalize.rounds import minimum_group_size
from securefed.runtime.benchmark import run_round_benchmark
from securefed.runtime.config import PersonalizationMode, RunConfig, load_run_config
from securefed.runtime.demo import ProgressPrinter, comparison_table, demo_config
from securefed.runtime.engine.settings import round_params
from securefed.runtime.experiments import GRIDS, run_experiments
from securefed.runtime.export import ExportInputs, export_onnx
from securefed.runtime.federated import RunSummary, resume_federation, run_federation
from securefed.runtime.flower.deployment import add_agent_arguments
from securefed.runtime.plan import plan_run
from securefed.runtime.scoring import predict
from securefed.secagg.roster import (
    PublicIdentity,
    Roster,
    load_public_identity,
    load_roster,
    save_identity_files,
    save_roster,
)

__all__ = ["main"]

_DESCRIPTION = """\
securefed trains models across banks without pooling their records: each institution trains on
its own data with differential privacy (DP-SGD, Opacus), the server sees only securely
aggregated updates, models are personalized per institution (FedAMP or groups), and every
party keeps a signed, hash-chained audit ledger that an auditor can verify offline.

Start with `securefed demo` (10-15 minutes on two cores), then read the audit report it
writes. Each command below has its own --help with an example."""

_EPILOG = """\
examples:
  securefed demo                                  # DP + secure aggregation on bundled digits
  securefed run --config run.toml --dry-run       # check a configuration, print the plan
  securefed run --config run.toml                 # run it (runs/<name>/)
  securefed audit verify runs/demo                # check the ledgers, recompute every epsilon
  securefed audit report runs/demo                # HTML report next to the ledgers

exit status: 0 success, 1 error, 2 usage or configuration error; see each command's --help
(audit verify and run have their own codes). Documentation: docs/index.md"""

#: Per command (its path below ``securefed``): a description and one example for its --help.
_ABOUT: dict[str, tuple[str, str]] = {
    "bench": (
        "Measure performance against a baseline measured in the same run (docs/benchmarks.md).",
        "securefed bench prg --mib 64 --json",
    ),
    "bench prg": (
        "Time mask generation (AES-256-CTR keystream expansion) against the raw keystream "
        "limit of this machine.",
        "securefed bench prg --mib 256 --json",
    ),
    "bench secagg": (
        "Time one secure-aggregation round (N clients, vectors of length d, some dropping "
        "out), optionally against Flower's SecAgg+ measured in the same run.",
        "securefed bench secagg --clients 10 --dim 1000000 --dropouts 1 --json",
    ),
    "bench scale": (
        "How secure aggregation grows with the number of institutions.",
        "securefed bench scale --json",
    ),
    "bench personalize": (
        "Time one personalized round (attention weights or groups) of secure aggregation.",
        "securefed bench personalize --clients 10 --dim 1000000 --mode fedamp --json",
    ),
    "bench round": (
        "The cryptographic share of one secure, DP training round of the demo's model.",
        "securefed bench round --tenants 10 --samples-per-tenant 500 --mode group --json",
    ),
    "bench dp": (
        "A DP-SGD step of the demo CNN against a plain SGD step.",
        "securefed bench dp --json",
    ),
    "bench import": (
        "`securefed data import` of a generated CSV against pyarrow reading it alone.",
        "securefed bench import --rows 100000 --json",
    ),
    "bench deploy": (
        "A Flower deployment on this machine (TLS, loopback) against the in-process "
        "simulation of the same run (needs the flower extra).",
        "securefed bench deploy --clients 4 --rounds 3 --json",
    ),
    "keys": (
        "Identity keys of the parties and the pinned roster that names them "
        "(docs/keys-and-roster.md).",
        "securefed keys show-roster roster.toml",
    ),
    "keys generate": (
        "Make one party's identity key pair: the private key (encrypted under a passphrase) "
        "and the public identity to send to the coordinator. Prints the fingerprint to "
        "confirm out of band.",
        "securefed keys generate --id bank-0 --out keys --passphrase-env SECUREFED_PASSPHRASE",
    ),
    "keys roster": (
        "Assemble the roster from the server's and every client's public identity (the "
        "coordinator does this once) and print its digest for every institution to confirm.",
        "securefed keys roster --server keys/server.pub.toml --client keys/bank-0.pub.toml "
        "--client keys/bank-1.pub.toml --client keys/bank-2.pub.toml --out roster.toml",
    ),
    "keys show-roster": (
        "Validate a roster and print its digest and every party's key fingerprint.",
        "securefed keys show-roster runs/demo/roster.toml",
    ),
    "audit": (
        "Check a run's signed ledgers, recompute each party's epsilon, render the audit "
        "report, anchor a sealed run, or run an empirical privacy audit (docs/audit.md).",
        "securefed audit verify runs/demo",
    ),
    "audit verify": (
        "Check the signed, hash-chained ledgers of a run directory (or one ledger file) "
        "under the roster's keys, against each other and for completeness, and recompute "
        "each party's epsilon from its signed sigma, sampling rate and steps with Google's "
        "dp-accounting (PLD), independently of the epsilon the party recorded. A run "
        "directory's sub-runs (preprocessing/, preprocessing.interrupted-<k>/, evaluation/) "
        "are verified with it, under its roster, one line each; the exit status is the worst "
        "of all (an interrupted attempt's INCOMPLETE is expected and not counted).\n\n"
        "exit status:\n"
        "  0  INTACT               nothing wrong and nothing missing\n"
        "  1  TAMPERED             an entry was edited, reordered, deleted, cut or forged\n"
        "  2  (usage)              no such path, no roster, unreadable file, bad anchor\n"
        "  3  INCOMPLETE           a party's ledger, genesis, run.configured or final "
        "checkpoint is missing\n"
        "  4  EQUIVOCATED          a party recorded that the coordinator lied to it\n"
        "  5  ROSTER_MISMATCH      the roster is not the one the ledgers were written under\n"
        "  6  EPSILON_UNDERSTATED  a party recorded an epsilon more than 2% below the "
        "recomputed one\n"
        "  7  OVER_BUDGET          a party's epsilon is above its signed budget\n"
        "The first that applies, in the order 5, 1, 4, 6, 7, 3.",
        "securefed audit verify runs/demo --json",
    ),
    "audit anchor": (
        "Export the signed final heads of a sealed, INTACT run to a small file to keep "
        "outside the run directory; `verify --anchor FILE` then catches any truncation or "
        "re-sealing.",
        "securefed audit anchor runs/demo --out /elsewhere/demo.anchor",
    ),
    "audit report": (
        "Write the self-contained HTML audit report and its Markdown twin, by default next "
        "to the ledgers (RUN_DIR/report.html and RUN_DIR/report.md). Exits 0 once written, "
        "also for tampered ledgers: gate on `securefed audit verify`.",
        "securefed audit report runs/demo",
    ),
    "audit canary": (
        "One-run canary audit: an empirical LOWER bound on epsilon, to compare with the "
        "accountant's (docs/canary.md).",
        "securefed audit canary --preset dp-sgd --run-dir runs/demo",
    ),
    "demo": (
        "The showcase: twelve institutions on 5,000 bundled real digits, differential "
        "privacy and secure group-mode FedAMP, local and FedAvg baselines on the same "
        "records, verified ledgers and the audit report. Exit status as for `run`.",
        "securefed demo --out runs/demo",
    ),
    "run": (
        "A run from a TOML configuration (docs/run-config.md): every institution trains "
        "with DP, the server aggregates securely, the ledgers are verified and the audit "
        "report written. The run is built in OUT.partial and renamed to OUT at the end; a "
        "killed run continues with --resume. --dry-run checks the configuration and the data "
        "and prints the plan (sigma and projected epsilon per institution, the time) without "
        "writing anything.\n\n"
        "exit status: 0 completed, 1 ledgers not intact or another error, 2 configuration "
        "error, 3 degraded (some rounds produced no aggregate), 4 failed or interrupted.",
        "securefed run --config run.toml --dry-run",
    ),
    "budget": (
        "The privacy spend kept next to the records: every run on the same records continues "
        "it (docs/dp.md).",
        "securefed budget show ~/.local/share/securefed/prepared/<source>",
    ),
    "budget show": (
        "Each tenant's epsilon spent on its records, and the resets.",
        "securefed budget show data/ --tenant 0",
    ),
    "budget reset": (
        "Start a tenant's budget again: the spend is archived with the reason, and every "
        "later run ledgers the reset as a hazard that its audit report shows.",
        'securefed budget reset data/ --tenant 0 --reason "records replaced, ticket 1234"',
    ),
    "experiments": (
        "Every method on the same splits, with and without DP (hours on two cores); the "
        "table is written to OUT/results.md and finished cells are reused.",
        "securefed experiments --grid quick --out runs/experiments",
    ),
    "data": (
        "Prepare tenant data in the seed layout, or import an institution's CSV or Parquet "
        "files against a schema (docs/data.md, docs/tabular.md).",
        "securefed data prepare --tenants 12 --out data/",
    ),
    "data prepare": (
        "Partition a source (the bundled digits, a seed-layout directory or an .npz file) "
        "among tenants and write client_*_<i>.npy files and federation.json.",
        "securefed data prepare --tenants 12 --groups 3 --out data/",
    ),
    "data import": (
        "One institution's CSV or Parquet files, checked against the federation's schema and "
        "encoded into the seed layout (docs/tabular.md).",
        "securefed data import --schema schema.toml --input loans.csv --institution 0 --out data/",
    ),
    "predict": (
        "Score new records with an institution's personalized model of a finished run, under "
        "the schema its data was imported with (docs/tabular.md).",
        "securefed predict --run runs/pilot --institution bank-3 --schema schema.toml "
        "--input new.csv --output scores.csv",
    ),
    "export": (
        "Write an institution's personalized model as ONNX, with the encoding, for a serving "
        "system without Python (docs/tabular.md).",
        "securefed export --run runs/pilot --institution bank-3 --schema schema.toml "
        "--format onnx --output bank-3.onnx",
    ),
    "deploy": (
        "Run across processes and machines on Flower: each institution's agent, the Flower "
        "App, throwaway test certificates (docs/deploy.md).",
        "securefed deploy app --out app/",
    ),
    "deploy agent": (
        "An institution's agent, beside its SuperNode: it holds the data, the DP trainer, the "
        "identity key and the ledger, and answers the SuperNode on a Unix socket.",
        "securefed deploy agent --config run.toml --roster roster.toml --key keys/bank-0.key "
        "--passphrase-env SECUREFED_PASSPHRASE --party bank-0 --data /srv/data --tenant 0 "
        "--num-classes 10 --state /srv/state",
    ),
    "deploy app": (
        "Write the Flower App directory that `flwr run` submits to the SuperLink.",
        "securefed deploy app --out app/ && flwr run app/ <superlink>",
    ),
    "deploy test-certs": (
        "A throwaway TLS CA and a localhost certificate, for loopback trials only.",
        "securefed deploy test-certs --out certs/",
    ),
}


def _paragraphs(text: str, width: int = 88) -> str:
    """``text`` with each one-line paragraph wrapped to ``width``; lines of a block that
    already has line breaks (a table) are kept as they are."""
    return "\n\n".join(
        part if "\n" in part else textwrap.fill(part, width) for part in text.split("\n\n")
    )


def _describe_commands(parser: argparse.ArgumentParser, path: str = "") -> None:
    """Give every subcommand of ``parser`` its description and example (:data:`_ABOUT`),
    shown as written (RawDescriptionHelpFormatter)."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for name, sub in action.choices.items():
            command = f"{path} {name}".strip()
            about = _ABOUT.get(command)
            if about is not None:
                description, example = about
                sub.description = _paragraphs(description)
                lines = textwrap.wrap(example, 84, break_on_hyphens=False, break_long_words=False)
                sub.epilog = "example:\n  " + " \\\n      ".join(lines)
                sub.formatter_class = argparse.RawDescriptionHelpFormatter
            _describe_commands(sub, command)


_UNSAFE_WARNING = """\
WARNING: --unsafe-plaintext: the identity key of {party!r} is written WITHOUT encryption.
WARNING: anyone who can read the .key file can impersonate {party!r} in every session.
WARNING: use this only for throwaway test keys, never for a real institution."""


def _print_result(result: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=True))
        return
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


def _bench_prg(args: argparse.Namespace) -> int:
    print(f"bench prg: {args.mib} MiB x {args.repeats} repeats ...", file=sys.stderr)
    result = run_prg_benchmark(mib=args.mib, repeats=args.repeats).to_dict()
    _print_result(result, as_json=args.json)
    return 0


def _bench_personalize(args: argparse.Namespace) -> int:
    print(f"bench personalize: N={args.clients}, d={args.dim}, {args.mode} ...", file=sys.stderr)
    result = run_personalize_benchmark(
        clients=args.clients, dim=args.dim, mode=args.mode, sketch_dim=args.sketch_dim
    )
    _print_result(result, as_json=args.json)
    return 0


def _bench_dp(args: argparse.Namespace) -> int:
    print(
        f"bench dp: CNN, batch {args.batch_size}, {args.steps} timed steps per path ...",
        file=sys.stderr,
    )
    result = run_dp_benchmark(
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        include_hooks=not args.no_hooks,
    )
    _print_result(result, as_json=args.json)
    return 0


def _bench_deploy(args: argparse.Namespace) -> int:
    from securefed.runtime.flower.bench import run_deploy_benchmark  # noqa: PLC0415

    what = args.config or f"the default ({args.clients} institutions, {args.rounds} rounds)"
    print(f"bench deploy: {what}, on Flower (TLS, loopback) and simulated ...", file=sys.stderr)
    config = None if args.config is None else Path(args.config)
    result = run_deploy_benchmark(config, clients=args.clients, rounds=args.rounds)
    _print_result(result.to_dict(), as_json=args.json)
    return 0


def _bench_round(args: argparse.Namespace) -> int:
    print(
        f"bench round: N={args.tenants}, {args.samples_per_tenant} samples each, {args.mode} ...",
        file=sys.stderr,
    )
    result = run_round_benchmark(
        tenants=args.tenants,
        samples_per_tenant=args.samples_per_tenant,
        mode=args.mode,
        repeats=args.repeats,
    )
    _print_result(result.to_dict(), as_json=args.json)
    return 0


def _bench_import(args: argparse.Namespace) -> int:
    print(
        f"bench import: {args.rows} rows x 30 columns, import vs pyarrow alone ...",
        file=sys.stderr,
    )
    result = run_import_benchmark(rows=args.rows, repeats=args.repeats)
    _print_result(result.to_dict(), as_json=args.json)
    return 0


def _bench_secagg(args: argparse.Namespace) -> int:
    baseline = Baseline(args.baseline) if args.baseline else None
    print(
        f"bench secagg: N={args.clients}, d={args.dim}, dropouts={args.dropouts}, "
        f"baseline={args.baseline or 'none'} ...",
        file=sys.stderr,
    )
    result = run_secagg_benchmark(
        clients=args.clients,
        dim=args.dim,
        dropouts=args.dropouts,
        repeats=args.repeats,
        baseline=baseline,
        degree=args.degree,
    )
    _print_result(result, as_json=args.json)
    return 0


def _keys_generate(args: argparse.Namespace) -> int:
    suite = get_suite(args.suite)
    passphrase = None if args.unsafe_plaintext else passphrase_from_env(args.passphrase_env)
    key = suite.generate_signing_key()
    identity = PublicIdentity(args.id, key.verify_key())
    if passphrase is None:
        print(_UNSAFE_WARNING.format(party=args.id), file=sys.stderr)
        key_file = export_unencrypted_signing_key_unsafe(key)
    else:
        key_file = encrypt_signing_key(key, passphrase)
    key_path, pub_path = save_identity_files(args.out, identity, key_file)
    print(f"wrote {key_path} (private, mode 0600) and {pub_path} (public)", file=sys.stderr)
    print(
        f"send {pub_path} to the coordinator; confirm this fingerprint with them out of band:",
        file=sys.stderr,
    )
    print(identity.identity.fingerprint().hex())
    return 0


def _keys_roster(args: argparse.Namespace) -> int:
    server = load_public_identity(args.server)
    clients = [load_public_identity(path) for path in args.client]
    roster = Roster.assemble(server, clients)
    save_roster(roster, args.out)
    print(
        f"wrote {args.out}: suite {roster.suite.suite_id.value}, server "
        f"{roster.server.party_id!r}, {roster.size} clients; roster digest:",
        file=sys.stderr,
    )
    print(roster.digest().hex())
    return 0


def _keys_show_roster(args: argparse.Namespace) -> int:
    roster = load_roster(args.roster)
    print(f"roster   {args.roster}")
    print(f"suite    {roster.suite.suite_id.value}")
    print(f"digest   {roster.digest().hex()}")
    print(f"server   {roster.server.party_id}  fingerprint {_short(roster.server.identity)}")
    print(f"clients  {roster.size}")
    width = max(len(c.party_id) for c in roster.clients)
    for party in roster.clients:
        print(
            f"  {party.index:>3}  {party.party_id:<{width}}  fingerprint {_short(party.identity)}"
        )
    return 0


def _short(key: VerifyKey) -> str:
    """The first 16 hex digits (64 bits) of a key's fingerprint, for people to compare."""
    return key.fingerprint().hex()[:16]


def _add_keys_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="identity keys and the pinned roster")
    actions = keys.add_subparsers(dest="action", required=True)

    generate = actions.add_parser("generate", help="make one party's identity key pair")
    generate.add_argument("--id", required=True, help="party id: 1-64 of A-Z a-z 0-9 . _ -")
    generate.add_argument("--out", required=True, help="directory for <id>.key and <id>.pub.toml")
    generate.add_argument(
        "--suite",
        default="default",
        choices=[s.value for s in SuiteId],
        help="cipher suite (default: default)",
    )
    protection = generate.add_mutually_exclusive_group(required=True)
    protection.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="encrypt the key under the passphrase in environment variable VAR",
    )
    protection.add_argument(
        "--unsafe-plaintext",
        action="store_true",
        help="write the key UNENCRYPTED (throwaway test keys only)",
    )
    generate.set_defaults(handler=_keys_generate)

    roster = actions.add_parser("roster", help="assemble and pin the roster (coordinator)")
    roster.add_argument(
        "--server",
        required=True,
        metavar="SERVER.pub.toml",
        help="the server's public identity file",
    )
    roster.add_argument(
        "--client",
        required=True,
        action="append",
        metavar="CLIENT.pub.toml",
        help="a client's public identity file; repeat, in roster-index order",
    )
    roster.add_argument("--out", required=True, help="roster file to write (never overwritten)")
    roster.set_defaults(handler=_keys_roster)

    show = actions.add_parser("show-roster", help="validate a roster and summarise it")
    show.add_argument("roster", help="roster file (roster.toml)")
    show.set_defaults(handler=_keys_show_roster)


# --- audit: verify ledgers, render the report (docs/audit.md) --------------------------------


def _audit_verify(args: argparse.Namespace) -> int:
    """Exit 0 (INTACT) with a one-line summary, 1 (TAMPERED) naming the first bad entry and why,
    3 (INCOMPLETE) naming the first party whose ledger lacks its genesis entry, its
    ``run.configured`` entry or its final checkpoint, 4 (EQUIVOCATED), 5 (ROSTER_MISMATCH: the
    roster is not the ledgers'), 6 (EPSILON_UNDERSTATED) or 7 (OVER_BUDGET) naming the first
    party whose recorded epsilon is more than 2 % below the independently recomputed one, or
    above its budget; the ``problem:``, ``incomplete:``, ``epsilon:``, ``composed:`` and
    ``note:`` lines after it list further findings and what was not covered. ``--json``: the
    same as one JSON object on stdout (:meth:`VerifyResult.to_dict`), same exit status.
    A run directory's sub-runs are verified with it (one ``sub-run <dir>:`` line each, and
    ``subruns`` in the JSON); the exit status is the worst of the run's and theirs
    (:attr:`VerifyResult.overall`).
    With ``--anchor FILE`` (a run directory only), a ledger that does not end at the head the
    anchor records is also TAMPERED (exit 1), and a bad anchor file is a usage error (exit 2)."""
    from securefed.audit.anchor import load_anchor, verify_anchored  # noqa: PLC0415

    roster = None if args.roster is None else load_roster(args.roster)
    if args.anchor is None:
        result = verify_path(args.path, roster)
    else:
        anchor = load_anchor(args.anchor)
        if not Path(args.path).is_dir():
            raise ConfigError(
                f"--anchor checks a whole run directory; {args.path} is not a directory"
            )
        result = verify_anchored(args.path, anchor, roster, source=f"anchor {args.anchor}")
    print(json.dumps(result.to_dict(), sort_keys=True) if args.json else result.describe())
    return result.exit_code


def _audit_anchor(args: argparse.Namespace) -> int:
    """Write the anchor (the signed final heads) of a sealed run that verifies INTACT to a new
    file outside the run directory; print one line saying what to keep where (exit 0). A run
    that is not INTACT is refused: its ``verify`` output on stdout, exit 1 (tampered) or 3
    (incomplete); usage errors (an existing --out, one inside the run directory) exit 2."""
    from securefed.audit.anchor import AnchorRefused, make_anchor, write_anchor  # noqa: PLC0415

    run_dir, out = Path(args.run_dir), Path(args.out)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a run directory")
    if out.resolve().is_relative_to(run_dir.resolve()):
        raise ConfigError(
            f"{out} is inside the run directory: keep the anchor where whoever can change the "
            "ledgers cannot change it"
        )
    if out.exists():
        raise ConfigError(f"refusing to overwrite existing file {out}")
    roster = None if args.roster is None else load_roster(args.roster)
    try:
        anchor = make_anchor(run_dir, roster)
    except AnchorRefused as exc:
        print(exc.result.describe())
        print(
            f"securefed: refusing to anchor {run_dir}: its ledgers are {exc.result.status.value}; "
            "only a sealed run that verifies INTACT can be anchored",
            file=sys.stderr,
        )
        return exc.result.exit_code
    write_anchor(anchor, out)
    print(
        f"anchor: wrote {out} (the final heads of {len(anchor.heads)} parties of {run_dir}): "
        f"keep it outside the run directory, out of reach of whoever can change the ledgers; "
        f"check the run with: securefed audit verify {run_dir} --anchor {out}"
    )
    return 0


def _audit_report(args: argparse.Namespace) -> int:
    """Write the HTML report and its Markdown twin -- by default next to the ledgers,
    ``RUN_DIR/report.html`` and ``RUN_DIR/report.md`` -- and print both paths (exit 0 once
    written, also for tampered ledgers: the report shows it; ``audit verify`` is the check to
    gate on)."""
    run_dir = Path(args.run_dir)
    if args.output is None and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a run directory")
    html_path = Path(args.output) if args.output is not None else run_dir / REPORT_HTML
    md_path = Path(args.markdown) if args.markdown else html_path.with_suffix(".md")
    if md_path.resolve() == html_path.resolve():
        raise ConfigError(f"the Markdown twin would overwrite {html_path}: use -o FILE.html")
    roster = None if args.roster is None else load_roster(args.roster)
    try:
        summary = render_report(args.run_dir, out_html=html_path, out_md=md_path, roster=roster)
    except OSError as exc:  # e.g. a run directory that cannot be listed
        raise ConfigError(f"cannot read {exc.filename or args.run_dir}: {exc.strerror}") from None
    status = {True: "INTACT", False: "TAMPERED", None: "NOT VERIFIED"}[summary.verified]
    print(
        f"audit report: ledgers {status}; ε of {summary.clients_plotted} institution(s) over "
        f"{summary.rounds_plotted} round(s); {len(summary.sections)} sections",
        file=sys.stderr,
    )
    print(summary.html_path)
    print(summary.md_path)
    return 0


def _audit_canary(args: argparse.Namespace) -> int:
    """Run a one-run canary audit; print the lower bound next to the claimed epsilon; with
    ``--run-dir`` also write ``canary.json`` there (the audit report shows it)."""
    print(f"audit canary: preset {args.preset} ...", file=sys.stderr)
    result = evaluate_canaries(
        run_canary_audit(args.preset, canaries=args.canaries, seed=args.seed)
    )
    if args.run_dir:
        print(f"wrote {write_canary_result(result, args.run_dir)}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), sort_keys=True))
        return 0
    verdict = (
        "VIOLATION: the lower bound exceeds the claimed epsilon -- the accounting is wrong"
        if result.exceeds_claim
        else "consistent: the lower bound does not exceed the claimed epsilon"
    )
    print(
        f"empirical epsilon LOWER BOUND {result.epsilon_lower_bound:.3f} at "
        f"{result.confidence:.0%} confidence (claimed epsilon {result.claimed_epsilon:.3f}, "
        f"delta {result.delta:g}; {result.correct}/{result.guesses} guesses right, "
        f"{result.canaries} canaries)\n{verdict}\n"
        "A lower bound is not a proof of privacy: a run can pass and still leak more."
    )
    return 0


def _add_audit_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="verify audit ledgers and render the audit report")
    actions = audit.add_subparsers(dest="action", required=True)

    verify = actions.add_parser(
        "verify",
        help=(
            "check ledgers and recompute each party's epsilon: exit 0 intact, 1 tampered, "
            "2 usage/I-O error, 3 incomplete, 4 equivocated, 5 roster mismatch, 6 epsilon "
            "understated, 7 over budget"
        ),
    )
    verify.add_argument(
        "path",
        metavar="PATH",
        help="a run directory (all ledgers/*.jsonl, cross-checked) or one ledger file",
    )
    verify.add_argument(
        "--roster",
        metavar="FILE",
        help="roster of identity keys (default: roster.toml of the run directory)",
    )
    verify.add_argument(
        "--anchor",
        metavar="FILE",
        help=(
            "also check a run directory against its anchor (securefed audit anchor): a ledger "
            "cut before, or rewritten at, its anchored final head is tampered (exit 1)"
        ),
    )
    verify.add_argument(
        "--json",
        action="store_true",
        help="one JSON object on stdout (status, exit_code, problems, epsilon per party, ...)",
    )
    verify.set_defaults(handler=_audit_verify)

    anchor = actions.add_parser(
        "anchor",
        help=(
            "export the signed final heads of a sealed, intact run to a small file to keep "
            "elsewhere; verify --anchor FILE then catches any truncation (docs/audit.md)"
        ),
    )
    anchor.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (sealed, intact)")
    anchor.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="the anchor file to write (new, outside the run directory; mode 0644)",
    )
    anchor.add_argument(
        "--roster",
        metavar="FILE",
        help="roster of identity keys (default: roster.toml of the run directory)",
    )
    anchor.set_defaults(handler=_audit_anchor)

    report = actions.add_parser("report", help="self-contained HTML report plus a Markdown twin")
    report.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    report.add_argument(
        "-o",
        "--output",
        metavar="FILE.html",
        help="HTML report to write (default: RUN_DIR/report.html, next to the ledgers)",
    )
    report.add_argument(
        "--markdown",
        metavar="FILE.md",
        help="Markdown twin to write (default: the HTML path with the suffix .md)",
    )
    report.add_argument(
        "--roster",
        metavar="FILE",
        help="roster of identity keys (default: roster.toml of the run directory)",
    )
    report.set_defaults(handler=_audit_report)

    canary = actions.add_parser(
        "canary", help="one-run canary audit: an empirical LOWER bound on epsilon (docs/canary.md)"
    )
    canary.add_argument(
        "--preset",
        choices=["calibration", "dp-sgd", "broken-no-noise"],
        default="dp-sgd",
        help="what to audit (default dp-sgd; broken-no-noise simulates an accounting bug)",
    )
    canary.add_argument("--canaries", type=int, help="number of canaries m (preset default)")
    canary.add_argument("--seed", type=int, help="simulation seed (reproducible runs)")
    canary.add_argument("--run-dir", metavar="RUN_DIR", help="also write RUN_DIR/canary.json")
    canary.add_argument("--json", action="store_true", help="one JSON object on stdout")
    canary.set_defaults(handler=_audit_canary)


# --- runs: demo, run --config, data prepare (docs/quickstart.md, docs/run-config.md) ----------


#: Exit codes of ``run`` and ``demo`` for runs that end without every round aggregating
#: (docs/run-config.md, "Exit codes"); 0 completed, 1 ledgers not intact, 2 configuration.
RUN_EXIT_CODES = {"degraded": 3, "failed": 4, "interrupted": 4}
#: The audit report a run (and ``audit report`` by default) writes into the run directory.
REPORT_HTML = "report.html"
#: Verdicts of a run's own ledgers that do not fail ``run``: a degraded run still seals.
_RUN_VERDICTS_OK = (VerifyStatus.INTACT, VerifyStatus.INCOMPLETE)


def _finish_run(
    summary: RunSummary, *, report: bool, as_json: bool = False, warned: Sequence[str] = ()
) -> int:
    """Print the comparison table, verify the ledgers, render the audit report. With
    ``as_json`` the same goes to stderr and one JSON object (:func:`_run_json`) to stdout."""
    human = sys.stderr if as_json else sys.stdout
    print(comparison_table(summary.metrics), file=human)
    print(f"institutions: {', '.join(c['id'] for c in summary.metrics['clients'])}", file=human)
    pooled = summary.metrics.get("pooled_credit")
    if pooled is not None:
        print(_pooled_credit_line(pooled), file=human)
    run_dir = summary.directory
    verdict = verify_run(run_dir)
    print(f"ledgers: {verdict.summary()}", file=human)
    for sub in verdict.subruns:  # a sub-run that changes the verdict: rare in a fresh run
        if sub.counted_status is not VerifyStatus.INTACT:
            print(f"ledgers: {sub.summary()}", file=human)
    rendered = None
    if report:
        rendered = render_report(
            run_dir,
            out_html=run_dir / REPORT_HTML,
            out_md=(run_dir / REPORT_HTML).with_suffix(".md"),
        )
        print(f"audit report: {rendered.html_path} (Markdown twin: {rendered.md_path})", file=human)
    print(f"metrics: {run_dir / 'metrics.json'}; models: {run_dir / 'models'}", file=human)
    status = summary.metrics.get("status", "completed")
    code = 0
    if verdict.overall not in _RUN_VERDICTS_OK:
        code = 1
    elif status in RUN_EXIT_CODES:
        failed = [
            f"{h['round']} ({h['status']})"
            for h in summary.metrics["history"]
            if h.get("status", "completed") != "completed"
        ]
        print(
            f"warning: the run is {status}: round(s) {', '.join(failed) or 'none'} produced no "
            f"aggregate (exit {RUN_EXIT_CODES[status]})",
            file=human,
        )
        code = RUN_EXIT_CODES[status]
    if as_json:
        document = _run_json(summary, verdict, rendered, code, warned)
        print(json.dumps(document, sort_keys=True, allow_nan=False))
    return code


_POOLED_FIGURES = (("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"), ("ks", "KS"), ("brier", "Brier"))
_POOLED_JSON_KEYS = ("roc_auc", "pr_auc", "ks", "gini", "brier", "positives", "negatives")


def _pooled_credit_line(pooled: dict[str, Any]) -> str:
    """The summary's line of the pooled credit metrics (``metrics.json``'s ``pooled_credit``:
    from the securely added score histograms; docs/tabular.md). A metric the pooled test
    records cannot give (one class only) reads ``n/a``."""
    figures = ", ".join(
        f"{label} {'n/a' if pooled.get(key) is None else format(pooled[key], '.3f')}"
        for key, label in _POOLED_FIGURES
    )
    return f"pooled (secure histograms): {figures}"


def _run_json(
    summary: RunSummary,
    verdict: VerifyResult,
    rendered: ReportSummary | None,
    code: int,
    warned: Sequence[str],
) -> dict[str, Any]:
    """The machine-readable summary of a finished run (``run --json``, ``demo --json``)."""
    metrics, run_dir = summary.metrics, summary.directory
    baselines = {
        mode: {
            "mean_test_accuracy": result.get("mean_test_accuracy"),
            "max_epsilon": _largest_epsilon(result.get("clients", [])),
        }
        for mode, result in metrics.get("baselines", {}).items()
    }
    return {
        "status": metrics.get("status", "completed"),
        "exit_code": code,
        "run_dir": str(run_dir),
        "mode": metrics.get("mode"),
        "secure": metrics.get("secure"),
        "rounds": metrics.get("rounds"),
        "mean_test_accuracy": metrics.get("mean_test_accuracy"),
        "max_epsilon": _largest_epsilon(metrics.get("clients", [])),
        "institutions": [
            {key: client.get(key) for key in ("id", "test_accuracy", "epsilon", "delta")}
            for client in metrics.get("clients", [])
        ],
        # the pooled credit metrics without their histogram (that is in metrics.json); null
        # for a run without them (a target that is not binary)
        "pooled_credit": None
        if metrics.get("pooled_credit") is None
        else {key: metrics["pooled_credit"].get(key) for key in _POOLED_JSON_KEYS},
        "baselines": baselines,
        "ledgers": {
            "status": verdict.overall.value,
            "exit_code": verdict.exit_code,
            "summary": verdict.summary(),
        },
        "report": None
        if rendered is None
        else {"html": str(rendered.html_path), "markdown": str(rendered.md_path)},
        "metrics": str(run_dir / "metrics.json"),
        "models": str(run_dir / "models"),
        "seconds": metrics.get("seconds"),
        "warnings": list(warned),
    }


def _largest_epsilon(clients: Sequence[dict[str, Any]]) -> float | None:
    values = [c["epsilon"] for c in clients if c.get("epsilon") is not None]
    return max(values) if values else None


def _notice(text: str) -> None:
    print(f"securefed: {text}", file=sys.stderr)


@contextlib.contextmanager
def _library_warnings() -> Iterator[list[str]]:
    """Catch the warnings raised while a run goes (numpy, scipy, torch, Opacus, ...): each
    distinct one is reported ONCE afterwards, on stderr, saying where it came from, instead of
    a Python warning printed mid-progress (possibly many times). The list it yields is
    filled on exit, for ``--json``."""
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield found
        finally:
            seen: set[tuple[str, str]] = set()
            for warning in caught:
                message = " ".join(str(warning.message).split())[:300]
                key = (warning.category.__name__, message)
                if key in seen:
                    continue
                seen.add(key)
                found.append(
                    f"{_origin(warning.filename)} warned ({warning.category.__name__}): {message}"
                )
    for text in found:
        print(
            f"securefed: note: a library warning during the run, reported once (it did not "
            f"stop the run; the ledgers and the report are as written): {text}",
            file=sys.stderr,
        )


def _origin(filename: str) -> str:
    """The package a warning came from: the directory under site-packages, else the file."""
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return parts[parts.index(marker) + 1].removesuffix(".py")
    if "securefed" in parts:
        return "securefed"
    return Path(filename).name


def _run_config_and_go(
    config: RunConfig,
    out: str | None,
    *,
    copy_data: bool = False,
    dry_run: bool = False,
    as_json: bool = False,
    force: bool = False,
) -> int:
    run_dir = Path(out) if out else Path("runs") / config.name
    if dry_run:
        if force:
            raise ConfigError("--dry-run moves nothing: plan without --force (or into a new --out)")
        plan = plan_run(config, run_dir, copy_data=copy_data)
        print(json.dumps(plan.to_dict(), sort_keys=True) if as_json else plan.describe())
        return 0
    displaced = _move_aside(run_dir) if force else None
    try:
        plan_run(config, run_dir, copy_data=copy_data, estimate=False)  # refuse before writing
    except BaseException:
        if displaced is not None:
            displaced.rename(run_dir)
        raise
    if displaced is not None:
        print(
            f"securefed: --force: the earlier run in {run_dir} is now {displaced}", file=sys.stderr
        )
    dp = config.dp
    budget = "DP off" if dp is None else f"DP ε={dp.target_epsilon:g}, δ={dp.delta:g} each"
    print(
        f"securefed: {config.mode.value} ({'secure' if config.secure else 'plaintext'}), "
        f"{config.rounds} rounds, {budget}; baselines: "
        f"{', '.join(b.value for b in config.baselines) or 'none'} -> {run_dir}",
        file=sys.stderr,
    )
    with _library_warnings() as warned:
        summary = run_federation(
            config,
            run_dir,
            progress=ProgressPrinter(config.mode.value),
            baseline_progress=lambda mode, r: ProgressPrinter(mode.value)(r),
            copy_data=copy_data,
            notify=_notice,
        )
    return _finish_run(summary, report=True, as_json=as_json, warned=warned)


def _move_aside(run_dir: Path) -> Path | None:
    """--force: an output directory holding something is renamed to a sibling
    ``<name>.replaced-<UTC time>`` (the earlier run's ledgers are audit evidence: nothing is
    deleted); None when there is nothing to move.

    Raises:
        ConfigError: ``run_dir`` is not a directory, or cannot be renamed.
    """
    if not run_dir.exists():
        return None
    if not run_dir.is_dir():
        raise ConfigError(
            f"{run_dir} exists and is not a directory: --force moves directories only"
        )
    if not any(run_dir.iterdir()):
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
    if target.exists():
        raise ConfigError(f"--force: {target} exists already; try again in a second")
    try:
        run_dir.rename(target)
    except OSError as exc:
        raise ConfigError(f"--force: cannot move {run_dir} aside: {exc.strerror}") from None
    return target


def _demo(args: argparse.Namespace) -> int:
    config = demo_config(
        rounds=args.rounds,
        tenants=args.tenants,
        mode=PersonalizationMode(args.mode) if args.mode else None,
        dp=not args.no_dp,
        secure=not args.plaintext,
        data_directory=args.data,
    )
    # the bundled digits are public: each demo prepares its own copy (repeatable); a --data
    # directory is the user's records, whose spend every run continues
    try:
        return _run_config_and_go(
            config,
            args.out,
            copy_data=True,
            dry_run=args.dry_run,
            as_json=args.json,
            force=args.force,
        )
    except ConfigError as exc:
        # EngineSettings.check_partition: a declared segment too small for group mode
        if config.mode is not PersonalizationMode.GROUP or "groups need at least" not in str(exc):
            raise
        groups, smallest = config.data.groups, minimum_group_size(round_params(config))
        raise ConfigError(
            f"{exc}: the demo splits its {config.data.tenants} institutions into {groups} "
            f"segments, and group mode aggregates within each; use --tenants "
            f"{groups * smallest} or more, or another --mode (fedavg, fedamp)"
        ) from None


def _run(args: argparse.Namespace) -> int:
    if args.config_file is not None:
        if args.config is not None and args.config != args.config_file:
            raise ConfigError("give the configuration once: CONFIG or --config CONFIG")
        args.config = args.config_file
    if args.resume is not None:
        if args.config is not None or args.out is not None:
            raise ConfigError("--resume DIR takes the run's own configuration: no --config/--out")
        if args.dry_run or args.force:
            raise ConfigError("--dry-run and --force are for a new run: not with --resume")
        with _library_warnings() as warned:
            summary = resume_federation(
                args.resume,
                progress=ProgressPrinter("resumed"),
                baseline_progress=lambda mode, r: ProgressPrinter(mode.value)(r),
                notify=_notice,
            )
        return _finish_run(summary, report=True, as_json=args.json, warned=warned)
    if args.config is None:
        raise ConfigError("give --config run.toml (or --resume DIR to continue a killed run)")
    return _run_config_and_go(
        load_run_config(args.config),
        args.out,
        dry_run=args.dry_run,
        as_json=args.json,
        force=args.force,
    )


def _budget_show(args: argparse.Namespace) -> int:
    directory = Path(args.records)
    indices = args.tenant or sorted(discover_indices(directory))
    if not indices:
        raise ConfigError(f"{directory}: no tenant files in the seed layout")
    for index in indices:
        record = load_spend(directory, index)
        print("no spend recorded" if record is None else describe(record), f"(tenant {index})")
        for reset in () if record is None else record.resets:
            print(f"    reset {reset.time}: {reset.reason}")
    return 0


def _budget_reset(args: argparse.Namespace) -> int:
    directory = Path(args.records)
    for index in args.tenant:
        reset = reset_spend(directory, index, reason=args.reason)
        if reset is None:
            print(f"tenant {index}: no spend recorded; nothing to reset")
            continue
        before = "unbounded" if reset.epsilon_before is None else f"{reset.epsilon_before:.4g}"
        print(
            f"tenant {index}: reset (epsilon {before} before, {len(reset.participations)} "
            "participations archived); every later run ledgers this reset as a hazard"
        )
    return 0


def _data_prepare(args: argparse.Namespace) -> int:
    federation = prepare(
        args.source,
        out=args.out,
        config=PartitionConfig(
            tenants=args.tenants,
            groups=args.groups,
            scheme=args.scheme,
            seed=args.seed,
            samples_per_tenant=args.samples_per_tenant,
        ),
    )
    sizes = [len(t.train_y) for t in federation.tenants]
    print(
        f"wrote {len(sizes)} tenants ({min(sizes)}-{max(sizes)} training samples each, "
        f"{federation.config.groups} latent groups, {federation.config.scheme.value}) "
        f"in the seed layout to {args.out} (+ federation.json)"
    )
    return 0


def _data_import(args: argparse.Namespace) -> int:
    schema = load_schema(args.schema)
    record = import_tabular(schema, args.input, out=args.out, institution=args.institution)
    files = f"{len(record.inputs)} file{'s' if len(record.inputs) > 1 else ''}"
    print(
        f"institution {record.institution}: {record.train_rows + record.test_rows} rows from "
        f"{files} -> {record.train_rows} train / {record.test_rows} test, "
        f"{len(record.features)} features, {len(record.classes)} classes; "
        f"written to {args.out}\nschema sha256 {record.schema_sha256} "
        "(every institution of the federation must show the same)"
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    schema = load_schema(args.schema)
    result = predict(
        args.run,
        args.institution,
        schema,
        args.input,
        args.output,
        ids=args.id or (),
        force=args.force,
        schema_source=str(args.schema),
    )
    print(
        f"{args.institution}: scored {result.rows} records of {args.input} with its personalized "
        f"model of {args.run}; wrote {result.output} ({', '.join(result.columns)})"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    schema = load_schema(args.schema)
    result = export_onnx(
        args.run,
        args.institution,
        schema,
        args.output,
        inputs=ExportInputs(args.inputs),
        force=args.force,
        schema_source=str(args.schema),
    )
    print(
        f"{args.institution}: wrote {result.onnx} (ONNX, inputs: {result.inputs.value}) and "
        f"{result.sidecar} (what to feed it; schema sha256 {result.model.schema_sha256})"
    )
    return 0


def _add_scoring_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scoring = commands.add_parser(
        "predict",
        help="score new records with an institution's personalized model (docs/tabular.md)",
    )
    exporting = commands.add_parser(
        "export", help="write an institution's personalized model as ONNX (docs/tabular.md)"
    )
    for command in (scoring, exporting):
        command.add_argument(
            "--run",
            required=True,
            metavar="DIR",
            help="a finished run, or a deployment agent's state directory (--state of "
            "securefed agent) once its ledger records the end of the run",
        )
        command.add_argument(
            "--institution",
            required=True,
            metavar="NAME",
            help="its party id ([data] parties, or bank-<i>)",
        )
        command.add_argument(
            "--schema",
            required=True,
            metavar="SCHEMA.toml",
            help="the federation's schema (its digest must be the one the data was imported under)",
        )
        command.add_argument("--force", action="store_true", help="replace an existing output")
    scoring.add_argument("--input", required=True, metavar="FILE", help=".csv or .parquet")
    scoring.add_argument(
        "--output", required=True, metavar="FILE", help="scores to write: .csv or .parquet"
    )
    scoring.add_argument(
        "--id",
        action="append",
        metavar="COLUMN",
        help="an id column of the input (one the schema drops) to copy into the output; repeat "
        "(default: a 'row' column, the input's 1-based data row)",
    )
    scoring.set_defaults(handler=_predict)
    exporting.add_argument("--format", required=True, choices=["onnx"], help="onnx")
    exporting.add_argument(
        "--output", required=True, metavar="FILE.onnx", help="the model (+ FILE.json beside it)"
    )
    exporting.add_argument(
        "--inputs",
        choices=[i.value for i in ExportInputs],
        default=ExportInputs.COLUMNS.value,
        help="columns: one input per schema column, encoded in the graph (default); features: "
        "the encoded feature vector",
    )
    exporting.set_defaults(handler=_export)


def _experiments(args: argparse.Namespace) -> int:
    grid = GRIDS[args.grid]
    if args.rounds is not None:
        grid = dataclasses.replace(grid, rounds=args.rounds)
    table = run_experiments(grid, args.out)
    out = Path(args.out) / "results.md"
    out.write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"table: {out}; every run: {args.out}/<cell>/", file=sys.stderr)
    return 0


def _add_run_output_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--dry-run",
        action="store_true",
        help="check the configuration and the data, print the plan (sigma and projected "
        "epsilon per institution, a time estimate); write nothing",
    )
    command.add_argument(
        "--json",
        action="store_true",
        help="one JSON object on stdout (the run's summary, or the plan); the rest on stderr",
    )
    command.add_argument(
        "--force",
        action="store_true",
        help="the output directory may hold an earlier run: it is moved aside to "
        "DIR.replaced-<UTC time> (its ledgers are audit evidence: nothing is deleted), and moved "
        "back if the new run is refused before it starts",
    )


def _add_run_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    modes = ["local", "fedavg", "fedamp", "heurfedamp", "group"]
    demo = commands.add_parser(
        "demo", help="the showcase: DP + secure group-mode FedAMP on bundled real digits"
    )
    demo.add_argument("--out", metavar="DIR", help="run directory (default runs/demo)")
    demo.add_argument("--rounds", type=int, help="federated rounds (default 20)")
    demo.add_argument("--tenants", type=int, help="institutions (default 12, in 3 segments)")
    demo.add_argument("--mode", choices=modes, help="aggregation mode (default group)")
    demo.add_argument("--no-dp", action="store_true", help="train without differential privacy")
    demo.add_argument(
        "--plaintext", action="store_true", help="aggregate in the clear (comparison only)"
    )
    demo.add_argument(
        "--data", metavar="DIR", help="a seed-layout directory instead of the bundled digits"
    )
    _add_run_output_arguments(demo)
    demo.set_defaults(handler=_demo)

    run = commands.add_parser("run", help="a run from a TOML configuration (docs/run-config.md)")
    run.add_argument(
        "config_file", nargs="?", metavar="CONFIG", help="run configuration (as --config)"
    )
    run.add_argument("--config", metavar="run.toml", help="run configuration")
    run.add_argument("--out", metavar="DIR", help="run directory (default runs/<name>)")
    run.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the killed run of DIR (its DIR.partial): same ledgers, budget, models",
    )
    _add_run_output_arguments(run)
    run.set_defaults(handler=_run)


def _add_records_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    budget = commands.add_parser(
        "budget", help="the privacy spend kept next to the records (docs/dp.md)"
    )
    budget_actions = budget.add_subparsers(dest="action", required=True)
    show = budget_actions.add_parser("show", help="each tenant's epsilon spent on its records")
    show.add_argument("records", metavar="DATA_DIR", help="a seed-layout directory")
    show.add_argument("--tenant", type=int, action="append", help="only this tenant (repeat)")
    show.set_defaults(handler=_budget_show)
    reset = budget_actions.add_parser(
        "reset", help="start a tenant's budget again, recorded and shown in later reports"
    )
    reset.add_argument("records", metavar="DATA_DIR", help="a seed-layout directory")
    reset.add_argument(
        "--tenant", type=int, action="append", required=True, help="tenant index (repeat)"
    )
    reset.add_argument("--reason", required=True, help="why (kept in the spend record)")
    reset.set_defaults(handler=_budget_reset)

    experiments = commands.add_parser(
        "experiments", help="every method on the same splits, with and without DP (long)"
    )
    experiments.add_argument("--out", default="runs/experiments", help="directory for all runs")
    experiments.add_argument(
        "--grid",
        choices=sorted(GRIDS),
        default="full",
        help="full (hours), quick (N = 20, one seed), seed-scale (N = 62, cheap modes), "
        "plaintext (quick's concept-shift cells aggregated in the clear), statistic and "
        "statistic-seed-scale (learned similarity under DP, 3 seeds), budgets (ε 1 and 4), "
        "secure-seeds and plaintext-seeds (fedavg and group, 3 seeds, secure vs in the clear), "
        "fedavg-seeds and fedavg-plaintext-seeds (fedavg without DP, seeds 3-9)",
    )
    experiments.add_argument("--rounds", type=int, help="override the grid's rounds")
    experiments.set_defaults(handler=_experiments)

    data = commands.add_parser("data", help="prepare or import tenant data in the seed layout")
    data_actions = data.add_subparsers(dest="action", required=True)
    prep = data_actions.add_parser(
        "prepare", help="partition a source among tenants, write client_*_<i>.npy files"
    )
    prep.add_argument(
        "--source",
        default="bundled",
        help="'bundled' (5,000 real MNIST digits), a seed-layout directory, or an .npz file",
    )
    prep.add_argument("--tenants", type=int, required=True, help="number of tenants")
    prep.add_argument("--groups", type=int, default=3, help="latent groups (default 3)")
    prep.add_argument(
        "--scheme",
        default="concept-shift",
        choices=["dominant-class", "concept-shift", "pathological", "iid"],
        help="how groups differ (default concept-shift)",
    )
    prep.add_argument("--seed", type=int, default=0, help="partition seed (default 0)")
    prep.add_argument("--samples-per-tenant", type=int, help="cap per tenant (default: all)")
    prep.add_argument("--out", required=True, metavar="DIR", help="output directory")
    prep.set_defaults(handler=_data_prepare)
    tabular = data_actions.add_parser(
        "import",
        help="one institution's CSV or Parquet files, checked against a schema (docs/tabular.md)",
    )
    tabular.add_argument("--schema", required=True, metavar="SCHEMA.toml", help="the schema")
    tabular.add_argument(
        "--input",
        required=True,
        action="append",
        metavar="FILE",
        help=".csv, .csv.gz, .parquet (repeat: concatenated in order)",
    )
    tabular.add_argument("--out", required=True, metavar="DIR", help="output directory")
    tabular.add_argument(
        "--institution", type=int, required=True, metavar="I", help="tenant index (>= 0)"
    )
    tabular.set_defaults(handler=_data_import)


# --- deploy: the institution's agent, the Flower App, test certificates (docs/deploy.md) -----


def _deploy_agent(args: argparse.Namespace) -> int:
    from securefed.runtime.flower.agent import AgentSettings, run_agent  # noqa: PLC0415

    settings = AgentSettings.from_args(args)
    print(f"agent of {args.party}: serving on {Path(args.state) / 'agent.sock'}", file=sys.stderr)
    run_agent(settings)
    return 0


def _deploy_app(args: argparse.Namespace) -> int:
    from securefed.runtime.flower.deployment import write_flower_app  # noqa: PLC0415

    path = write_flower_app(Path(args.out))
    print(f"wrote {path}: submit it with flwr run {args.out} <superlink>", file=sys.stderr)
    return 0


def _deploy_certs(args: argparse.Namespace) -> int:
    from securefed.runtime.flower.certs import write_test_certificates  # noqa: PLC0415

    files = write_test_certificates(Path(args.out))
    print(
        f"wrote {files.ca_certificate}, {files.server_certificate}, {files.server_key} "
        "(a throwaway CA for localhost / 127.0.0.1: loopback tests only)",
        file=sys.stderr,
    )
    return 0


def _add_deploy_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    deploy = commands.add_parser("deploy", help="run across processes on Flower (docs/deploy.md)")
    actions = deploy.add_subparsers(dest="action", required=True)

    agent = actions.add_parser("agent", help="an institution's agent, beside its SuperNode")
    add_agent_arguments(agent)
    agent.set_defaults(handler=_deploy_agent)

    app = actions.add_parser("app", help="write the Flower App directory that flwr run submits")
    app.add_argument("--out", required=True, help="directory for its pyproject.toml")
    app.set_defaults(handler=_deploy_app)

    certs = actions.add_parser("test-certs", help="a throwaway TLS CA and localhost certificate")
    certs.add_argument("--out", required=True, help="directory for ca.crt, server.pem, server.key")
    certs.set_defaults(handler=_deploy_certs)


def _add_secagg_bench(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    secagg = benches.add_parser("secagg", help="one secure-aggregation round, optionally vs Flower")
    secagg.add_argument("--clients", type=int, default=10, help="N (default 10)")
    secagg.add_argument("--dim", type=int, default=1_000_000, help="vector length d (default 10^6)")
    secagg.add_argument("--dropouts", type=int, default=1, help="clients lost after key sharing")
    secagg.add_argument("--repeats", type=int, default=5, help="rounds run, best times kept")
    secagg.add_argument("--baseline", choices=[b.value for b in Baseline], help="compare in-run")
    secagg.add_argument(
        "--degree", type=int, default=None, help="SecAgg+ graph of this degree (default: complete)"
    )
    secagg.add_argument("--json", action="store_true", help="one JSON object on stdout")
    secagg.set_defaults(handler=_bench_secagg)


def _add_import_bench(benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tabular = benches.add_parser(
        "import", help="securefed data import of a generated CSV vs pyarrow alone reading it"
    )
    tabular.add_argument("--rows", type=int, default=1_000_000, help="CSV rows (default 10^6)")
    tabular.add_argument("--repeats", type=int, default=1, help="interleaved repeats, best kept")
    tabular.add_argument("--json", action="store_true", help="one JSON object on stdout")
    tabular.set_defaults(handler=_bench_import)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="securefed",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"securefed {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    bench = commands.add_parser("bench", help="measure performance against same-run baselines")
    benches = bench.add_subparsers(dest="benchmark", required=True)
    prg = benches.add_parser("prg", help="mask generation vs the raw AES-256-CTR keystream limit")
    prg.add_argument("--mib", type=int, default=256, help="mask size in MiB (default 256)")
    prg.add_argument("--repeats", type=int, default=3, help="interleaved repeats, best kept")
    prg.add_argument("--json", action="store_true", help="one JSON object on stdout")
    prg.set_defaults(handler=_bench_prg)
    _add_secagg_bench(benches)
    add_scale_parser(benches)
    personal = benches.add_parser("personalize", help="one personalized (attention/group) round")
    personal.add_argument("--clients", type=int, default=10, help="N (default 10)")
    personal.add_argument("--dim", type=int, default=1_000_000, help="model length d")
    personal.add_argument("--mode", choices=["fedamp", "heurfedamp", "group"], default="fedamp")
    personal.add_argument("--sketch-dim", type=int, default=256, help="sketch length k")
    personal.add_argument("--json", action="store_true", help="one JSON object on stdout")
    personal.set_defaults(handler=_bench_personalize)
    rounds = benches.add_parser("round", help="crypto share of one secure DP training round")
    rounds.add_argument("--tenants", type=int, default=10, help="N (default 10)")
    rounds.add_argument(
        "--samples-per-tenant", type=int, default=500, help="train + test samples (default 500)"
    )
    rounds.add_argument(
        "--mode", choices=["fedavg", "fedamp", "heurfedamp", "group"], default="fedamp"
    )
    rounds.add_argument("--repeats", type=int, default=2, help="measured rounds, best kept")
    rounds.add_argument("--json", action="store_true", help="one JSON object on stdout")
    rounds.set_defaults(handler=_bench_round)
    dp_bench = benches.add_parser("dp", help="a DP-SGD step of the demo CNN vs a plain SGD step")
    dp_bench.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    dp_bench.add_argument("--steps", type=int, default=20, help="timed steps per path (median)")
    dp_bench.add_argument("--warmup", type=int, default=3, help="untimed steps per path first")
    dp_bench.add_argument("--no-hooks", action="store_true", help="skip the hooks reference path")
    dp_bench.add_argument("--json", action="store_true", help="one JSON object on stdout")
    dp_bench.set_defaults(handler=_bench_dp)
    _add_import_bench(benches)

    deploy = benches.add_parser(
        "deploy", help="a Flower deployment (TLS, loopback) vs the simulation (needs flwr)"
    )
    deploy.add_argument(
        "--config", metavar="FILE", help="a run configuration (default: group mode, DP, the CNN)"
    )
    deploy.add_argument(
        "--clients", type=int, default=4, help="institutions of the default (default 4)"
    )
    deploy.add_argument("--rounds", type=int, default=3, help="rounds of the default (default 3)")
    deploy.add_argument("--json", action="store_true", help="one JSON object on stdout")
    deploy.set_defaults(handler=_bench_deploy)

    _add_keys_commands(commands)
    _add_audit_commands(commands)
    _add_run_commands(commands)
    _add_records_commands(commands)
    _add_scoring_commands(commands)
    _add_deploy_commands(commands)
    _describe_commands(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``securefed`` console script."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except ConfigError as exc:
        print(f"securefed: configuration error: {exc}", file=sys.stderr)
        return 2
    except SecureFedError as exc:
        print(f"securefed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
