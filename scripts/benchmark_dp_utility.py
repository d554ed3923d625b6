"""Recommendation quality under DP on the real data: NDCG@10 / HR@10 at client epsilon 1, 3, 8
and without DP, and for each upload option (fp16 transport, FFA-LoRA); same seeds, same rounds,
same clients.

Each setting is one federated simulation (``privrec simulate`` with ``dp = "local"`` and that
``target-epsilon``, or with that upload option); test metrics are those of the best validation
round, ranked by the clients themselves. Results are saved after every run
(``benchmarks/dp_utility.json``), and the "DP utility" section of ``benchmarks/results.md`` is
rewritten.

    python scripts/benchmark_dp_utility.py --help
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
DP_RECIPE = ("dp-train", "dp-batch-size", "dp-local-steps", "dp-learning-rate")  # how a DP row trained
log = logging.getLogger("benchmark")


def render(results: dict) -> str:
    """The results.md section."""
    a = results["args"]
    d = results.get("defaults", {})
    lines = [f"Command: `python scripts/benchmark_dp_utility.py` (2-core CPU). Real data, {a['clients']} "
             f"clients (IID, about {1429 // a['clients']} users each), {a['rounds']} rounds, all clients every "
             f"round, {a['local_epochs']} local epoch(s), MiniLM, seed 0; validation on {a['max_eval_users']} "
             "users, test on every user (full ranking) at the best validation round. Without DP: batch "
             f"{d.get('batch-size', 8)}, learning rate {d.get('learning-rate', 2e-3)}. DP: DP-SGD per client "
             f"(Opacus) training `dp-train` = {d.get('dp-train', 'all')}, the unit is one user, Poisson "
             f"sampling with expected batch {d.get('dp-batch-size') or 'all users (q = 1)'}, "
             f"{d.get('dp-local-steps') or 'one epoch of'} steps per round, Adam learning rate "
             f"{d.get('dp-learning-rate', '-')}, max grad norm "
             f"{d.get('max-grad-norm', 1.0)}, delta = 1/(10 x users on the client), noise calibrated once for "
             "the planned rounds, RDP accountant; each DP setting starts from fresh ledgers. Upload bytes "
             "are per client per round as sent.", "",
             "| setting | recipe | epsilon spent (max client) | noise multiplier | best round | NDCG@10 | HR@10 "
             "| upload bytes | minutes |",
             "|---|---|---|---|---|---|---|---|---|"]
    base = results["runs"].get("no DP")
    for name, r in results["runs"].items():
        lines.append(f"| {name} | {_recipe(r, name)} | {r['epsilon'] if r['epsilon'] is not None else '-'} | "
                     f"{r.get('noise-multiplier') or '-'} | {r.get('best-round', '?')} | {r['test']['ndcg@10']:.4f} | "
                     f"{r['test']['hr@10']:.4f} | {r.get('upload-bytes') or 0:,.0f} | {r['seconds'] / 60:.1f} |")
    if base:
        lines.append("")
        for name, r in results["runs"].items():
            if name != "no DP":
                lines.append(f"- {name}: **{r['test']['ndcg@10'] / base['test']['ndcg@10']:.1%}** of the no-DP "
                             "NDCG@10.")
        lines.append("- Targets: at epsilon 8, >= 90% of no DP and above popularity (0.0380 on the same split, "
                     "see Foundation).")
        lines.append("- Best round 0 means that no trained round beat the untrained model (the zero-shot start) "
                     "on validation, so the test row scores the untrained model.")
    return "\n".join(lines)


def _recipe(run: dict, name: str) -> str:
    """How a row was trained, so rows measured under older defaults say so."""
    r = run.get("recipe")
    if r is None:
        return "?"
    model = "" if r.get("item-offsets", True) else " (model before item offsets)"
    if name.startswith("no DP"):
        return f"plain{model}"
    batch = r["dp-batch-size"] or "all users"
    steps = f"{r['dp-local-steps']} steps" if r.get("dp-local-steps") else "1 epoch"
    return f"{r['dp-train']}, batch {batch}, {steps}, lr {r['dp-learning-rate']:g}{model}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--max-eval-users", type=int, default=300)
    parser.add_argument("--epsilons", type=float, nargs="*", default=[8.0, 3.0, 1.0])
    parser.add_argument("--no-uploads", action="store_true", help="skip the no-DP fp16 and FFA-LoRA upload runs")
    parser.add_argument("--scaling-clients", type=int, default=2,
                        help="also run epsilon 8 with this many (larger) clients; 0 = skip")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only these settings (e.g. 'no DP' 'epsilon 8'); keep the others' results")
    parser.add_argument("--render-only", action="store_true", help="rewrite results.md from the JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    path = OUT / "dp_utility.json"
    if args.render_only:
        replace_section(OUT / "results.md", "DP utility (issue 4)", render(json.loads(path.read_text())))
        return
    from server.simulation import simulate

    results = {"args": vars(args), "runs": {}}
    if args.only is not None and path.is_file():
        results["runs"] = json.loads(path.read_text())["runs"]
    settings = [("no DP", {"dp": "none"})] + [(f"epsilon {e:g}", {"dp": "local", "target_epsilon": e})
                                             for e in args.epsilons]
    if args.scaling_clients:  # the same budget with more users per client
        settings.append((f"epsilon 8, {args.scaling_clients} clients",
                         {"dp": "local", "target_epsilon": 8.0, "num_clients": args.scaling_clients}))
    if not args.no_uploads:
        settings += [("no DP, fp16 upload", {"upload_dtype": "float16"}),
                     ("no DP, FFA-LoRA", {"ffa_lora": True})]
    for name, changes in settings:
        if args.only is not None and name not in args.only:
            continue
        base = dict(reviews_path=str(DATA / "reviews.jsonl.gz"), items_path=str(DATA / "items.jsonl"),
                    num_clients=args.clients, num_rounds=args.rounds, local_epochs=args.local_epochs,
                    max_eval_users=args.max_eval_users, patience=0, min_train_clients=2,
                    run_dir=str(OUT / "runs"), stores_dir=str(OUT / "runs" / "stores"))
        cfg = build_config(None, [], **{**base, **changes})
        # Each setting starts from fresh ledgers, as if on new devices: the ledgers persist by
        # design, and a ledger spent at epsilon 8 would (rightly) refuse an epsilon 1 run.
        for ledger in Path(cfg.stores_dir).glob("*/*.ledger"):
            ledger.unlink()
        settings = cfg.to_dict()
        recipe = {k: settings[k] for k in DP_RECIPE}
        results["defaults"] = {**recipe, **{k: settings[k] for k in ("batch-size", "learning-rate", "max-grad-norm")}}
        started = time.perf_counter()
        run = simulate(cfg, run_name=time.strftime(f"dp-utility-{re.sub('[^A-Za-z0-9]+', '-', name)}-%Y%m%d-%H%M%S"))
        summary = json.loads((run / "summary.json").read_text())
        rounds = [r for r in json.loads((run / "metrics.json").read_text()) if r.get("clients")]
        rows = [r for r in rounds if r.get("train-noise-multiplier")]
        results["runs"][name] = {"test": summary["test"], "epsilon": summary.get("epsilon-max") and
                                 round(summary["epsilon-max"], 3), "seconds": time.perf_counter() - started,
                                 "noise-multiplier": rows and round(rows[-1]["train-noise-multiplier"], 3),
                                 "upload-bytes": rounds and rounds[-1]["upload-bytes-per-client"],
                                 "best-round": summary["best-round"],
                                 "recipe": {**recipe, "item-offsets": True},
                                 "run": str(run)}
        path.write_text(json.dumps(results, indent=2))
        replace_section(OUT / "results.md", "DP utility (issue 4)", render(results))
        log.info("%s: %s", name, results["runs"][name])
    print(render(results))


if __name__ == "__main__":
    main()
