"""The `enrich` command line: synthesise demo data, manage keys, run and serve the nightly flow."""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from profiles.config import RunConfig, load_run_config
from profiles.errors import EnrichError
from profiles.files import write_private_text
from profiles.hashing import KEY_PURPOSES, KeyPurpose, Keyring
from profiles.settings import EnrichSettings

# The CLI talks to Prefect's local server by default; telemetry would only print errors offline.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

app = typer.Typer(
    help="Guarded profile enrichment: consent-checked, pseudonymised customer profiles.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Create and rotate the local key file (demo and single-host use).")
quarantine_app = typer.Typer(help="Operator access to quarantined rows.")
policy_app = typer.Typer(help="Check a policy bundle, or see what a new one would change.")
dsar_app = typer.Typer(help="Data-subject requests: access, erasure, objection.")
audit_app = typer.Typer(
    help="The decision log for compliance: verify it, report on it, find one person's "
    "decisions, records of processing."
)
app.add_typer(keys_app, name="keys")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(policy_app, name="policy")
app.add_typer(dsar_app, name="dsar")
app.add_typer(audit_app, name="audit")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # never break a path or message across lines

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Run configuration (enrich.yaml).", exists=False)
]


RESUMES = (
    "the run stopped and published nothing; run `enrich run` again once that is fixed: "
    "it resumes where this one stopped"
)
"""Said after a run failed on something that can pass (a store that went away, a full disk)."""

_NO_ROOM = {
    errno.ENOSPC: "no space left on the device holding",
    errno.EDQUOT: "disk quota exceeded on the device holding",
}


def _fail(problem: Exception | str, *, hint: str | None = None) -> typer.Exit:
    """Print the error (and what to do about it); the exit (code 2) to raise."""
    err.print(f"[bold red]error:[/] {escape(str(problem))}", highlight=False)
    if hint is not None:
        err.print(hint, highlight=False)
    return typer.Exit(code=2)


def _device(path: Path) -> int | None:
    """The device of `path`, or of its nearest existing parent."""
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            return folder.stat().st_dev
    return None


def no_room_message(exc: OSError, cfg: RunConfig) -> str | None:
    """What to tell about a write that found its disk full (None for any other OSError): the
    file the error names, else the output folder, and the state folder too when it is on
    another device (a write error seldom names its file)."""
    what = _NO_ROOM.get(exc.errno or 0)
    if what is None:
        return None
    if exc.filename is not None:
        return f"{what} {exc.filename}"
    where = str(cfg.output_dir)
    if _device(cfg.state_dir) != _device(cfg.output_dir):
        where += f" or the one holding {cfg.state_dir}"
    return f"{what} {where}"


def _load(config: Path) -> RunConfig:
    """The run configuration with its provider entries checked, or exit 2 with every problem."""
    from enrichers.behaviour.config import parse_behaviour  # noqa: PLC0415 - keeps `--help` fast
    from enrichers.registry import parse_settings  # noqa: PLC0415
    from flows.fusion import FusionStage  # noqa: PLC0415

    try:
        cfg = load_run_config(config)
        parse_settings(cfg.enrichment.providers, path=config)
        parse_behaviour(cfg.behaviour, path=config)
        FusionStage.load(cfg, config)
    except EnrichError as exc:
        raise _fail(exc) from None
    return cfg


def _add_local_providers(config_path: Path, base_url: str) -> None:
    """Append an `enrichment` section calling the local provider server at `base_url`."""
    import yaml  # noqa: PLC0415

    from enrichers.testing import provider_entries  # noqa: PLC0415

    section = yaml.safe_dump(
        {"enrichment": {"providers": provider_entries(base_url)}},
        sort_keys=False,
        default_flow_style=False,
    )
    header = (
        "# Enrichment through the local provider server (`python -m enrichers.testing.server"
        " --world data/world.jsonl`;\n# `make demo` starts it): three simulated providers"
        " that answer with noisy observations of\n# the people in data/world.jsonl.\n"
    )
    with config_path.open("a", encoding="utf-8") as fh:
        fh.write(header + section)


