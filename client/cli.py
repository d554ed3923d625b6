"""``privrec client ...``: what a device owner runs on their own machine.

prepare            raw reviews -> anonymised, pseudonymised, encrypted local store (+ ledger, policy)
inspect            what a store holds (counts only) and what it has spent, after unlocking it
audit              the transparency log: every reply that left the device, and what it cost
policy             show and check a device privacy policy, or write the strict default one
change-passphrase  re-encrypt a store under a new passphrase or key file, safely
new-key            make a random key file (an alternative to a passphrase)
node               join a deployed federation: Flower's SuperNode on this store, with a status line

Passphrases come from a file, an environment variable or a prompt, never from the command line.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from client.encryption import EncryptionError, KdfSettings, make_key_file, read_header
from client.policy import PrivacyPolicy, policy_path
from client.privacy_ledger import LedgerKey, PrivacyLedger, ledger_path
from client.secrets import resolve_secret
from client.store import LocalStore, StoreError
from client.transparency import device_report
from common.data import DataError

app = typer.Typer(
    help="On-device commands: prepare, inspect and re-key the encrypted local store; set its privacy policy.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
log = logging.getLogger("privrec")
console = Console(stderr=True)

# ValueError covers PrepareError; RuntimeError covers AnonymiserError (both imported lazily:
# Presidio and spaCy take seconds to import and only `prepare` needs them).
ERRORS = (EncryptionError, StoreError, DataError, FileNotFoundError, FileExistsError, ValueError, RuntimeError)
PASS_FILE = typer.Option(
    None, "--passphrase-file", help="File holding the passphrase (its whole text, less one final newline)."
)
PASS_ENV = typer.Option(None, "--passphrase-env", help="Name of an environment variable holding the passphrase.")
KEY_FILE = typer.Option(None, "--key-file", help="Key file (64 hex characters) instead of a passphrase.")
KDF_HELP = "Passphrase key derivation: 'argon2id' (default, 64 MiB) or 'scrypt'."


@app.callback()
def _logging(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    from common.cli import setup_logging

    setup_logging(verbose)


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _kdf(name: str) -> KdfSettings:
    return KdfSettings(name=name)


@app.command()
def prepare(
    reviews: Path = typer.Option(..., "--reviews", help="This client's reviews, JSON lines (.gz ok)."),
    items: Path = typer.Option(..., "--items", help="The item catalogue, JSON lines."),
    out: Path = typer.Option(..., "--out", help="The encrypted store to write."),
    passphrase_file: str | None = PASS_FILE,
    passphrase_env: str | None = PASS_ENV,
    key_file: str | None = KEY_FILE,
    pii_model: str = typer.Option(
        "auto", "--pii-model", help="spaCy pipeline for names/places: 'auto', 'none' (pattern-only) or a name/path."
    ),
    kdf: str = typer.Option("argon2id", "--kdf", help=KDF_HELP),
    on_bad: str = typer.Option("fail", "--on-bad", help="'fail' at the first bad record or 'skip' them (counted)."),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing store (kept until the new one is complete)."
    ),
) -> None:
    """Validate, anonymise and encrypt this client's reviews into its local store.

    Personal data in summaries and texts is replaced by <TYPE> tokens (Presidio), the user's own
    display names wherever they appear; user ids become keyed pseudonyms. Only counts are kept.
    """
    from client.prepare import prepare_store

    try:
        secret = resolve_secret(
            passphrase_file=passphrase_file, passphrase_env=passphrase_env, key_file=key_file, prompt=True, confirm=True
        )
        meta = prepare_store(reviews, items, out, secret, model=pii_model, kdf=_kdf(kdf), force=force, on_bad=on_bad)
    except ERRORS as err:
        _fail(err)
    _print_metadata(meta.public(), title=f"prepared {out}")
    console.print(
        f"privacy ledger: {ledger_path(out)}; privacy policy: {policy_path(out)} (review it: "
        "the client refuses runs that ask for less)",
        highlight=False,
    )


@app.command()
def inspect(
    store: Path = typer.Argument(..., help="The encrypted store."),
    passphrase_file: str | None = PASS_FILE,
    passphrase_env: str | None = PASS_ENV,
    key_file: str | None = KEY_FILE,
    as_json: bool = typer.Option(False, "--json", help="Print the metadata as JSON."),
) -> None:
    """Unlock a store and show its metadata (anonymiser, PII counts, users, reviews; no text), its
    privacy policy and what its ledger says it has spent."""
    try:
        header = read_header(store)
        metadata, rules, ledger = _unlock(store, passphrase_file, passphrase_env, key_file)
    except ERRORS as err:
        _fail(err)
    meta = metadata.public()
    meta["privacy-policy"] = rules.to_dict()
    meta["privacy-spent"] = {
        "epsilon": round(ledger.epsilon(rules), 4),
        "delta": rules.delta,
        "budget": rules.epsilon_budget,
        "releases": len(ledger.events),
        "rounds-without-dp": ledger.rounds_without_dp,
        "ledger-version": ledger.version,
    }
    meta["encryption"] = {
        "format-version": header.version,
        "kdf": header.kdf_name,
        "kdf-params": header.kdf_params,
        "chunk-size": header.chunk_size,
    }
    if as_json:
        typer.echo(json.dumps(meta, indent=2))
    else:
        _print_metadata(meta, title=str(store))


@app.command()
def audit(
    store: Path = typer.Argument(..., help="The encrypted store."),
    passphrase_file: str | None = PASS_FILE,
    passphrase_env: str | None = PASS_ENV,
    key_file: str | None = KEY_FILE,
    run: int | None = typer.Option(None, "--run", help="Only the replies of this run id."),
    as_json: bool = typer.Option(False, "--json", help="Print the device's audit report as JSON."),
) -> None:
    """Show exactly what left this device: every reply (run, round, message, each tensor's name and
    shape, each metric's name and value, bytes) and the epsilon each message charged. --json writes
    the device's audit report (data handling, policy, ledger, replies; counts only) for `privrec audit`."""
    try:
        header = read_header(store)
        metadata, rules, ledger = _unlock(store, passphrase_file, passphrase_env, key_file)
        if not ledger.has_log:
            raise StoreError(
                f"{ledger.path} has no transparency log yet: it was last written before PrivRec "
                "recorded what leaves a device; the replies of the next round will be on it"
            )
    except ERRORS as err:
        _fail(err)
    report = device_report(store, metadata, header, rules, ledger, run=run)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    sent, spent = report["sent"], report["ledger"]["epsilon-spent"]
    table = Table(title=f"{store}: what left this device")
    for column in ("#", "when (UTC)", "run", "round", "message", "bytes", "tensors", "metrics", "epsilon charged"):
        table.add_column(column, overflow="fold")
    for e in sent:
        tensors = "\n".join(f"{name} {tuple(shape)} {dtype}" for name, shape, dtype, _ in e.get("tensors", []))
        metrics = "\n".join(f"{name}={value:.6g}" for name, value in e.get("metrics", {}).items())
        message = (
            e["message"]
            + (f" ({e['stage']})" if e.get("stage") else "")
            + (f" error {e['error']}" if "error" in e else "")
        )
        charged = e.get("epsilon-charged")
        table.add_row(
            str(e["seq"]),
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["time"])),
            str(e["run"]),
            str(e["round"]),
            message,
            f"{e.get('bytes', 0):,}",
            tensors,
            metrics,
            "?" if charged is None else f"{charged:.4f}",
        )
    Console().print(table)
    console.print(
        f"{len(sent)} replies, {sum(int(e.get('bytes', 0)) for e in sent):,} bytes; epsilon spent {spent:.3f} of "
        f"{rules.epsilon_budget:g} (delta {rules.delta:g})",
        highlight=False,
    )


