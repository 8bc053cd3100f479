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
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from securefed import __version__
from securefed.audit import render_report, verify_path, verify_run
from securefed.audit.canary_bound import evaluate_canaries, write_canary_result
from securefed.bench import run_prg_benchmark
from securefed.bench.dp import run_dp_benchmark
from securefed.bench.personalize import run_personalize_benchmark
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
from securefed.runtime.benchmark import run_round_benchmark
from securefed.runtime.config import PersonalizationMode, RunConfig, load_run_config
from securefed.runtime.demo import ProgressPrinter, comparison_table, demo_config
from securefed.runtime.experiments import GRIDS, run_experiments
from securefed.runtime.export import ExportInputs, export_onnx
from securefed.runtime.federated import RunSummary, resume_federation, run_federation
from securefed.runtime.flower.deployment import add_agent_arguments
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
    or 3 (INCOMPLETE) naming the first party whose ledger lacks its genesis entry, its
    ``run.configured`` entry or its final checkpoint; the ``problem:``, ``incomplete:`` and
    ``note:`` lines after it list further problems, missing pieces and what was not covered.
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
    print(result.describe())
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
    """Write the HTML report and its Markdown twin; print both paths (exit 0 once written, also
    for tampered ledgers: the report shows it; ``audit verify`` is the check to gate on)."""
    html_path = Path(args.output)
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
            "check ledgers: exit 0 intact, 1 tampered (first bad entry named), 2 usage/I-O "
            "error, 3 incomplete (a party's ledger, genesis, run.configured or final checkpoint "
            "missing)"
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
        "-o", "--output", required=True, metavar="FILE.html", help="HTML report to write"
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


def _finish_run(summary: RunSummary, *, report: bool) -> int:
    """Print the comparison table, verify the ledgers, render the audit report."""

    print(comparison_table(summary.metrics))
    print(f"institutions: {', '.join(c['id'] for c in summary.metrics['clients'])}")
    run_dir = summary.directory
    verdict = verify_run(run_dir)
    print(f"ledgers: {verdict.summary()}")
    if report:
        rendered = render_report(
            run_dir, out_html=run_dir / "report.html", out_md=run_dir / "report.md"
        )
        print(f"audit report: {rendered.html_path} (Markdown twin: {rendered.md_path})")
    print(f"metrics: {run_dir / 'metrics.json'}; models: {run_dir / 'models'}")
    if not verdict.ok:
        return 1
    status = summary.metrics.get("status", "completed")
    if status in RUN_EXIT_CODES:
        failed = [
            f"{h['round']} ({h['status']})"
            for h in summary.metrics["history"]
            if h.get("status", "completed") != "completed"
        ]
        print(
            f"warning: the run is {status}: round(s) {', '.join(failed) or 'none'} produced no "
            f"aggregate (exit {RUN_EXIT_CODES[status]})",
        )
        return RUN_EXIT_CODES[status]
    return 0


def _notice(text: str) -> None:
    print(f"securefed: {text}", file=sys.stderr)


def _run_config_and_go(config: RunConfig, out: str | None, *, copy_data: bool = False) -> int:
    run_dir = Path(out) if out else Path("runs") / config.name
    dp = config.dp
    budget = "DP off" if dp is None else f"DP ε={dp.target_epsilon:g}, δ={dp.delta:g} each"
    print(
        f"securefed: {config.mode.value} ({'secure' if config.secure else 'plaintext'}), "
        f"{config.rounds} rounds, {budget}; baselines: "
        f"{', '.join(b.value for b in config.baselines) or 'none'} -> {run_dir}",
        file=sys.stderr,
    )
    summary = run_federation(
        config,
        run_dir,
        progress=ProgressPrinter(config.mode.value),
        baseline_progress=lambda mode, r: ProgressPrinter(mode.value)(r),
        copy_data=copy_data,
        notify=_notice,
    )
    return _finish_run(summary, report=True)


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
    return _run_config_and_go(config, args.out, copy_data=True)


def _run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        if args.config is not None or args.out is not None:
            raise ConfigError("--resume DIR takes the run's own configuration: no --config/--out")
        summary = resume_federation(
            args.resume,
            progress=ProgressPrinter("resumed"),
            baseline_progress=lambda mode, r: ProgressPrinter(mode.value)(r),
            notify=_notice,
        )
        return _finish_run(summary, report=True)
    if args.config is None:
        raise ConfigError("give --config run.toml (or --resume DIR to continue a killed run)")
    return _run_config_and_go(load_run_config(args.config), args.out)


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
        command.add_argument("--run", required=True, metavar="DIR", help="a finished run")
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
    demo.set_defaults(handler=_demo)

    run = commands.add_parser("run", help="a run from a TOML configuration (docs/run-config.md)")
    run.add_argument("--config", metavar="run.toml", help="run configuration")
    run.add_argument("--out", metavar="DIR", help="run directory (default runs/<name>)")
    run.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the killed run of DIR (its DIR.partial): same ledgers, budget, models",
    )
    run.set_defaults(handler=_run)

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
    parser = argparse.ArgumentParser(prog="securefed", description=__doc__.splitlines()[0])
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
    _add_scoring_commands(commands)
    _add_deploy_commands(commands)
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
