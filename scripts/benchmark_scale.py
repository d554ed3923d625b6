"""Scale: federations of 10, 100 and 1,000 simulated clients, a fixed number sampled per round.

Each run is N clients x S sampled (``--runs 10x10 100x10 1000x10 1000x50``). Every client is a
small group of users, the same size at every N (``--users-per-client``, default 1.43: the real
data's 1,429 users make 1,000 clients; 10 clients hold 14 users picked with a fixed seed), so that
only the number of clients that exist changes between runs of the same S. Each client is a device
with its own encrypted store; S clients train each round and S form the validation panel
(``fraction-train`` = ``fraction-evaluate`` = S / N); the test asks every client.
``--whole-data`` instead splits all 1,429 users N ways (143 users a client at 10).

DP off (``dp`` = 'none', the FedAvg rounds; the federation's machinery is what is measured), the
default MiniLM model, and a research device policy that answers for a single user (the default
asks for 10 users a reply). Each run in a fresh process (``privrec simulate``'s
path, Ray with one core per client), whose process tree is sampled every 0.2 s for resident memory:
the driver (the ServerApp and Flower's simulation engine), each client worker (Ray actor), and Ray's
own services. Store preparation (anonymising and encrypting every device's reviews, once) is not
timed. Writes ``benchmarks/scale.json`` and a section of ``results.md``.

    python scripts/benchmark_scale.py --rounds 2
    python scripts/benchmark_scale.py --whole-data --runs 10x10 100x10 1000x10 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

DATA = ROOT.parent / "shared" / "data" / "amazon-musical-instruments-2014"
OUT = ROOT / "benchmarks"
SECTION = "Scale: 10, 100 and 1,000 clients (issue 16)"
MIB = 1 << 20
log = logging.getLogger("benchmark-scale")


class MemoryWatch(threading.Thread):
    """Peak resident memory of this process, of each Ray worker and of Ray's services, sampled."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        import psutil

        self.me, self.interval, self.done = psutil.Process(), interval, threading.Event()
        self.driver, self.workers, self.services = 0, {}, 0

    def run(self) -> None:
        import psutil

        while not self.done.is_set():
            try:
                self.driver = max(self.driver, self.me.memory_info().rss)
                services = 0
                for child in self.me.children(recursive=True):
                    try:
                        name, rss = " ".join(child.cmdline()[:3]), child.memory_info().rss
                    except psutil.Error:
                        continue
                    if "ray::" in name or "default_worker.py" in name:
                        self.workers[child.pid] = max(self.workers.get(child.pid, 0), rss)
                    else:
                        services += rss
                self.services = max(self.services, services)
            except psutil.Error:
                pass
            time.sleep(self.interval)

    def peaks(self) -> dict[str, float]:
        self.done.set()
        self.join()
        workers = sorted(self.workers.values())
        return {
            "driver-mib": self.driver / MIB,
            "worker-max-mib": (workers[-1] if workers else 0) / MIB,
            "workers": len(workers),
            "ray-services-mib": self.services / MIB,
        }


def reviews_for(clients: int, users_per_client: float | None, work: Path) -> Path:
    """The real reviews of ``clients`` x ``users_per_client`` users (fixed seed), or all of them."""
    import random

    from common.data import load_dataset, write_reviews

    source = DATA / "reviews.jsonl.gz"
    data = load_dataset(source, DATA / "items.jsonl")
    users = sorted({r.user_id for r in data.reviews})
    wanted = len(users) if users_per_client is None else round(clients * users_per_client)
    if wanted >= len(users):
        return source
    chosen = set(random.Random(0).sample(users, wanted))
    target = work / "data" / f"reviews-{wanted}-users.jsonl.gz"
    if not target.is_file():
        write_reviews(target, [r for r in data.reviews if r.user_id in chosen])
    return target


def config(clients: int, sample: int, rounds: int, reviews: Path, stores: Path, runs: Path):
    from common.cli import build_config

    share = min(1.0, sample / clients)
    return build_config(
        None,
        [],
        reviews_path=str(reviews),
        items_path=str(DATA / "items.jsonl"),
        num_clients=clients,
        num_rounds=rounds,
        dp="none",
        fraction_train=share,
        fraction_evaluate=share,
        min_train_clients=min(2, clients),
        patience=0,
        stores_dir=str(stores),
        run_dir=str(runs),
    )


