"""Scale: a federation of 10, 100 and 1,000 simulated clients, the same number sampled per round.

The real data's users split into N clients (1,429 users: about 143 per client at 10, 1.4 at 1,000),
each a device with its own encrypted store; ``--sample`` clients train each round and the same
number form the validation panel (``fraction-train`` = ``fraction-evaluate`` = sample / N); the test
asks every client. DP off (``dp`` = 'none', the FedAvg rounds; the federation's machinery is what
is measured), the default MiniLM model, and a research device policy that answers for a single user
(the default asks for 10 users a reply). Each N runs in a fresh process (``privrec simulate``'s
path, Ray with one core per client), whose process tree is sampled every 0.2 s for resident memory:
the driver (the ServerApp and Flower's simulation engine), each client worker (Ray actor), and Ray's
own services. Store preparation (anonymising and encrypting every device's reviews, once) is not
timed. Writes ``benchmarks/scale.json`` and a section of ``results.md``.

    python scripts/benchmark_scale.py --clients 10 100 1000 --sample 10 --rounds 3
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
        self.worker_count = 0

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


def config(clients: int, sample: int, rounds: int, stores: Path, runs: Path):
    from common.cli import build_config

    share = min(1.0, sample / clients)
    return build_config(None, [], reviews_path=str(DATA / "reviews.jsonl.gz"), items_path=str(DATA / "items.jsonl"),
                        num_clients=clients, num_rounds=rounds, dp="none", fraction_train=share,
                        fraction_evaluate=share, min_train_clients=min(2, clients), patience=0,
                        stores_dir=str(stores), run_dir=str(runs))


def one(clients: int, sample: int, rounds: int, work: Path) -> dict:
    """Run the federation of ``clients`` in this process; its timings and memory peaks."""
    from client.policy import PrivacyPolicy
    from client.simulated_devices import prepare_simulated_devices, reset_ledgers
    from common.cli import setup_logging
    from server.simulation import simulate

    setup_logging(False, run=True)
    cfg = config(clients, sample, rounds, work / "stores", work / "runs")
    started = time.perf_counter()
    prepare_simulated_devices(cfg, progress=False)  # once per partitioning; not timed
    reset_ledgers(cfg, reason="benchmark: a new federation")
    prepared = time.perf_counter() - started
    policy = PrivacyPolicy(require_dp=False, eval_noise_multiplier=0.0, min_users_per_reply=1)
    watch = MemoryWatch()
    watch.start()
    run = simulate(cfg, run_name=f"scale-{clients}", cpus_per_client=1, progress=False, device_policy=policy,
                   worker_logs=False)
    memory = watch.peaks()
    history = json.loads((run / "metrics.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    trained = [r for r in history if r["round"] >= 1]
    return {
        "clients": clients,
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


def render(results: dict) -> str:
    rows = [
        "| clients | sampled a round | round (s) | of it training (s) | validation (s) | test, every client (s) "
        "| driver peak (MiB) | worker peak (MiB) | workers | Ray services (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        rows.append(
            f"| {r['clients']:,} | {r['sampled']} | {statistics.median(r['round-seconds']):.1f} "
            f"| {statistics.median(r['train-seconds']):.1f} | {statistics.median(r['valid-seconds']):.1f} "
            f"| {r['test-seconds']:.1f} | {r['driver-mib']:.0f} | {r['worker-max-mib']:.0f} | {r['workers']} "
            f"| {r['ray-services-mib']:.0f} |"
        )
    first, last = results["runs"][0], results["runs"][-1]
    growth = {
        "round": statistics.median(last["round-seconds"]) / statistics.median(first["round-seconds"]),
        "driver": last["driver-mib"] / first["driver-mib"],
        "worker": last["worker-max-mib"] / first["worker-max-mib"],
    }
    return "\n".join(
        [
            f"`python scripts/benchmark_scale.py --clients {' '.join(str(r['clients']) for r in results['runs'])} "
            f"--sample {results['sample']} --rounds {results['rounds']}` ({results['machine']}). Real data, "
            "dp 'none', the default MiniLM model; round = training plus the validation panel, median over the "
            "rounds; memory = peak resident set, sampled every 0.2 s.",
            "",
            *rows,
            "",
            f"From {first['clients']:,} to {last['clients']:,} clients: round time x{growth['round']:.2f}, driver "
            f"memory x{growth['driver']:.2f}, worker memory x{growth['worker']:.2f}. The test asks every client, so "
            "it grows with the clients that exist, by design (each device scores its own users).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000], help="federation sizes")
    parser.add_argument("--sample", type=int, default=10, help="clients trained (and validating) per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per run")
    parser.add_argument("--work", type=Path, default=OUT / "runs" / "scale", help="stores and runs folder")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size in this process
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.one:
        print(json.dumps(one(args.one, args.sample, args.rounds, args.work)))
        return
    import shutil

    shutil.rmtree(args.work / "runs", ignore_errors=True)
    runs = []
    for clients in args.clients:
        log.info("%d clients ...", clients)
        command = [sys.executable, __file__, "--one", str(clients), "--sample", str(args.sample), "--rounds",
                   str(args.rounds), "--work", str(args.work)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{clients} clients failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        log.info("%s", runs[-1])
    from common.report_md import replace_section

    results = {"sample": args.sample, "rounds": args.rounds, "runs": runs,
               "machine": f"{__import__('os').cpu_count()} cores, CPU"}
    OUT.mkdir(exist_ok=True)
    (OUT / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    replace_section(OUT / "results.md", SECTION, render(results))
    print(render(results))


if __name__ == "__main__":
    main()
