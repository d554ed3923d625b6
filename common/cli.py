"""The ``privrec`` command: simulate a federation, run baselines, check data, show settings."""

from __future__ import annotations

import json
import logging
import os
import sys
import tomllib
import warnings
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from client import cli as client_cli
from common.config import ConfigError, RunConfig, field_help

# No rich tracebacks with local variables: they would print review text, names and keys.
app = typer.Typer(
    help="PrivRec: a privacy-preserving federated recommender.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="Inspect review data.", no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(data_app, name="data")
app.add_typer(client_cli.app, name="client")
console = Console(stderr=True)
log = logging.getLogger("privrec")

KNOWN_ERRORS: tuple[type[Exception], ...] = (ConfigError, FileExistsError, FileNotFoundError, ValueError)

SET_HELP = "Any run setting as KEY=VALUE (repeatable); `privrec config` lists them."
CONFIG_HELP = "TOML file with run settings (top level or a tool.flwr.app.config table)."


def setup_logging(verbose: bool, *, run: bool = False) -> None:
    """Rich log lines on stderr for PrivRec's loggers (debug with ``verbose``). For a ``run`` the console
    is for people: by default one progress line per round (``privrec.progress``) and PrivRec's
    warnings, Flower's console lines off; with ``verbose`` everything. A run's full log goes to its
    directory either way (``server/checkpoints.py``)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars
    if "transformers" in sys.modules:  # imported already: its bars read the variable at import
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")  # deprecations
    logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)  # per-recogniser chatter
    for name in ("privrec", "common", "server", "client", "benchmark"):
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        quiet = run and not verbose and name in ("common", "server", "client")
        handler.setLevel(logging.WARNING if quiet else logging.DEBUG)
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)  # the run's log file still gets INFO
        logger.propagate = False
    progress = logging.StreamHandler(sys.stderr)  # one plain line per round, never wrapped
    progress.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    logging.getLogger("privrec.progress").handlers[:] = [progress]
    logging.getLogger("privrec.progress").propagate = False
    if run and not verbose:  # Flower's own lines (per round, and its notes on our choices) go to run.log only
        from flwr.common.logger import FLOWER_LOGGER, update_console_handler

        update_console_handler(level=logging.CRITICAL)  # its errors become ours, with the reason
        FLOWER_LOGGER.propagate = False  # the simulation engine also sets up the root logger


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def build_config(config_file: Path | None, settings: list[str], **options: Any) -> RunConfig:
    """Defaults < config file < --set KEY=VALUE < explicit options."""
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"{config_file}: cannot read settings ({err}); pass a TOML file.") from err
        values.update(loaded.get("tool", {}).get("flwr", {}).get("app", {}).get("config", loaded))
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r} is not KEY=VALUE; e.g. --set learning-rate=0.002.")
        values[key.strip()] = _parse_value(raw.strip())
    values.update({k.replace("_", "-"): v for k, v in options.items() if v is not None})
    return RunConfig.from_mapping(values)


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def simulate(
    data: Path | None = typer.Option(None, "--data", help="Review JSON lines (.gz ok); default: demo data."),
    items: Path | None = typer.Option(None, "--items", help="Item catalogue JSON lines; default: demo data."),
    clients: int | None = typer.Option(None, "--clients", help="Number of simulated clients."),
    rounds: int | None = typer.Option(None, "--rounds", help="Maximum federated rounds."),
    partition: str | None = typer.Option(None, "--partition", help="'iid' or 'dirichlet'."),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Folder for run directories."),
    run_name: str = typer.Option("", "--run-name", help="Name of this run's directory (default: time)."),
    config_file: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    settings: list[str] = typer.Option([], "--set", help=SET_HELP),
    device_policy: Path | None = typer.Option(
        None,
        "--device-policy",
        help="Privacy policy TOML every simulated device's owner sets (default: "
        "DP not required, exact evaluation; `privrec client policy --write FILE` writes the strict one).",
    ),
    canaries: int = typer.Option(
        0,
        "--canaries",
        help="Plant N synthetic users, each joining on a fair coin, "
        "for the empirical attacks of `privrec audit` (research; default 0).",
    ),
    reset_budgets: bool = typer.Option(
        False,
        "--reset-budgets",
        help="Start the simulated devices' privacy "
        "ledgers afresh (a new federation); otherwise they keep what earlier runs "
        "on the same stores spent.",
    ),
    resume: Path | None = typer.Option(
        None,
        "--resume",
        help="Continue the interrupted run in this run directory from its last completed round, "
        "with its own config (no other run settings may be given).",
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="Every log line on the console (the run's directory keeps them all in run.log either way).",
    ),
) -> None:
    """Run a simulated federation (Flower simulation engine, Ray on 127.0.0.1) and report test metrics."""
    setup_logging(verbose, run=True)
    from client.policy import PolicyError, PrivacyPolicy
    from server.outcome import RunFailed
    from server.resume import ResumeError

    errors: tuple[type[Exception], ...] = (*KNOWN_ERRORS, PolicyError, RunFailed, ResumeError)
    try:
        options = dict(
            reviews_path=_str(data),
            items_path=_str(items),
            num_clients=clients,
            num_rounds=rounds,
            partition=partition,
            run_dir=_str(run_dir),
        )
        if resume is not None:
            given = [name for name, value in options.items() if value is not None]
            if given or config_file or settings or run_name or canaries:
                raise ConfigError(
                    "--resume continues a run with the config in its directory; drop the other run "
                    f"settings ({', '.join(given) or '--config/--set/--run-name/--canaries'})"
                )
            from server.checkpoints import RunDirectory
            from server.resume import resumable

            cfg, run_name = resumable(RunDirectory(resume)), resume.name
        else:
            cfg = build_config(config_file, settings, **options)
        policy = PrivacyPolicy.load(device_policy) if device_policy else None
        from server.simulation import simulate as run_simulation

        path = run_simulation(
            cfg,
            run_name=run_name,
            device_policy=policy,
            canaries=canaries,
            worker_logs=verbose,
            reset_budgets=reset_budgets,
            resume=resume is not None,
        )
    except errors as err:
        _fail(err)
    summary = json.loads((path / "summary.json").read_text())
    table = Table(title=f"Test metrics (best round {summary['best-round']}), beside popularity on the same split")
    shown = {k: v for k, v in summary["test"].items() if k.startswith(("hr@", "ndcg@", "mrr", "num-users"))}
    table.add_column("model")
    for key in shown:
        table.add_column(key)
    table.add_row("PrivRec", *(f"{v:.4f}" if isinstance(v, float) and v < 1.5 else f"{v:g}" for v in shown.values()))
    popularity = _popularity(cfg)  # what any server gets without anyone's data: did training help?
    table.add_row("popularity", *(f"{popularity[k]:.4f}" if k in popularity else "" for k in shown))
    Console().print(table)
    Console().print(_privacy_line(summary, cfg))
    Console().print(f"run directory: {path}")


def _popularity(cfg) -> dict[str, float]:
    """Test metrics of the popularity ranking on the run's own split (the simulator holds the data)."""
    from common.baselines import popularity
    from common.run_data import RunData

    return popularity(RunData.load(cfg), k=cfg.eval_k)


def _privacy_line(summary: dict, cfg) -> str:
    """What the run's privacy was, in one line beside its result."""
    if summary.get("federation-epsilon") is not None:
        return (
            f"privacy: user-level DP over the whole federation, epsilon {summary['federation-epsilon']:.2f} "
            f"at delta {cfg.target_delta:g} (secure sums of the devices' noised statistics)"
        )
    if summary.get("epsilon-max") is not None:
        return f"privacy: user-level DP on each device, epsilon spent up to {summary['epsilon-max']:.2f} per device"
    if summary.get("central-epsilon") is not None:
        return (
            f"privacy: client-level central DP (noise added by the server), epsilon "
            f"{summary['central-epsilon']:.2f} at delta {cfg.target_delta:g}"
        )
    return "privacy: no differential privacy (dp = 'none'): the trained model is not protected"


@app.command()
def recommend(
    run_dir: Path = typer.Argument(..., help="The directory of a run (its config and checkpoints)."),
    user: str | None = typer.Option(
        None,
        "--user",
        help="A user of the local store --store, by the id the store was prepared from (or its pseudonym).",
    ),
    store: Path | None = typer.Option(None, "--store", help="The device's encrypted local store (with --user)."),
    passphrase_file: str | None = client_cli.PASS_FILE,
    passphrase_env: str | None = client_cli.PASS_ENV,
    key_file: str | None = client_cli.KEY_FILE,
    history: Path | None = typer.Option(
        None,
        "--history",
        help="Or: reviews (JSON lines) of the person to "
        "recommend for, e.g. their own; their items are not recommended back.",
    ),
    text: str | None = typer.Option(None, "--text", help="Or: what they like, in words (cold start)."),
    k: int = typer.Option(10, "--k", help="How many items."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="'best' (on validation) or 'last'."),
    explain: bool = typer.Option(
        False,
        "--explain",
        help="Say why each item is there: the score's parts, your "
        "sentences and the attributes that match it, your item most like it.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the items (and explanations) as JSON."),
) -> None:
    """Top-K items from a run's checkpoint, on this machine (no server, no network), for a user of the
    local store, a review history or a free-text description; items nobody reviewed are ranked from
    their metadata."""
    setup_logging(False)
    from dataclasses import asdict

    from client.recommend import RecommendError, store_history
    from client.recommend import recommend as top_items
    from client.secrets import resolve_secret
    from client.store import LocalStore

    errors: tuple[type[Exception], ...] = (*KNOWN_ERRORS, *client_cli.ERRORS)
    try:
        reviews = None
        if (user is None) != (store is None):
            raise RecommendError("--user and --store go together: the user is one of the store's")
        if store is not None and user is not None:
            secret = resolve_secret(
                passphrase_file=passphrase_file, passphrase_env=passphrase_env, key_file=key_file, prompt=True
            )
            reviews = store_history(LocalStore.open(store, secret), user)
        items = top_items(
            run_dir, history=history, text=text, reviews=reviews, k=k, checkpoint=checkpoint, explain=explain
        )
    except errors as err:
        _fail(err)
    if as_json:
        typer.echo(json.dumps([asdict(i) for i in items], indent=2))
        return
    table = Table(title=f"Top {len(items)} from {run_dir} ({checkpoint} checkpoint)")
    for column in ("rank", "item", "title", "category", "price", "score", "stars"):
        table.add_column(column)
    for i in items:
        table.add_row(
            str(i.rank),
            i.item_id,
            i.title,
            i.category,
            "-" if i.price is None else f"{i.price:.2f}",
            f"{i.score:.3f}",
            "-" if i.stars is None else f"{i.stars:.1f}",
        )
    Console().print(table)
    for i in items if explain else ():
        console.print(f"[bold]{i.rank}. {i.title}[/]", highlight=False)
        for line in explanation_lines(i.why):
            console.print(f"   {line}", highlight=False, markup=False)


def explanation_lines(why) -> list[str]:
    """An explanation as lines for people: the parts, the sentences, the attributes, the like."""
    parts = ", ".join(f"{name} {value:+.2f}" for name, value in sorted(why.parts.items(), key=lambda p: -abs(p[1])))
    lines = [f"score parts: {parts}"]
    lines += [f'your words: "{sentence}" (match {similarity:.2f})' for sentence, similarity in why.sentences]
    lines += [f"matches your {attribute}" for attribute in why.attributes]
    if why.like:
        lines.append(f"like your: {why.like}")
    return lines


@app.command()
def audit(
    run_dir: Path = typer.Argument(..., help="The directory of a finished run."),
    device_reports: list[Path] = typer.Option(
        [],
        "--device-report",
        help="A device's audit report, exported by its owner with `privrec client audit "
        "STORE --run N --json` (repeatable; default in simulation: read the simulated devices' stores).",
    ),
    out: Path | None = typer.Option(None, "--out", help="Where to write the report (default RUN_DIR/audit)."),
) -> None:
    """Write the run's privacy audit: report.html (plots embedded), report.json and report.md; exits 1
    when a check fails (claimed and recomputed epsilon differ, a name outside the allow-list left a
    device, a ledger disagrees with the federation)."""
    setup_logging(False)
    from common.report import write_report
    from server.audit import AuditError, collect, load_device_reports

    audit_errors: tuple[type[Exception], ...] = (*KNOWN_ERRORS, AuditError, RuntimeError)
    try:
        report = collect(run_dir, load_device_reports(device_reports) if device_reports else None)
        paths = write_report(report, out or run_dir / "audit")
    except audit_errors as err:
        _fail(err)
    failures = [f for f in report["findings"] if f["severity"] == "failure"]
    for finding in report["findings"]:
        colour = "red" if finding["severity"] == "failure" else "yellow"
        console.print(f"[bold {colour}]{finding['severity']}:[/] {finding['text']}", highlight=False)
    Console().print(
        f"audit of run {report['run']['run-id']}: {len(report['devices'])} device(s), "
        f"{len(failures)} failed check(s); report: {paths['html']}"
    )
    if failures:
        raise typer.Exit(code=1)


@app.command()
def certs(
    out: Path = typer.Argument(..., help="Folder for the credentials (ca.crt, superlink.crt/.key, nodes/)."),
    hosts: list[str] = typer.Option(
        [],
        "--host",
        help="A host name or IP address the SuperNodes dial to reach "
        "the SuperLink (repeatable; goes into its certificate).",
    ),
    nodes: int = typer.Option(0, "--nodes", help="Also make this many SuperNode key pairs (node-1, node-2, ...)."),
    names: list[str] = typer.Option([], "--node", help="Or: make a SuperNode key pair with this name (repeatable)."),
    days: int = typer.Option(365, "--days", help="Validity of the certificates in days."),
    force: bool = typer.Option(False, "--force", help="Replace existing credentials (the old ones stop working)."),
) -> None:
    """Make a deployment's credentials: a CA, the SuperLink's TLS certificate for --host, and SuperNode
    authentication key pairs (EC P-384, OpenSSH) to register with `flwr supernode register`. Private keys
    are written 0600; nothing is overwritten without --force."""
    from common.certificates import CertificateError, make_credentials

    try:
        written = make_credentials(
            out, hosts=hosts, nodes=[*names, *(f"node-{i}" for i in range(1, nodes + 1))], force=force, days=days
        )
    except (CertificateError, OSError) as err:
        _fail(err)
    for path in written:
        Console().print(f"wrote {path}", highlight=False)


@app.command()
def baselines(
    data: Path | None = typer.Option(None, "--data", help="Review JSON lines; default: demo data."),
    items: Path | None = typer.Option(None, "--items", help="Item catalogue; default: demo data."),
    centralised_epochs: int = typer.Option(
        0, "--centralised-epochs", help="Also train the same model centrally for N epochs."
    ),
    config_file: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    settings: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Popularity, EASE and (optionally) centralised training on the same split, side by side."""
    setup_logging(False)
    from common import baselines as bl
    from common.run_data import RunData

    try:
        cfg = build_config(config_file, settings, reviews_path=_str(data), items_path=_str(items))
        run_data = RunData.load(cfg)
        rows = {"popularity": bl.popularity(run_data, k=cfg.eval_k)}
        rows["EASE"], _ = bl.ease(run_data, k=cfg.eval_k)
        if centralised_epochs:
            rows["centralised"] = bl.centralised(cfg, run_data, epochs=centralised_epochs, progress=True).test
    except KNOWN_ERRORS as err:
        _fail(err)
    table = Table(title="Test metrics, full ranking")
    table.add_column("model")
    keys = [k for k in rows["popularity"]]
    for key in keys:
        table.add_column(key)
    for name, metrics in rows.items():
        table.add_row(name, *(f"{metrics[k]:.4f}" for k in keys))
    Console().print(table)


@data_app.command("check")
def data_check(
    data: Path | None = typer.Option(None, "--data", help="Review JSON lines; default: demo data."),
    items: Path | None = typer.Option(None, "--items", help="Item catalogue; default: demo data."),
    on_bad: str = typer.Option("fail", "--on-bad", help="'fail' at the first bad record or 'skip' them."),
    clients: int = typer.Option(5, "--clients", help="Show the partition into this many clients."),
    partition: str = typer.Option("iid", "--partition", help="'iid' or 'dirichlet'."),
) -> None:
    """Validate review and item files and print split and partition statistics."""
    setup_logging(False)
    from common.run_data import RunData

    try:
        cfg = _partition_config(data, items, clients, partition, on_bad_record=on_bad)
        run_data = RunData.load(cfg)
        sizes = [len(run_data.client_users(cfg, i)) for i in range(clients)]
    except KNOWN_ERRORS as err:
        _fail(err)
    report = run_data.data.review_report
    table = Table(title=str(cfg.reviews_file), show_header=False)
    table.add_row("reviews", str(len(run_data.data.reviews)))
    if report is not None:
        table.add_row("bad records skipped", str(report.records_bad))
    table.add_row("users / items", f"{len(run_data.split.train)} / {len(run_data.catalogue)}")
    table.add_row("users with valid / test", f"{len(run_data.split.valid)} / {len(run_data.split.test)}")
    table.add_row(f"users per client ({partition})", ", ".join(map(str, sizes)))
    Console().print(table)


def _partition_config(data: Path | None, items: Path | None, clients: int, partition: str, **extra: Any) -> RunConfig:
    """The settings `data check` and `data split` partition the review file with (default: demo data)."""
    return RunConfig.from_mapping(
        {
            "reviews-path": _str(data) or "",
            "items-path": _str(items) or "",
            "num-clients": clients,
            "partition": partition,
            "min-train-clients": 1,
            **extra,
        }
    )


@data_app.command("split")
def data_split(
    out: Path = typer.Argument(..., help="Folder for client-<k>.jsonl.gz, one review file per device."),
    data: Path | None = typer.Option(None, "--data", help="Review JSON lines; default: demo data."),
    items: Path | None = typer.Option(None, "--items", help="Item catalogue; default: demo data."),
    clients: int = typer.Option(3, "--clients", help="How many devices."),
    partition: str = typer.Option("iid", "--partition", help="'iid' or 'dirichlet' (as in simulation)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the partition."),
    force: bool = typer.Option(False, "--force", help="Replace existing files."),
) -> None:
    """Split a review file into one file per device, as the simulation partitions it: for trying a
    multi-machine deployment with the demo data (each device then runs `privrec client prepare`)."""
    setup_logging(False)
    from common.data import write_reviews
    from common.run_data import RunData

    try:
        cfg = _partition_config(data, items, clients, partition, seed=seed)
        paths = [out / f"client-{k}.jsonl.gz" for k in range(clients)]
        existing = [p for p in paths if p.exists()]
        if existing and not force:
            raise FileExistsError(f"{existing[0]} already exists; pass --force to replace the split")
        run_data = RunData.load(cfg)
        for k, path in enumerate(paths):
            users = set(run_data.client_users(cfg, k))
            write_reviews(path, (r for r in run_data.data.reviews if r.user_id in users))
            Console().print(f"wrote {path} ({len(users)} users)", highlight=False)
    except KNOWN_ERRORS as err:
        _fail(err)


@app.command("config")
def show_config(
    config_file: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    settings: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """List every run setting with its value and meaning (validated)."""
    try:
        cfg = build_config(config_file, settings)
    except KNOWN_ERRORS as err:
        _fail(err)
    table = Table(title="Run settings ([tool.flwr.app.config] keys)")
    for column in ("setting", "value", "meaning"):
        table.add_column(column)
    helps = field_help()
    for key, value in cfg.to_dict().items():
        table.add_row(key, repr(value), helps[key])
    Console().print(table)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def main() -> None:
    """Console entry point. A user's mistake is one line (exit 2, in each command); anything
    unexpected is one line naming its type (exit 1): never a traceback with local variables or
    an exception text, which could hold review text, names or keys. ``PRIVREC_DEBUG=1`` shows the
    plain traceback (still without locals) to whoever runs the command."""
    try:
        app()
    except Exception as err:  # noqa: BLE001 - the last line of defence for private data
        if os.environ.get("PRIVREC_DEBUG"):
            raise
        console.print(
            f"[bold red]error:[/] unexpected {type(err).__name__}; no existing file was replaced. "
            "Set PRIVREC_DEBUG=1 to see the traceback.",
            highlight=False,
        )
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