@app.command()
def synth(
    people: Annotated[int, typer.Option(min=1, help="How many synthetic people.")] = 10_000,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write.")] = Path("demo"),
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 7,
    night: Annotated[
        int,
        typer.Option(min=1, help="Which night's export: 2 and later add people and change some."),
    ] = 1,
    provider_url: Annotated[
        str | None,
        typer.Option(
            help="Enrich through the local provider server at this URL "
            "(e.g. http://127.0.0.1:8765): adds its providers to enrich.yaml."
        ),
    ] = None,
) -> None:
    """Write a ready-to-run demo folder: enrich.yaml and messy multi-source data with truth."""
    from profiles.synth import generate  # noqa: PLC0415 - keeps `enrich --help` fast

    with err.status(f"synthesising {people:,} people (night {night}) into {out_dir} ..."):
        result = generate(people=people, out_dir=out_dir, seed=seed, night=night)
    if provider_url is not None:
        _add_local_providers(result.config_path, provider_url)
    table = Table(title=f"Synthetic data for {result.people:,} people", show_edge=False)
    table.add_column("source")
    table.add_column("rows", justify="right")
    for name, rows in result.rows.items():
        table.add_row(name, f"{rows:,}")
    out.print(table)
    out.print(f"config: {result.config_path}")


@app.command()
def check(config: ConfigOption = Path("enrich.yaml")) -> None:
    """Validate a run configuration and report every problem at once."""
    from enrichers.registry import parse_settings  # noqa: PLC0415
    from profiles.taxonomy import load_taxonomy  # noqa: PLC0415

    cfg = _load(config)
    missing = [s for s in cfg.sources if not s.path.is_file()]
    for source in missing:
        err.print(f"source {source.name}: file {source.path} not found", highlight=False)
    if missing:
        raise typer.Exit(code=2)
    taxonomy = load_taxonomy(cfg.taxonomy)
    for settings in parse_settings(cfg.enrichment.providers, path=config):
        mapped = getattr(settings, "topic_map", None) or {}
        unknown = taxonomy.undeclared(mapped.values())
        if unknown:
            err.print(
                f"warning: provider {settings.name}: topic_map targets {', '.join(unknown)}, "
                "which the taxonomy does not list: those signals will be counted and dropped",
                highlight=False,
            )
    out.print(f"{config}: OK ({len(cfg.sources)} sources)")


@app.command()
def run(
    config: ConfigOption = Path("enrich.yaml"),
    run_id: Annotated[str | None, typer.Option(help="Run id (default: time-based).")] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            help="Score behaviour as of the end of this date (YYYY-MM-DD), to reproduce a "
            "past night; default: now."
        ),
    ] = None,
    runner: Annotated[
        str | None,
        typer.Option(
            help="Where the partition tasks run: threads, processes, dask (an existing "
            "cluster, with --dask-address) or dask-local (a local cluster of --workers "
            "processes). Default: enrich.yaml's performance.runner."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes (processes, dask-local runners)."),
    ] = None,
    dask_address: Annotated[
        str | None,
        typer.Option(help="The Dask scheduler of --runner dask, e.g. tcp://10.0.0.5:8786."),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Resume this interrupted run (by default an interrupted run on the same "
            "inputs is resumed anyway; this refuses any other)."
        ),
    ] = None,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh", help="Do not resume an interrupted run: mark it failed, start anew."
        ),
    ] = False,
) -> None:
    """Run the nightly flow once; prints the run's output folder.

    A run that was interrupted (killed, or failed on an error) is resumed by the next
    `enrich run` on the same inputs: it keeps its run id, and its outputs are those an
    uninterrupted run would have made."""
    cfg = _load(config)  # fail fast, before Prefect starts, on a bad config
    from flows.nightly import end_of_day, run_nightly  # noqa: PLC0415 - Prefect import is slow
    from flows.runner import Runner  # noqa: PLC0415

    try:
        if as_of is not None:
            end_of_day(as_of)
        Runner.of(cfg.performance, kind=runner, workers=workers, address=dask_address)
    except ValueError as exc:
        raise _fail(exc) from None
    try:
        folder = run_nightly(
            config,
            run_id=run_id,
            as_of=as_of,
            runner=runner,
            workers=workers,
            dask_address=dask_address,
            resume=resume,
            fresh=fresh,
        )
    except EnrichError as exc:
        raise _fail(exc, hint=RESUMES if exc.retryable else None) from None
    except OSError as exc:
        message = no_room_message(exc, cfg)
        if message is None:
            raise
        raise _fail(message, hint=RESUMES) from None
    summary = json.loads((folder / "run_summary.json").read_text(encoding="utf-8"))
    totals = summary["totals"]
    identity = summary["identity"]
    err.print(
        f"{totals['rows_in']:,} rows in: {totals['rows_accepted']:,} accepted, "
        f"{totals['rows_quarantined']:,} quarantined; {identity['profiles']:,} profiles "
        f"({identity['profiles_new']:,} new, {identity['merges']:,} merges, "
        f"{identity['splits']:,} splits)",
        highlight=False,
    )
    behaviour = summary.get("behaviour") or {}
    if behaviour:
        err.print(_behaviour_line(behaviour), highlight=False)
    print(folder)