@app.command()
def policy(
    path: Path = typer.Argument(..., help="A policy file (`<store>.policy.toml` beside a store)."),
    write: bool = typer.Option(False, "--write", help="Write the strict default policy to PATH."),
    force: bool = typer.Option(False, "--force", help="With --write: replace an existing policy file."),
) -> None:
    """Show and check a device's privacy policy, or write the strict default one to edit."""
    try:
        if write:
            PrivacyPolicy().write(path, force=force)
        chosen = PrivacyPolicy.load(path)
    except ERRORS as err:
        _fail(err)
    table = Table(title=f"{path}: {chosen.describe()}", show_header=False)
    for key, value in chosen.to_dict().items():
        table.add_row(key, str(value))
    Console().print(table)


@app.command("change-passphrase")
def change_passphrase(
    store: Path = typer.Argument(..., help="The encrypted store."),
    passphrase_file: str | None = PASS_FILE,
    passphrase_env: str | None = PASS_ENV,
    key_file: str | None = KEY_FILE,
    new_passphrase_file: str | None = typer.Option(None, "--new-passphrase-file", help="File with the new passphrase."),
    new_passphrase_env: str | None = typer.Option(
        None, "--new-passphrase-env", help="Variable with the new passphrase."
    ),
    new_key_file: str | None = typer.Option(None, "--new-key-file", help="New key file instead of a passphrase."),
    kdf: str = typer.Option("argon2id", "--kdf", help=KDF_HELP),
) -> None:
    """Re-encrypt a store under a new secret; the old file stays until the new one is verified.

    The store's privacy ledger stays valid: its key comes from the store's content, not from
    the passphrase."""
    from client.encryption import change_secret

    try:
        old = resolve_secret(
            passphrase_file=passphrase_file, passphrase_env=passphrase_env, key_file=key_file, prompt=True
        )
        new = resolve_secret(
            passphrase_file=new_passphrase_file,
            passphrase_env=new_passphrase_env,
            key_file=new_key_file,
            prompt=True,
            confirm=True,
        )
        change_secret(store, old, new, kdf=_kdf(kdf))
    except ERRORS as err:
        _fail(err)
    console.print(f"{store}: re-encrypted under the new {new.kind}")


