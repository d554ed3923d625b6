"""Benchmark the foundation on real data: popularity, EASE, centralised and federated training.

Prints a table and writes ``benchmarks/foundation.json`` plus the "Foundation" section of
``benchmarks/results.md``. Protocol: leave-last-out split, full ranking over every item the
user has not reviewed in train, test metrics of the round/epoch that was best on validation.

    python scripts/benchmark_foundation.py --help
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import baselines  # noqa: E402
from common.cli import build_config  # noqa: E402
from common.model import build_model  # noqa: E402
from common.run_data import RunData  # noqa: E402
from common.report_md import replace_section  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "amazon-musical-instruments-2014"
log = logging.getLogger("benchmark")


class PeakMemory:
    """Samples the resident memory of this process and all its children (Ray workers too)."""

    def __init__(self, every: float = 0.5) -> None:
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reviews", default=str(DATA / "reviews.jsonl.gz"), help="review file")
    parser.add_argument("--items", default=str(DATA / "items.jsonl"), help="item catalogue")
    parser.add_argument("--clients", type=int, default=20, help="federated clients")
    parser.add_argument("--rounds", type=int, default=10, help="federated rounds")
    parser.add_argument("--fraction-train", type=float, default=0.5, help="clients sampled per round")
    parser.add_argument("--local-epochs", type=int, default=2, help="local epochs per round")
    parser.add_argument("--max-profile-tokens", type=int, default=128, help="profile token budget")
    parser.add_argument("--lora-top-layers", type=int, default=2, help="LoRA on the top N layers")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="AdamW learning rate")
    parser.add_argument("--max-eval-users", type=int, default=500,
                        help="validation users per round (test always uses every user)")
    parser.add_argument("--batch-size", type=int, default=8, help="users per local batch")
    parser.add_argument("--set", dest="settings", action="append", default=[
        "item-embeddings=true", "training-targets=next-item"],
        help="any further run setting as KEY=VALUE (repeatable)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["federated", "centralised"],
                        help="parts to leave out")
    parser.add_argument("--out", default=str(ROOT / "benchmarks"), help="results folder")
    parser.add_argument("--section", default="Foundation (issue 2)",
                        help="section of results.md to write (other sections are kept)")
    parser.add_argument("--json", default="foundation.json", help="file name of the raw results")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the results.md section from the saved JSON without measuring")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        payload = json.loads((out / args.json).read_text())
        replace_section(out / "results.md", args.section, render(payload))
        return 0
    cfg = build_config(None, args.settings, reviews_path=args.reviews, items_path=args.items,
                       num_clients=args.clients, num_rounds=args.rounds,
                       fraction_train=args.fraction_train, local_epochs=args.local_epochs,
                       max_profile_tokens=args.max_profile_tokens, batch_size=args.batch_size,
                       lora_top_layers=args.lora_top_layers, learning_rate=args.learning_rate,
                       max_eval_users=args.max_eval_users, patience=3, run_dir=str(out / "runs"))
    data = RunData.load(cfg)
    full_model_bytes = sum(p.numel() * p.element_size()
                           for p in build_model(cfg, num_items=len(data.catalogue)).parameters())
    rows: dict[str, dict] = {}
    rows["popularity"] = {"test": baselines.popularity(data, k=cfg.eval_k)}
    ease_metrics, lam = baselines.ease(data, k=cfg.eval_k)
    rows["EASE"] = {"test": ease_metrics, "note": f"lambda={lam:g} picked on validation"}

    if "federated" not in args.skip:
        from server.simulation import simulate

        name = time.strftime("federated-%Y%m%d-%H%M%S")
        started = time.perf_counter()
        with PeakMemory() as mem:
            run_path = simulate(cfg, run_name=name)
        summary = json.loads((run_path / "summary.json").read_text())
        history = json.loads((run_path / "metrics.json").read_text())
        trained = [r for r in history if "clients" in r]
        rows["federated"] = {
            "test": summary["test"], "best_round": summary["best-round"],
            "rounds_trained": len(trained),
            "examples_seen": int(sum(r["examples-seen"] for r in trained)),
            "seconds_per_round": _median([r["round-seconds"] for r in trained]),
            "upload_bytes_per_client": _median([r["upload-bytes-per-client"] for r in trained]),
            "peak_rss_bytes": mem.peak, "wall_seconds": time.perf_counter() - started,
            "run_dir": str(run_path.relative_to(ROOT)) if run_path.is_relative_to(ROOT) else str(run_path),
        }

    if "centralised" not in args.skip:
        seen = rows.get("federated", {}).get("examples_seen")
        users = len(data.split.users())
        epochs = max(1, round(seen / users)) if seen else math.ceil(
            args.rounds * args.fraction_train * args.local_epochs)
        started = time.perf_counter()
        with PeakMemory() as mem:
            result = baselines.centralised(cfg.replace(patience=3), data, epochs=epochs)
        rows["centralised"] = {
            "test": result.test, "best_epoch": result.best_epoch, "epochs": result.epochs,
            "epochs_run": len(result.valid_history), "examples_seen": result.examples_seen,
            "seconds_per_epoch": result.seconds_per_epoch, "peak_rss_bytes": mem.peak,
            "wall_seconds": time.perf_counter() - started,
        }

    payload = {"config": cfg.to_dict(), "full_model_bytes": full_model_bytes, "rows": rows,
               "command": " ".join(["python scripts/benchmark_foundation.py", *sys.argv[1:]]),
               "model": cfg.model_dir.name if cfg.model_path else "all-MiniLM-L6-v2",
               "date": time.strftime("%Y-%m-%d"), "machine": f"{psutil.cpu_count()} CPU cores"}
    (out / args.json).write_text(json.dumps(payload, indent=2) + "\n")
    table = render(payload)
    replace_section(out / "results.md", args.section, table)
    log.info("\n%s", table)
    return 0


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return float(values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2) if values else 0.0


def render(payload: dict) -> str:
    """Markdown table of the benchmark payload."""
    cfg, rows = payload["config"], payload["rows"]
    k = cfg["eval-k"]
    lines = [
        f"Measured {payload['date']} on {payload['machine']} (no GPU) with "
        f"`{payload.get('command', 'python scripts/benchmark_foundation.py')}`; times are medians.",
        "",
        f"Data: `{Path(cfg['reviews-path']).parent.name}/{Path(cfg['reviews-path']).name}`, leave-last-out, "
        f"full ranking over unseen items; test metrics (all users) at the best validation round/epoch "
        f"({cfg['max-eval-users'] or 'all'} validation users). Model: {payload['model']} two-tower, LoRA r={cfg['lora-r']} "
        f"on {cfg['lora-targets']} (top {cfg['lora-top-layers'] or 'all'} layers), profile "
        f"{cfg['max-profile-tokens']} tokens, item embeddings {'on' if cfg['item-embeddings'] else 'off'}, "
        f"history item vectors in the user tower {'on' if cfg.get('history-embeddings') else 'off'}, "
        f"{cfg['training-targets']} targets, lr {cfg['learning-rate']}, batch {cfg['batch-size']}.",
        "",
        f"| model | HR@{k} | NDCG@{k} | MRR | examples seen | time | peak RSS | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        t = row["test"]
        time_cell = ""
        if "seconds_per_round" in row:
            time_cell = f"{row['seconds_per_round']:.0f} s/round (median)"
        elif "seconds_per_epoch" in row:
            time_cell = f"{row['seconds_per_epoch']:.0f} s/epoch (median)"
        mem = f"{row['peak_rss_bytes'] / 2**30:.2f} GiB" if "peak_rss_bytes" in row else ""
        note = row.get("note", "")
        if name == "federated":
            note = (f"{cfg['num-clients']} clients, fraction {cfg['fraction-train']}, "
                    f"{cfg['local-epochs']} local epochs; best round {row['best_round']} of "
                    f"{row['rounds_trained']}")
        if name == "centralised":
            note = f"best epoch {row['best_epoch']} of {row['epochs_run']} run (budget {row['epochs']})"
        lines.append(f"| {name} | {t[f'hr@{k}']:.4f} | {t[f'ndcg@{k}']:.4f} | {t['mrr']:.4f} | "
                     f"{row.get('examples_seen', '')} | {time_cell} | {mem} | {note} |")
    if "federated" in rows:
        up = rows["federated"]["upload_bytes_per_client"]
        full = payload["full_model_bytes"]
        lines += ["", f"Upload per client per round: {up / 1e6:.2f} MB of trainable tensors (LoRA, "
                  f"projections, item vectors) vs {full / 1e6:.1f} MB for the full model "
                  f"({100 * up / full:.2f}%). Peak RSS counts this process and its children (Ray "
                  f"workers for the federation)."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