def _behaviour_line(behaviour: dict[str, Any]) -> str:
    """One line on the behaviour scores for the console (counts and model figures only)."""
    parts = [f"behaviour: {behaviour['customers']:,} customers scored"]
    top = behaviour["pareto"]["top_20_share"]
    if top is not None:
        parts.append(f"top 20 % bring {top:.0%} of revenue")
    models = behaviour["models"]
    fit = models.get("bgnbd")
    if fit:
        params = ", ".join(f"{k}={v:.3g}" for k, v in fit["params"].items())
        status = "converged" if fit["converged"] else f"NOT converged ({fit['message']})"
        parts.append(f"BG/NBD {status} ({params})")
    holdout = models.get("holdout")
    if holdout:
        parts.append(
            f"hold-out: predicted {holdout['predicted_total']:,.0f} vs actual "
            f"{holdout['actual_total']:,.0f} repeat purchases"
        )
    if "skipped" in models:
        parts.append(f"models not fitted: {models['skipped']}")
    return "; ".join(parts)


@app.command()
def serve(config: ConfigOption = Path("enrich.yaml")) -> None:
    """Serve the nightly flow on the config's cron schedule (runs never overlap)."""
    _load(config)
    from flows.deploy import serve_nightly  # noqa: PLC0415

    serve_nightly(config)


@keys_app.command("init")
def keys_init(config: ConfigOption = Path("enrich.yaml")) -> None:
    """Create the key file (mode 0600) with a pseudonym, a quarantine and a signing key, if
    missing, and pin the signing key's public key in enrich.yaml (`audit.public_keys`)."""
    from flows.keys import pin_public_key  # noqa: PLC0415
    from policy.audit import Signer  # noqa: PLC0415

    cfg = _load(config)
    path = EnrichSettings().key_file_for(cfg.state_dir)
    try:
        keyring = Keyring.load(path) if path.exists() else Keyring()
        created = [
            f"{purpose} {keyring.add(purpose).key_id}"
            for purpose in KEY_PURPOSES
            if purpose not in keyring.active
        ]
        if created:
            keyring.save(path)
    except EnrichError as exc:  # a key file others may read, a folder anyone may write to
        raise _fail(exc) from None
    if created:
        out.print(f"{path}: created {', '.join(created)}", highlight=False)
    else:
        out.print(f"{path}: keys exist (pseudonym {keyring.active['pseudonym']})", highlight=False)
    signer = Signer.from_seed(keyring.active_key("signing").secret)
    if pin_public_key(config, signer.public_key):
        out.print(f"{config}: signing key {signer.key_id} pinned (audit.public_keys)")
    else:
        out.print(
            f"{config}: pin the signing key: add `- {signer.public_key}` under audit.public_keys",
            highlight=False,
        )


@keys_app.command("rotate")
def keys_rotate(
    purpose: Annotated[str, typer.Argument(help="pseudonym, quarantine or signing")],
    config: ConfigOption = Path("enrich.yaml"),
) -> None:
    """Make a new active key; the old one is kept, marked retired."""
    if purpose not in KEY_PURPOSES:
        err.print("purpose must be 'pseudonym', 'quarantine' or 'signing'")
        raise typer.Exit(code=2)
    cfg = _load(config)
    path = EnrichSettings().key_file_for(cfg.state_dir)
    kp: KeyPurpose = next(p for p in KEY_PURPOSES if p == purpose)
    try:
        keyring = Keyring.load(path)
        old = keyring.active.get(kp)
        new = keyring.add(kp)
        keyring.save(path)
    except EnrichError as exc:
        raise _fail(exc) from None
    out.print(f"{path}: {purpose} key {new.key_id} active, {old} retired", highlight=False)
    if kp == "signing":
        from policy.audit import Signer  # noqa: PLC0415

        signer = Signer.from_seed(new.secret)
        out.print(
            f"pin it before the next run: add `- {signer.public_key}` under audit.public_keys "
            f"in {config} ({signer.key_id}); keep the old key listed so that the checkpoints "
            "it signed stay verifiable",
            highlight=False,
        )


