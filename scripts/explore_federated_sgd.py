"""What-if explorer: do DP-SGD rounds on top of the federation's DP release gain under the noise?

Issue 12 asks for DP-SGD rounds of the shared towers "only where the explorer shows they gain".
Under ``dp = "distributed"`` such rounds would be one Gaussian mechanism over the whole federation
(each device sums its users' clipped gradients and adds its noise share; SecAgg+ reveals the sum),
so this explorer models exactly that, centrally: every user in every step (sample rate 1), each
user's gradient clipped to 1, Gaussian noise of sigma_sgd once on the sum, mean over all users.

The budget: the product's release (mechanism A of ``explore_release.py``: k = 2 most recent items,
'lin', strength 20) keeps a share f of the RDP budget and T DP-SGD steps get the rest: sigma_A = sigma / sqrt(f) and
sigma_sgd = sigma sqrt(T / (1 - f)), sigma the single-release multiplier for the total epsilon
(Opacus RDP, delta 1e-5); T steps of
multiplier sigma_sgd compose to one release of sigma_sgd / sqrt(T), so the whole run has the single
release's RDP curve (``composed`` in the output checks this with Opacus's RDPAccountant).

Training starts from the zero-shot model with the noised prior as the item offsets, on the frozen
encoder's cached profile vectors (``explore_dp.py``'s simplification: LoRA off). Groups: 'heads'
(both projections + item vectors), 'bias' (offsets), 'heads+bias'. The grid (f, group, T, learning
rate; Adam) is scored on noise draw 0 by validation NDCG@10; the best of each group is rerun on
draws 0, 1, 2 and compared with the release alone at the full budget (f = 1) on the same draws.

    python scripts/explore_federated_sgd.py --epsilon 8     # about 10 minutes on 2 cores
    python scripts/explore_federated_sgd.py --table-only
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from explore_dp import GROUPS, Explorer  # noqa: E402
from common.report_md import replace_section  # noqa: E402
from explore_release import (SEEDS, Study, composed_epsilon, single_multiplier, summary, transform,  # noqa: E402
                             write_json)

log = logging.getLogger("explore_federated_sgd")

OUT = ROOT / "benchmarks" / "explore_federated_sgd.json"
SECTION = "DP-SGD rounds on top of the release: what-if exploration (issue 12)"
PRIOR = {"k": 2, "beta": 20.0}  # the product's defaults ('lin')
SPLITS = (0.5, 0.8)
STEPS = (5, 20)
RATES = {"heads": (0.01, 0.03), "bias": (0.3, 1.0), "heads+bias": (0.01, 0.03)}


class Federated:
    """The release, then T DP-SGD steps over every user, on one noise draw."""

    def __init__(self, explorer: Explorer, study: Study, epsilon: float) -> None:
        self.explorer, self.study = explorer, study
        self.sigma = study.sigma1.get(epsilon) or single_multiplier(epsilon)
        self.users = [u for part in explorer.parts for u in part]

    def run(self, draw: int, f: float, group: str | None = None, steps: int = 0, lr: float = 0.0) -> dict:
        study, ex = self.study, self.explorer
        sigma_a = self.sigma / math.sqrt(f)
        counts = study.counts(PRIOR["k"]) + study.noise[draw][0] * sigma_a * math.sqrt(PRIOR["k"])
        p = {**ex.initial(), "bias": PRIOR["beta"] * transform(counts, "lin")}
        if group is not None:
            sigma_sgd = self.sigma * math.sqrt(steps / (1 - f))
            gen = torch.Generator().manual_seed(1000 + draw)
            p = ex.local(p, self.users, GROUPS[group], batch=0, steps=steps, opt="adam", lr=lr,
                         sigma=sigma_sgd, clip=1.0, rng=random.Random(draw), gen=gen)
            composed = composed_epsilon([sigma_a] + [sigma_sgd] * steps)
        else:
            composed = composed_epsilon([sigma_a])
        return {"valid": ex.evaluate(p, "valid"), "test": ex.evaluate(p, "test"), "composed": composed}


def _ndcg(draws: list[dict]) -> dict:
    """Mean ± std of test NDCG@10 over the draws (the explorer's evaluate gives NDCG only)."""
    s = summary([(r["test"], 0.0) for r in draws])
    return {"ndcg@10": s["ndcg@10"], "ndcg@10-std": s["ndcg@10-std"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epsilon", type=float, nargs="+", default=[8.0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON output (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--table-only", action="store_true", help="only rewrite the results.md section from --out and print it")
    args = parser.parse_args()
    if not args.table_only:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
        torch.set_num_threads(1)
        started = time.perf_counter()
        explorer = Explorer(10)
        study = Study(explorer)
        results = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": []}
        for eps in args.epsilon:
            fed = Federated(explorer, study, eps)
            rows = [r for r in results["rows"] if r["epsilon"] != eps]
            alone = [fed.run(d, 1.0) for d in SEEDS]
            rows.append({"epsilon": eps, "setting": "release alone (f = 1)", "valid": alone[0]["valid"],
                         "test": _ndcg(alone),
                         "composed": round(alone[0]["composed"], 3)})
            for group, rates in RATES.items():
                grid = []
                for f in SPLITS:
                    for steps in STEPS:
                        for lr in rates:
                            r = fed.run(0, f, group, steps, lr)
                            grid.append(({"f": f, "T": steps, "lr": lr}, r))
                            log.info("eps %g %s %s: valid %.4f (composed eps %.3f)", eps, group, grid[-1][0],
                                     r["valid"], r["composed"])
                chosen, first = max(grid, key=lambda g: g[1]["valid"])
                draws = [first] + [fed.run(d, chosen["f"], group, chosen["T"], chosen["lr"]) for d in SEEDS[1:]]
                rows.append({"epsilon": eps, "setting": f"release + DP-SGD on {group}", "chosen": chosen,
                             "valid": first["valid"], "test": _ndcg(draws),
                             "composed": round(first["composed"], 3)})
                log.info("%s", rows[-1])
            results = {"prior": PRIOR, "splits": SPLITS, "steps": STEPS, "rates": RATES, "rows": rows,
                       "seconds": round(time.perf_counter() - started, 1)}
            write_json(args.out, results)
    table = render(json.loads(args.out.read_text()))
    replace_section(ROOT / "benchmarks" / "results.md", SECTION, table)
    print(table)


def render(results: dict) -> str:
    epsilons = " ".join(f"{e:g}" for e in dict.fromkeys(r["epsilon"] for r in results["rows"]))
    lines = [f"Command: `python scripts/explore_federated_sgd.py --epsilon {epsilons}` (2-core CPU). A what-if model of "
             "DP-SGD rounds under `dp = \"distributed\"`: one Gaussian mechanism over all 1,429 users per step "
             "(sample rate 1, clip 1, Adam), after the product's release with a share f of the RDP budget "
             "(the whole run composes to the epsilon shown: 'composed', Opacus RDP, delta 1e-5). Frozen encoder, "
             "cached profiles (`explore_dp.py`'s simplifications). The grid (f in "
             f"{list(results['splits'])}, T in {list(results['steps'])} steps, learning rates "
             f"{json.dumps(results['rates'])}) is chosen on validation of noise draw 0; test over draws 0-2.", "",
             "| epsilon | setting | chosen on valid (draw 0) | composed epsilon | valid NDCG@10 (draw 0) "
             "| test NDCG@10 (draws 0-2) |", "|---|---|---|---|---|---|"]
    for r in results["rows"]:
        t = r["test"]
        lines.append(f"| {r['epsilon']:g} | {r['setting']} | {json.dumps(r.get('chosen', {}))} | {r['composed']} | "
                     f"{r['valid']:.4f} | {t['ndcg@10']:.4f} ± {t['ndcg@10-std']:.4f} |")
    lines.append("")
    for eps in dict.fromkeys(r["epsilon"] for r in results["rows"]):
        rows = [r for r in results["rows"] if r["epsilon"] == eps]
        alone = next(r for r in rows if r["setting"].startswith("release alone"))
        best = max((r for r in rows if r is not alone), key=lambda r: r["valid"])
        verdict = ("gain: worth building" if best["valid"] > alone["valid"] else
                   "no gain on validation: DP-SGD rounds are not run")
        lines.append(f"- Epsilon {eps:g}: the release alone scores validation NDCG@10 {alone['valid']:.4f}; the best "
                     f"release + DP-SGD ({best['setting'][len('release + DP-SGD on '):]}) {best['valid']:.4f}: {verdict}.")
    if results.get("note"):
        lines.append(f"- {results['note']}.")
    return "\n".join(lines)

if __name__ == "__main__":
    main()
