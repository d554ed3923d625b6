"""Empirical privacy on the real data: canaries in a federation without DP and at epsilon 8 and 1.

One set of canaries (``--canaries`` synthetic users, each joining on a fair coin from OS entropy) is
planted once into the real reviews, so every setting trains on the same data and the same coins.
Each setting is one simulated run (10 clients; without DP: FedAvg of the LoRA towers, 3 rounds;
distributed DP: the release) followed by ``privrec audit``'s attacks on its final global model:
membership inference (threshold and zero-shot-calibrated), ROC AUC, TPR at 1% and 0.1% FPR, the
canaries' exposure and the one-run epsilon lower bound beside the claimed epsilon. Writes
``benchmarks/audit.json`` and the "Privacy audit on the real data" section of ``results.md``.

    python scripts/benchmark_audit.py --canaries 400
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.cli import build_config  # noqa: E402
from common.report_md import replace_section  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "amazon-musical-instruments-2014"
OUT = ROOT / "benchmarks"
SECTION = "Privacy audit on the real data (issue 13)"
SETTINGS = {"no DP": {"dp": "none", "num_rounds": 3}, "distributed DP, epsilon 8": {"target_epsilon": 8.0},
            "distributed DP, epsilon 1": {"target_epsilon": 1.0}}
log = logging.getLogger("benchmark")


def render(results: dict) -> str:
    a = results["args"]
    lines = [f"Command: `python scripts/benchmark_audit.py --canaries {a['canaries']}` (2-core CPU). Real data plus "
             f"{a['canaries']} canaries ({results['included']} joined on fair coins), 10 IID clients, seed {a['seed']}; "
             "every setting trains on the same data and coins. Attacks on the final global model "
             "(`server/attacks.py`): 'threshold' = the model's mean score of a canary's training items given its own "
             "profile; 'calibrated' = the same minus the public zero-shot model's. The lower bound is Steinke, Nasr "
             "and Jagielski (2023), 95% confidence, on the calibrated scores.", "",
             "| setting | claimed epsilon | threshold AUC | threshold TPR at 1% FPR | calibrated AUC "
             "| calibrated TPR at 1% FPR | exposure in / out | lower bound on epsilon | test NDCG@10 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["runs"].items():
        t, c = r["attacks"]["threshold"], r["attacks"]["calibrated"]
        claimed = "none" if r["claimed-epsilon"] is None else f"{r['claimed-epsilon']:.3f}"
        lines.append(f"| {name} | {claimed} | {t['auc']:.3f} | {t['tpr@1%fpr']:.3f} | {c['auc']:.3f} | "
                     f"{c['tpr@1%fpr']:.3f} | {r['exposure']['in']:.2f} / {r['exposure']['out']:.2f} | "
                     f"{r['lower-bound']['epsilon']:.3f} ({r['lower-bound']['correct']} of "
                     f"{r['lower-bound']['guesses']}) | {r['test-ndcg@10']:.4f} |")
    lines += ["", "- Test NDCG@10 here counts the joined canaries' held-out items too (random items, which nobody can "
                  "predict), so it is lower than in the utility tables.",
              "- TPR at 0.1% FPR needs at least 1,000 canaries out to mean anything; with fewer it is the TPR at "
                  "zero false positives (in `audit.json`).",
              "- A lower bound above the claimed epsilon would be a bug in the accounting or the mechanism, never a "
              "result: `privrec audit` marks it as a failure."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--canaries", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0, help="partition and initialisation (not the coins)")
    parser.add_argument("--only", nargs="*", choices=list(SETTINGS), help="run only these settings")
    parser.add_argument("--render-only", action="store_true", help="rewrite results.md from the JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    path = OUT / "audit.json"
    if args.render_only:
        replace_section(OUT / "results.md", SECTION, render(json.loads(path.read_text())))
        return
    from client.policy import SIMULATED_DEVICE
    from client.simulated_devices import reset_ledgers
    from common import canaries
    from common.run_data import load_catalogue
    from server.audit import collect
    from server.simulation import simulate, with_canaries

    work = OUT / "runs" / "audit"
    work.mkdir(parents=True, exist_ok=True)
    base = build_config(None, [], reviews_path=str(DATA / "reviews.jsonl.gz"), items_path=str(DATA / "items.jsonl"),
                        num_clients=10, num_rounds=1, max_eval_users=300, patience=0, min_train_clients=2,
                        seed=args.seed, run_dir=str(work), stores_dir=str(OUT / "runs" / "stores"))
    coins = work / f"canaries-{args.canaries}.json"
    if not coins.is_file():  # one planting for every setting (and for reruns of one)
        canaries.save(coins, canaries.plant(load_catalogue(base).ids, args.canaries))
    planted = canaries.load(coins)
    base = with_canaries(base, planted, work / f"canary-reviews-{args.canaries}.jsonl.gz")
    results = json.loads(path.read_text()) if path.is_file() and args.only else {"runs": {}}
    results.update(args=vars(args), included=sum(c.included for c in planted))
    for name, changes in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        cfg = base.replace(**changes)
        reset_ledgers(cfg, reason=f"benchmark: audit, {name}")
        started = time.perf_counter()
        run = simulate(cfg, device_policy=SIMULATED_DEVICE, run_name=time.strftime(
            f"audit-{re.sub('[^A-Za-z0-9]+', '-', name)}-%Y%m%d-%H%M%S"))
        canaries.save(run / canaries.CANARIES_FILE, planted)
        report = collect(run)
        attacks = report["attacks"]
        results["runs"][name] = {
            "claimed-epsilon": attacks["claimed-epsilon"], "lower-bound": attacks["lower-bound"],
            "exposure": attacks["exposure"],
            "attacks": {k: {m: v[m] for m in ("auc", "tpr@1%fpr", "tpr@0.1%fpr", "negatives")}
                        for k, v in attacks["attacks"].items()},
            "test-ndcg@10": report["run"]["test"]["ndcg@10"], "findings": report["findings"],
            "seconds": round(time.perf_counter() - started, 1), "run": str(run)}
        path.write_text(json.dumps(results, indent=2))
        replace_section(OUT / "results.md", SECTION, render(results))
        log.info("%s: %s", name, results["runs"][name])
    print(render(results))


if __name__ == "__main__":
    main()