SHOWN_CHARS = 200
"""`enrich quarantine show` cuts raw values longer than this (a 10 MB field would flood the
terminal), saying how long they are."""


def _shown(value: object, full: bool) -> str:
    text = repr(value)
    if full or len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}… ({len(text):,} characters in all; --full shows them)"


@quarantine_app.command("show")
def quarantine_show(
    run_dir: Annotated[Path, typer.Argument(help="A run's output folder.")],
    config: ConfigOption = Path("enrich.yaml"),
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    line: Annotated[int | None, typer.Option(help="Only this line.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 20,
    full: Annotated[
        bool, typer.Option("--full", help=f"Values longer than {SHOWN_CHARS} characters whole.")
    ] = False,
) -> None:
    """Print quarantined rows with their raw values decrypted (needs the quarantine key).

    This shows personal data on your terminal: use it to fix sources, not to copy data.
    """
    from flows.keys import key_by_id  # noqa: PLC0415
    from profiles.quarantine import open_sealed, seal_context  # noqa: PLC0415

    cfg = _load(config)
    settings = EnrichSettings()
    path = run_dir / "quarantine.csv"
    if not path.is_file():
        err.print(f"{path} not found")
        raise typer.Exit(code=2)
    shown = 0
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if (source and row["source"] != source) or (line and int(row["line"]) != line):
                continue
            out.print(
                f"[bold]{row['source']}:{row['line']}[/]  {row['reason']}  "
                f"{escape(row['field_reasons'] or row['detail'])}",
                highlight=False,
            )
            if not row["sealed"]:
                out.print("  (raw values not kept)")
            else:
                try:
                    raw = json.loads(
                        open_sealed(
                            row["sealed"],
                            seal_context(row["source"], int(row["line"])),
                            lambda kid: key_by_id("quarantine", kid, settings, cfg.state_dir),
                        )
                    )
                except EnrichError as exc:
                    raise _fail(exc) from None
                fields = raw.items() if isinstance(raw, dict) else enumerate(raw, start=1)
                for name, value in fields:
                    out.print(f"  {name}: {_shown(value, full)}", highlight=False, markup=False)
            shown += 1
            if shown >= limit:
                break
    if not shown:
        err.print("no quarantined rows match")


@policy_app.command("check")
def policy_check(bundle: Annotated[Path, typer.Argument(help="Policy bundle (YAML).")]) -> None:
    """Validate a policy bundle and report every problem at once."""
    from policy.bundle import load_bundle  # noqa: PLC0415

    try:
        loaded = load_bundle(bundle)
    except EnrichError as exc:
        raise _fail(exc) from None
    out.print(
        f"{bundle}: OK — {loaded.name} {loaded.version}, {len(loaded.rules)} rules, "
        f"hash {loaded.hash}",
        highlight=False,
    )


@policy_app.command("diff")
def policy_diff(
    old: Annotated[Path, typer.Argument(help="The bundle in use.")],
    new: Annotated[Path, typer.Argument(help="The bundle you consider.")],
    config: ConfigOption = Path("enrich.yaml"),
) -> None:
    """Dry-run both bundles on the current state; print how many people change decision."""
    from flows.gates import current_facts  # noqa: PLC0415
    from policy.bundle import load_bundle  # noqa: PLC0415
    from policy.diff import diff, render_diff  # noqa: PLC0415

    cfg = _load(config)
    try:
        old_bundle, new_bundle = load_bundle(old), load_bundle(new)
        facts = current_facts(cfg, EnrichSettings())
    except EnrichError as exc:
        raise _fail(exc) from None
    out.print(f"{len(facts):,} subjects in the current state", highlight=False)
    out.print(render_diff(diff(old_bundle, new_bundle, facts)), highlight=False, markup=False)


def _request(
    cfg: RunConfig,
    emails: list[str],
    phones: list[str],
    customer_ids: list[str],
    country: str | None,
) -> list[dict[str, str]]:
    """The person's identifiers as pseudonyms (kind, key_id, pseudonym); raw values stay here."""
    from flows.keys import resolve_key  # noqa: PLC0415
    from profiles.hashing import Pseudonymiser  # noqa: PLC0415
    from profiles.identifiers import pseudonymise_values  # noqa: PLC0415
    from profiles.types import IdentifierKind  # noqa: PLC0415

    given = {
        IdentifierKind.EMAIL: emails,
        IdentifierKind.PHONE: phones,
        IdentifierKind.CUSTOMER_ID: customer_ids,
    }
    if not any(given.values()):
        err.print("name the person with at least one --email, --phone or --customer-id")
        raise typer.Exit(code=2)
    try:
        key = resolve_key("pseudonym", EnrichSettings(), cfg.state_dir)
        digests = pseudonymise_values(
            given, cfg.identifiers, Pseudonymiser(key), what="request", region=country
        )
    except EnrichError as exc:
        raise _fail(exc) from None
    refs = [
        {"kind": str(kind), "key_id": key.key_id, "pseudonym": digest}
        for kind, values in digests.items()
        for digest in sorted(values)
    ]
    if not refs:
        err.print("none of the identifiers given is usable (empty or placeholders only)")
        raise typer.Exit(code=2)
    return refs


EmailOption = Annotated[list[str], typer.Option("--email", help="An email address of the person.")]
PhoneOption = Annotated[list[str], typer.Option("--phone", help="A phone number of the person.")]
CustomerOption = Annotated[
    list[str], typer.Option("--customer-id", help="A customer id as namespace:id (crm:1234).")
]
CountryOption = Annotated[
    str | None, typer.Option(help="Country for phone numbers written without a country code.")
]
RequestOption = Annotated[
    str | None, typer.Option("--request-ref", help="Your ticket id for this request.")
]


def _request_ref(given: str | None, kind: str) -> str:
    from datetime import UTC, datetime  # noqa: PLC0415

    return given or f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


@dsar_app.command("access")
def dsar_access_cmd(
    out_file: Annotated[Path, typer.Option("--out", help="File to write (JSON, mode 0600).")],
    config: ConfigOption = Path("enrich.yaml"),
    email: EmailOption = [],  # noqa: B006 - typer reads the default, never mutates it
    phone: PhoneOption = [],  # noqa: B006
    customer_id: CustomerOption = [],  # noqa: B006
    country: CountryOption = None,
    request_ref: RequestOption = None,
) -> None:
    """Write everything held about a person to a file you choose (Art. 15)."""
    from flows.dsar import dsar_access  # noqa: PLC0415

    cfg = _load(config)
    refs = _request(cfg, email, phone, customer_id, country)
    ref = _request_ref(request_ref, "access")
    package = dsar_access(config_path=str(config.resolve()), identifiers=refs, request_ref=ref)
    package["searched_with"] = {"email": email, "phone": phone, "customer_id": customer_id}
    write_private_text(out_file, json.dumps(package, indent=2, ensure_ascii=False, default=str))
    err.print(
        f"request {ref}: {len(package['profile_ids'])} profile(s) written to {out_file}",
        highlight=False,
    )


@dsar_app.command("erase")
def dsar_erase_cmd(
    config: ConfigOption = Path("enrich.yaml"),
    email: EmailOption = [],  # noqa: B006
    phone: PhoneOption = [],  # noqa: B006
    customer_id: CustomerOption = [],  # noqa: B006
    country: CountryOption = None,
    request_ref: RequestOption = None,
) -> None:
    """Erase a person (Art. 17): delete their state, suppress them from every later run."""
    from flows.dsar import dsar_erase  # noqa: PLC0415

    cfg = _load(config)
    refs = _request(cfg, email, phone, customer_id, country)
    ref = _request_ref(request_ref, "erase")
    totals = dsar_erase(config_path=str(config.resolve()), identifiers=refs, request_ref=ref)
    err.print(f"request {ref}: " + ", ".join(f"{k} {v}" for k, v in totals.items()))


@dsar_app.command("object")
def dsar_object_cmd(
    to: Annotated[
        str,
        typer.Option(
            help="profiling, direct_marketing (Art. 21) or sale_sharing (CCPA opt-out, GPC)."
        ),
    ],
    config: ConfigOption = Path("enrich.yaml"),
    email: EmailOption = [],  # noqa: B006
    phone: PhoneOption = [],  # noqa: B006
    customer_id: CustomerOption = [],  # noqa: B006
    country: CountryOption = None,
    request_ref: RequestOption = None,
) -> None:
    """Record an objection: the person is no longer processed for that purpose."""
    from flows.dsar import dsar_object  # noqa: PLC0415

    kinds = {
        "profiling": "objection_profiling",
        "direct_marketing": "objection_direct_marketing",
        "sale_sharing": "opt_out_sale_sharing",
    }
    if to not in kinds:
        err.print(f"--to must be one of {', '.join(kinds)}")
        raise typer.Exit(code=2)
    cfg = _load(config)
    refs = _request(cfg, email, phone, customer_id, country)
    ref = _request_ref(request_ref, "object")
    totals = dsar_object(
        config_path=str(config.resolve()), identifiers=refs, objection=kinds[to], request_ref=ref
    )
    err.print(f"request {ref}: " + ", ".join(f"{k} {v}" for k, v in totals.items()))


def main() -> None:
    """Entry point for `python -m flows.cli`."""
    app()


if __name__ == "__main__":
    main()


LogDirArgument = Annotated[Path, typer.Argument(help="The decision log folder.")]
PinOption = Annotated[
    list[str],
    typer.Option("--public-key", help="A pinned public key (ed25519:...); default: enrich.yaml's."),
]


def _pins(config: Path, keys: list[str]) -> tuple[str, ...]:
    if keys:
        return tuple(keys)
    if not config.exists():
        err.print(f"no pinned keys: give --public-key or --config ({config} does not exist)")
        raise typer.Exit(code=2)
    return load_run_config(config).audit.public_keys


@audit_app.command("verify")
def audit_verify(
    log_dir: LogDirArgument,
    config: ConfigOption = Path("enrich.yaml"),
    public_key: PinOption = [],  # noqa: B006
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check every hash, the chain across segments and runs, every checkpoint signature
    (against the pinned keys only) and every count. Exit 1 naming each problem's place."""
    from flows.audit import verify_log  # noqa: PLC0415

    if not log_dir.is_dir():
        err.print(f"{log_dir}: no such folder")
        raise typer.Exit(code=2)
    result = verify_log(log_dir, _pins(config, public_key))
    if as_json:
        out.print_json(json.dumps(result.to_json()))
    for problem in result.problems:
        err.print(f"[bold red]FAILED[/] {escape(str(problem))}", highlight=False)
    summary = (
        f"{result.entries:,} entries in {result.segments} segment(s), {result.runs} run(s), "
        f"{result.checkpoints} signed checkpoint(s), keys {', '.join(result.keys) or '-'}"
    )
    if not result.ok:
        err.print(f"{log_dir}: verification FAILED ({summary})", highlight=False)
        raise typer.Exit(code=1)
    if not as_json:
        out.print(f"{log_dir}: verified: {summary}", highlight=False)


@audit_app.command("report")
def audit_report_cmd(
    log_dir: LogDirArgument,
    out_path: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path(
        "audit-report.html"
    ),
    config: ConfigOption = Path("enrich.yaml"),
    public_key: PinOption = [],  # noqa: B006
) -> None:
    """Write the audit report: decisions by purpose, gate, rule, jurisdiction and reason over
    time, suppressions and erasures, sensitive topics blocked, providers, data quality,
    personas, and the chain's verification status. One static HTML file."""
    from flows.audit import run_summaries, verify_log  # noqa: PLC0415
    from flows.audit_report import write_audit_report  # noqa: PLC0415
    from policy.audit import ChainedDecisionLog  # noqa: PLC0415

    result = verify_log(log_dir, _pins(config, public_key))
    summaries = list(run_summaries(load_run_config(config))) if config.exists() else []
    write_audit_report(
        out_path,
        entries=ChainedDecisionLog(log_dir).entries(),
        summaries=summaries,
        verification=result.to_json(),
    )
    state = "verified" if result.ok else "verification FAILED"
    out.print(f"{out_path}: {result.entries:,} decisions, chain {state}", highlight=False)


@audit_app.command("subject")
def audit_subject(
    config: ConfigOption = Path("enrich.yaml"),
    email: EmailOption = [],  # noqa: B006
    phone: PhoneOption = [],  # noqa: B006
    customer_id: CustomerOption = [],  # noqa: B006
    country: CountryOption = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Write the decisions as JSON here.")
    ] = None,
) -> None:
    """Every decision about one person (found through their pseudonyms), oldest first: for a
    data-subject access request or a complaint. Shows profile ids and pseudonyms, never the
    identifiers given."""
    import pandas as pd  # noqa: PLC0415

    from flows.audit import decisions_about  # noqa: PLC0415
    from policy.audit import ChainedDecisionLog  # noqa: PLC0415
    from profiles.store import StateStore  # noqa: PLC0415

    cfg = _load(config)
    refs = _request(cfg, email, phone, customer_id, country)
    with StateStore.open(EnrichSettings().state_url_for(cfg.state_dir)) as store:
        profile_ids = store.find_profiles(pd.DataFrame(refs))
    entries = decisions_about(ChainedDecisionLog(cfg.decision_log_dir), profile_ids)
    if not profile_ids:
        out.print(
            "no profile holds these identifiers (never seen, or erased: after an erasure "
            "its decisions can no longer be linked to the person)"
        )
        return
    if out_path is not None:
        write_private_text(out_path, json.dumps(entries, indent=2) + "\n")
    table = Table(
        title=f"{len(entries):,} decisions about profile(s) {', '.join(profile_ids)}",
        show_edge=False,
    )
    for column in ("seq", "ts", "run", "gate", "purpose", "decision", "rule", "reason", "context"):
        table.add_column(column)
    for e in entries[-200:]:
        table.add_row(
            *(str(e.get(k, "")) for k in ("seq", "ts", "run_id", "gate", "purpose", "decision")),
            str(e.get("rule", "")),
            str(e.get("reason", "")),
            str(e.get("context", "")),
        )
    out.print(table)
    if len(entries) > 200:
        out.print(f"(the last 200 of {len(entries):,}; --out writes all)")


@audit_app.command("ropa")
def audit_ropa(
    config: ConfigOption = Path("enrich.yaml"),
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for ropa.md and ropa.json.")] = (
        Path("ropa")
    ),
    controller: Annotated[
        str | None, typer.Option(help="The controller's name and contact details.")
    ] = None,
) -> None:
    """Records of processing activities (GDPR Art. 30) from enrich.yaml and the policy bundle,
    as Markdown and JSON."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from enrichers.registry import build, parse_settings  # noqa: PLC0415
    from flows.gates import policy_bundle  # noqa: PLC0415
    from policy.ropa import (  # noqa: PLC0415
        ProviderRecord,
        config_file_hash,
        records_of_processing,
        ropa_markdown,
    )

    cfg = _load(config)
    try:
        providers = []
        for settings in parse_settings(cfg.enrichment.providers, path=config):
            # built only to read its capabilities: no secret is read, no call is made
            caps = build(settings, lambda _ref: "unused").capabilities
            providers.append(
                ProviderRecord(
                    name=settings.name,
                    type=settings.type,
                    region=caps.region,
                    transfer_basis=None
                    if caps.transfer_basis is None
                    else str(caps.transfer_basis),
                    identifier_forms=tuple(str(f) for f in caps.accepts),
                    produces=tuple(caps.produces),
                    billing=str(caps.billing),
                )
            )
        bundle = policy_bundle(cfg)
    except EnrichError as exc:
        raise _fail(exc) from None
    document = records_of_processing(
        cfg,
        bundle,
        providers,
        controller=controller,
        generated_at=datetime.now(UTC),
        config_hash=config_file_hash(config),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ropa.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    (out_dir / "ropa.md").write_text(ropa_markdown(document), encoding="utf-8")
    out.print(f"{out_dir}/ropa.md, {out_dir}/ropa.json", highlight=False)
