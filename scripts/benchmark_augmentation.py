"""Benchmark review-text augmentation (``augment``) in federated training without DP (issue 14).

Real data (../shared/data), 10 clients, the "no DP" recipe of ``benchmark_dp_utility.py`` with
``--rounds`` rounds (default 2), one augmentation option per row at ``augment-rate`` 0.2, seeds
0, 1, 2. Each run's best checkpoint (validation NDCG@10 on 300 users) is rescored on the test split
of every user, each partition's users as their own device would score them (text only, and text +
prior + on-device neighbours, the default fusion). The "none" row is the same recipe without
augmentation. Back-translation is not a row: it needs a translation model, and none is available
offline.

Writes ``benchmarks/augmentation.json`` and the "Review-text augmentation (issue 14)" section of
results.md. Runs go under benchmarks/runs (one simulated federation each, about 8 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.cli import build_config, setup_logging  # noqa: E402
from common.report_md import mean_std, replace_section  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "amazon-musical-instruments-2014"
OUT = ROOT / "benchmarks"
SECTION = "Review-text augmentation (issue 14)"
OPTIONS = ("none", "crop", "edit", "substitute", "mix")
FUSIONS = {"text only": {"text": 1.0}, "text + prior + neighbours": {"text": 1.0, "prior": 1.0, "neighbours": 0.5}}
log = logging.getLogger("benchmark")


def run_config(option: str, seed: int, rounds: int, rate: float):
    """The no-DP benchmark recipe with one augmentation option."""
    return build_config(None, [], reviews_path=str(DATA / "reviews.jsonl.gz"), items_path=str(DATA / "items.jsonl"),
                        num_clients=10, num_rounds=rounds, local_epochs=1, max_eval_users=300, patience=0,
                        min_train_clients=2, seed=seed, dp="none", augment="" if option == "none" else option,
                        augment_rate=rate, run_dir=str(OUT / "runs"), stores_dir=str(OUT / "runs" / "stores"))


def test_rows(cfg, run: Path, data) -> dict[str, dict]:
    """Test HR@10 and NDCG@10 of the run's best checkpoint, per fusion."""
    from scripts.benchmark_recommender import _metrics, device_parts

    users, parts = device_parts(cfg, data, run / "checkpoints" / "best", 1.0)
    return {name: _metrics(sum(w * parts[p] for p, w in recipe.items()), users, data, "test")
            for name, recipe in FUSIONS.items()}


def render(results: dict) -> str:
    """The results.md section."""
    args = results["args"]
    seeds = sorted({r["seed"] for runs in results["runs"].values() for r in runs})
    lines = [f"Measured {results['date']} on 2 CPU cores with `python scripts/benchmark_augmentation.py` "
             f"(seeds {', '.join(map(str, seeds))}): federated, no DP, 10 clients, {args['rounds']} rounds, "
             f"`augment-rate` {args['rate']:g}; each run's best checkpoint rescored on the test split of every user "
             "(each device scoring its own users). Back-translation is not measured: it needs a translation "
             "model, and none is available offline.", "",
             "| augmentation | text only: NDCG@10 | text + prior + neighbours: HR@10 | NDCG@10 | seeds |",
             "|---|---|---|---|---|"]
    for option in OPTIONS:
        runs = results["runs"].get(option, [])
        if not runs:
            continue
        def stat(fusion: str, metric: str) -> str:
            return mean_std([r["test"][fusion][metric] for r in runs])
        lines.append(f"| {option} | {stat('text only', 'ndcg@10')} | {stat('text + prior + neighbours', 'hr@10')} | "
                     f"{stat('text + prior + neighbours', 'ndcg@10')} | {len(runs)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=0.2, help="augment-rate of every row")
    parser.add_argument("--only", nargs="+", choices=OPTIONS, default=list(OPTIONS), help="rows to (re)run")
    parser.add_argument("--reuse", nargs="*", default=[], metavar="SEED=RUN_DIR",
                        help="use an earlier run of the same recipe for the 'none' row of SEED (no training)")
    parser.add_argument("--render-only", action="store_true", help="rewrite results.md from the JSON")
    args = parser.parse_args()
    setup_logging(False)
    path = OUT / "augmentation.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    if not args.render_only:
        from client.policy import SIMULATED_DEVICE
        from client.simulated_devices import prepare_simulated_devices
        from common.run_data import RunData
        from server.simulation import simulate

        results["args"] = {"seeds": args.seeds, "rounds": args.rounds, "rate": args.rate}
        reuse = {int(k): Path(v) for k, v in (item.split("=", 1) for item in args.reuse)}
        data = RunData.load(run_config("none", 0, args.rounds, args.rate))
        for seed in args.seeds:  # seed-major: every option has some seeds if the benchmark is stopped
            for option in args.only:
                cfg = run_config(option, seed, args.rounds, args.rate)
                started = time.perf_counter()
                if option == "none" and seed in reuse:
                    run = reuse[seed]
                else:
                    prepare_simulated_devices(cfg)
                    run = simulate(cfg, device_policy=SIMULATED_DEVICE,
                                   run_name=time.strftime(f"augment-{option}-s{seed}-%Y%m%d-%H%M%S"))
                summary = json.loads((run / "summary.json").read_text())
                entry = {"seed": seed, "run": str(run), "best-round": summary["best-round"],
                         "valid": [r.get("valid-ndcg@10") for r in json.loads((run / "metrics.json").read_text())],
                         "test": test_rows(cfg, run, data), "seconds": round(time.perf_counter() - started)}
                if path.exists():  # another process may have added rows meanwhile (one per seed)
                    results["runs"] = json.loads(path.read_text())["runs"]
                runs = [r for r in results["runs"].get(option, []) if r["seed"] != seed]
                results["runs"][option] = sorted(runs + [entry], key=lambda r: r["seed"])
                results["date"] = time.strftime("%Y-%m-%d")
                path.write_text(json.dumps(results, indent=1))
                replace_section(OUT / "results.md", SECTION, render(results))
                log.info("%s seed %d: %s", option, seed, entry["test"])
    replace_section(OUT / "results.md", SECTION, render(results))
    print(render(results))


if __name__ == "__main__":
    main()