def one(clients: int, sample: int, rounds: int, users_per_client: float | None, work: Path) -> dict:
    """Run the federation of ``clients`` in this process; its timings and memory peaks."""
    from client.policy import PrivacyPolicy
    from client.simulated_devices import prepare_simulated_devices, reset_ledgers
    from common.cli import setup_logging
    from server.simulation import simulate

    setup_logging(False, run=True)
    reviews = reviews_for(clients, users_per_client, work)
    cfg = config(clients, sample, rounds, reviews, work / "stores", work / "runs")
    started = time.perf_counter()
    prepare_simulated_devices(cfg, progress=False)  # once per partitioning; not timed
    reset_ledgers(cfg, reason="benchmark: a new federation")
    prepared = time.perf_counter() - started
    policy = PrivacyPolicy(require_dp=False, eval_noise_multiplier=0.0, min_users_per_reply=1)
    watch = MemoryWatch()
    watch.start()
    run = simulate(
        cfg,
        run_name=f"scale-{clients}x{sample}",
        cpus_per_client=1,
        progress=False,
        device_policy=policy,
        worker_logs=False,
    )
    memory = watch.peaks()
    history = json.loads((run / "metrics.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    trained = [r for r in history if r["round"] >= 1]
    from common.run_data import RunData

    return {
        "clients": clients,
        "users": len(RunData.load(cfg).split.users()),
        "sampled": min(sample, clients),
        "prepare-seconds": prepared,
        "round-seconds": [r.get("round-seconds", 0.0) + r.get("valid-eval-seconds", 0.0) for r in trained],
        "train-seconds": [r.get("round-seconds", 0.0) for r in trained],
        "valid-seconds": [r.get("valid-eval-seconds", 0.0) for r in trained],
        "clients-per-round": [r.get("clients", 0) for r in trained],
        "test-seconds": summary["test"]["eval-seconds"],
        "test-clients": summary["test"]["clients"],
        "wall-seconds": summary["wall-seconds"],
        "valid-ndcg@10": [r.get("valid-ndcg@10") for r in trained],
        **memory,
    }


def table(runs: list[dict]) -> list[str]:
    rows = [
        "| clients | users | sampled a round | round (s) | of it training (s) | validation (s) "
        "| test, every client (s) | driver peak (MiB) | worker peak (MiB) | Ray services (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        rows.append(
            f"| {r['clients']:,} | {r.get('users', 1429):,} | {r['sampled']} "
            f"| {statistics.median(r['round-seconds']):.1f} "
            f"| {statistics.median(r['train-seconds']):.1f} | {statistics.median(r['valid-seconds']):.1f} "
            f"| {r['test-seconds']:.1f} | {r['driver-mib']:.0f} | {r['worker-max-mib']:.0f} "
            f"| {r['ray-services-mib']:.0f} |"
        )
    return rows


def growth(runs: list[dict]) -> str:
    """How round time and memory change with the clients that exist (same sample) and sampled."""
    same = [r for r in runs if r["sampled"] == runs[0]["sampled"]]
    first, last = same[0], same[-1]

    def ratio(key: str, a: dict, b: dict) -> float:
        def value(r: dict) -> float:
            return statistics.median(r[key]) if isinstance(r[key], list) else r[key]

        return value(b) / value(a)

    text = (
        f"From {first['clients']:,} to {last['clients']:,} clients ({first['sampled']} sampled): round time "
        f"x{ratio('round-seconds', first, last):.2f}, driver memory x{ratio('driver-mib', first, last):.2f}, "
        f"worker memory x{ratio('worker-max-mib', first, last):.2f}."
    )
    more = [r for r in runs if r["clients"] == last["clients"] and r["sampled"] > last["sampled"]]
    if more:
        text += (
            f" At {last['clients']:,} clients, sampling {more[0]['sampled']} instead of {last['sampled']}: round time "
            f"x{ratio('round-seconds', last, more[0]):.2f}."
        )
    return text


def render(results: dict) -> str:
    runs = " ".join(f"{r['clients']}x{r['sampled']}" for r in results["runs"])
    lines = [
        f"`python scripts/benchmark_scale.py --runs {runs} --rounds {results['rounds']}` ({results['machine']}). "
        "Real data, dp 'none', the default MiniLM model, one core per client worker (2 workers); clients of "
        f"{results['users-per-client']} users on average at every size; round = training plus the validation "
        "panel (as many clients as are sampled), median over the rounds; memory = peak resident set, sampled "
        "every 0.2 s: the driver (ServerApp and Flower's simulation engine), the largest Ray worker, Ray's services.",
        "",
        *table(results["runs"]),
        "",
        growth(results["runs"]),
        "The test asks every client, so it grows with the clients that exist, by design (each device scores its "
        "own users).",
    ]
    if results.get("whole-data"):
        whole = results["whole-data"]
        specs = " ".join(f"{r['clients']}x{r['sampled']}" for r in whole)
        lines += [
            "",
            f"The whole data set split N ways instead (`--whole-data --runs {specs}`): a client's share shrinks as "
            "N grows, "
            "so its work per round does too.",
            "",
            *table(whole),
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", nargs="+", default=["10x10", "100x10", "1000x10", "1000x50"], help="federations as CLIENTSxSAMPLED"
    )
    parser.add_argument("--users-per-client", type=float, default=1.43, help="users a client holds, at every size")
    parser.add_argument("--whole-data", action="store_true", help="split all users N ways instead")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per run")
    parser.add_argument("--work", type=Path, default=OUT / "runs" / "scale", help="stores and runs folder")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one CLIENTSxSAMPLED in this process
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    users_per_client = None if args.whole_data else args.users_per_client
    if args.one:
        clients, sample = map(int, args.one.split("x"))
        print(json.dumps(one(clients, sample, args.rounds, users_per_client, args.work)))
        return
    import shutil

    shutil.rmtree(args.work / "runs", ignore_errors=True)
    runs = []
    for spec in args.runs:
        log.info("%s clients x sampled ...", spec)
        command = [
            sys.executable,
            __file__,
            "--one",
            spec,
            "--rounds",
            str(args.rounds),
            "--work",
            str(args.work),
            "--users-per-client",
            str(args.users_per_client),
            *(["--whole-data"] if args.whole_data else []),
        ]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{spec} failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        log.info("%s", runs[-1])
    from common.report_md import replace_section

    path = OUT / "scale.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    key = "whole-data" if args.whole_data else "runs"
    results.update(
        {
            key: runs,
            "rounds": args.rounds,
            "users-per-client": args.users_per_client,
            "machine": f"{__import__('os').cpu_count()} cores, CPU",
        }
    )
    OUT.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    if "runs" in results:
        replace_section(OUT / "results.md", SECTION, render(results))
        print(render(results))


if __name__ == "__main__":
    main()