@app.command("new-key")
def new_key(
    path: Path = typer.Argument(..., help="Where to write the key file (mode 0600)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing key file (its stores become unreadable!)."),
) -> None:
    """Write a random 256-bit key file to unlock stores with instead of a passphrase."""
    try:
        make_key_file(path, force=force)
    except ERRORS as err:
        _fail(err)
    console.print(f"wrote {path}; keep it secret and backed up: without it the store cannot be read")


@app.command()
def node(
    store: Path = typer.Argument(..., help="This device's encrypted store (from `privrec client prepare`)."),
    superlink: str = typer.Option(..., "--superlink", help="The SuperLink's HOST:PORT (its Fleet API)."),
    ca: Path | None = typer.Option(None, "--ca", help="The federation's CA certificate (ca.crt from `privrec certs`)."),
    auth_key: Path | None = typer.Option(
        None,
        "--auth-key",
        help="This node's private key (registered by the operator with `flwr supernode register KEY.pub`).",
    ),
    passphrase_file: str | None = PASS_FILE,
    passphrase_env: str | None = PASS_ENV,
    key_file: str | None = KEY_FILE,
    policy_file: Path | None = typer.Option(
        None, "--policy", help="This device's privacy policy (default: the one beside the store)."
    ),
    device: str = typer.Option("auto", "--device", help="Where to compute: 'auto' (CUDA if present), 'cpu', 'cuda'."),
    port: int = typer.Option(
        9094, "--port", help="Local port of the SuperNode's ClientApp API (one per node on a machine)."
    ),
    insecure: bool = typer.Option(False, "--insecure", help="No TLS: for a trial on one machine only (warns)."),
) -> None:
    """Join a deployed federation: run Flower's SuperNode for this store (TLS, node authentication),
    reconnecting when the SuperLink restarts, with one status line per change (connected, waiting,
    training round r, epsilon spent). Its full log goes beside the store. Stop it with Ctrl+C."""
    from client.node import NodeError, NodeSettings, flwr_exit_hint, run_node

    settings = NodeSettings(
        store=store,
        superlink=superlink,
        root_certificates=ca,
        auth_key=auth_key,
        key_file=key_file,
        passphrase_file=passphrase_file,
        passphrase_env=passphrase_env,
        policy=policy_file,
        device=device,
        port=port,
        insecure=insecure,
    )
    try:
        settings.check()
        secret = resolve_secret(passphrase_file=passphrase_file, passphrase_env=passphrase_env, key_file=key_file)
        metadata = LocalStore.open(store, secret).metadata  # a wrong secret fails here, not in every round
        rules = PrivacyPolicy.load(policy_file or policy_path(store))
    except (*ERRORS, NodeError) as err:
        _fail(err)
    if insecure:
        console.print(
            "[bold yellow]warning:[/] --insecure: no TLS, so anyone on the network path can read and "
            "change what this node sends; use it only on one machine",
            highlight=False,
            soft_wrap=True,
        )
    key = LedgerKey.of_store(metadata.pseudonym_key)

    def epsilon() -> float | None:
        try:
            return PrivacyLedger.open(store, key).epsilon(rules)
        except (*ERRORS, OSError):
            return None

    code = run_node(
        settings,
        epsilon=epsilon,
        show=lambda line: Console().print(line, highlight=False, soft_wrap=True),
        log_path=store.with_name(store.name + ".node.log"),
    )
    if code not in (0, -2, -15, 130, 143):  # stopped, Ctrl+C or SIGTERM
        console.print(f"[bold red]error:[/] {flwr_exit_hint(code)}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1)


def _unlock(store: Path, passphrase_file: str | None, passphrase_env: str | None, key_file: str | None) -> tuple:
    """(metadata, policy, ledger) of a store, after unlocking it."""
    secret = resolve_secret(
        passphrase_file=passphrase_file, passphrase_env=passphrase_env, key_file=key_file, prompt=True
    )
    metadata = LocalStore.open(store, secret).metadata
    rules = PrivacyPolicy.load(policy_path(store))
    return metadata, rules, PrivacyLedger.open(store, LedgerKey.of_store(metadata.pseudonym_key))


def _print_metadata(meta: dict, *, title: str) -> None:
    table = Table(title=title, show_header=False)
    for key, value in meta.items():
        shown = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        table.add_row(key, shown)
    Console().print(table)
    for warning in meta.get("warnings", []):
        console.print(f"[bold yellow]warning:[/] {warning}")
