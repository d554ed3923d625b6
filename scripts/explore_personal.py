"""What-if explorer for on-device personalisation after the federation's DP release.

The question (issue 12, item 3): once the federation has released its DP popularity prior, what can
each device add from its own users' data, which it never sends and so costs no privacy against the
server? Every option is scored on top of mechanism A of ``explore_release.py`` (zero-shot text model
+ the product's default prior: k = 2 most recent items, 'lin', strength 20), with the prior exact, and
noised at epsilon 8 and 1 (draws 0, 1, 2 as in ``explore_release.py``):

* ``local-ease``: each client fits EASE on the Gram matrix of its own users' full training histories
  (exact; about 143 users of the 10-client partition), scores its users with it, divides the scores
  by their standard deviation over its users and adds gamma x that. Grid: lambda, gamma.
* ``local-cooc``: the same with the client's item-item cosine co-occurrence (item-kNN) instead of
  EASE (no ridge; fewer numbers to fit on ~143 users).
* ``text-knn``: no client statistics at all: the cosine similarity of the frozen encoder's item
  vectors (public item metadata), summed over the user's own history items (zero cost even
  without DP). Grid: gamma.
* ``text-knn + local-cooc``: both, mixed (``mix`` x text + (1 - mix) x co-occurrence, normalised).

Hyper-parameters are chosen on validation NDCG@10 (mean over the draws) per epsilon; test is
reported at that choice, mean ± std over the draws. Partition: the product's IID 10-client
partition at seed 0 (``Explorer``).

    python scripts/explore_personal.py            # about a minute once explore_dp's profile cache exists
    python scripts/explore_personal.py --table-only
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from explore_dp import Explorer  # noqa: E402
from common.report_md import replace_section  # noqa: E402
from explore_release import SEEDS, Study, a_prior, summary, write_json  # noqa: E402

log = logging.getLogger("explore_personal")

OUT = ROOT / "benchmarks" / "explore_personal.json"
SECTION = "On-device personalisation what-if exploration (issue 12)"
EPSILONS = (None, 8.0, 1.0)  # None: the exact prior
PRIOR = {"k": 2, "T": "lin", "beta": 20.0}  # the product's defaults
LAMBDAS = (5.0, 20.0, 50.0, 200.0, 500.0)
GAMMAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def _normalised(scores: torch.Tensor) -> torch.Tensor:
    sd = float(scores.std())
    return scores / sd if sd > 0 else torch.zeros_like(scores)


class Personal:
    """Per-user extra scores [users, items] of each on-device option, from the clients' own users."""

    def __init__(self, study: Study, explorer: Explorer) -> None:
        self.study, self.parts = study, [torch.tensor(p) for p in explorer.parts]
        items = torch.nn.functional.normalize(explorer.items.float(), dim=-1)
        self.text_sim = (items @ items.T).fill_diagonal_(0.0)

    def local(self, kind: str, lam: float = 0.0) -> torch.Tensor:
        out = torch.zeros(self.study.users, self.study.items)
        for rows in self.parts:
            x = self.study.full[rows].double()
            gram = x.T @ x
            if kind == "ease":
                p = torch.linalg.inv(gram + lam * torch.eye(len(gram), dtype=torch.float64))
                w = -p / p.diagonal()
            else:  # cosine co-occurrence
                norm = gram.diagonal().clamp(min=1.0).sqrt()
                w = gram / norm[:, None] / norm[None, :]
            w.fill_diagonal_(0.0)
            out[rows] = _normalised((x @ w).float())
        return out

    def text_knn(self) -> torch.Tensor:
        return _normalised(self.study.full @ self.text_sim)


def score(study: Study, part: str, extra: torch.Tensor | None, gamma: float, eps: float | None) -> list[tuple[float, float]]:
    sigma = None if eps is None else study.sigma1[eps]
    draws = SEEDS if eps is not None else (0,)
    ok = study.rankers[part].ok
    out = []
    for seed in draws:
        s = study.zero_rows[part].clone() + a_prior(study, PRIOR, sigma, seed)
        if extra is not None:
            s += gamma * extra[ok]
        out.append(study.rankers[part](s))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT, help=f"JSON output (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--table-only", action="store_true", help="only rewrite the results.md section from --out and print it")
    args = parser.parse_args()
    if not args.table_only:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
        started = time.perf_counter()
        explorer = Explorer(10)
        study, personal = Study(explorer), None
        personal = Personal(study, explorer)
        options = {"none": [({}, None)],
                   "text-knn": [({}, personal.text_knn())],
                   "local-cooc": [({}, personal.local("cooc"))],
                   "local-ease": [({"lambda": lam}, personal.local("ease", lam)) for lam in LAMBDAS]}
        text, cooc = options["text-knn"][0][1], options["local-cooc"][0][1]
        options["text-knn + local-cooc"] = [({"mix": m}, _normalised(m * text + (1 - m) * cooc))
                                            for m in (0.25, 0.5, 0.75)]
        rows = []
        for eps in EPSILONS:
            for name, variants in options.items():
                grid = [(s, x, g) for s, x in variants for g in (GAMMAS if x is not None else (0.0,))]
                valid = [(sum(r[0] for r in score(study, "valid", x, g, eps)) / (len(SEEDS) if eps else 1), s, x, g)
                         for s, x, g in grid]
                best, s, x, g = max(valid, key=lambda v: v[0])
                rows.append({"epsilon": eps, "option": name, "chosen": {**s, **({"gamma": g} if x is not None else {})},
                             "valid": round(best, 5), "test": summary(score(study, "test", x, g, eps))})
                log.info("%s %s: %s", eps, name, rows[-1])
        write_json(args.out, {"prior": PRIOR, "lambdas": LAMBDAS, "gammas": GAMMAS, "rows": rows,
                              "seconds": round(time.perf_counter() - started, 1)})
    table = render(json.loads(args.out.read_text()))
    replace_section(ROOT / "benchmarks" / "results.md", SECTION, table)
    print(table)


def render(results: dict) -> str:
    lines = ["Command: `python scripts/explore_personal.py` (2-core CPU, under a minute once `explore_dp.py`'s "
             "profile cache exists). A what-if model, not the product: frozen encoder (LoRA off), cached profile "
             "vectors, the product's 10-client IID partition at seed 0; the prior is mechanism A of the release "
             "explorer (the product's defaults) exact or noised (draws 0, 1, 2); each on-device option is added "
             "to it with gamma x its scores / their std, gamma (and lambda, mix) chosen on validation NDCG@10 "
             "per epsilon; test at that choice, mean ± std over the draws. 'text-knn': cosine of the frozen item "
             "vectors over the user's history (public); 'local-cooc': cosine co-occurrence among the device's "
             "own users (item-kNN); 'local-ease': EASE on the device's own users; both last fitted on the device "
             "and never sent.", "",
             "| prior | on-device option | test NDCG@10 | test HR@10 | valid NDCG@10 | chosen (on valid) |",
             "|---|---|---|---|---|---|"]
    for r in results["rows"]:
        t = r["test"]
        prior = "exact" if r["epsilon"] is None else f"epsilon {r['epsilon']:g}"
        lines.append(f"| {prior} | {r['option']} | {t['ndcg@10']:.4f} ± {t['ndcg@10-std']:.4f} | "
                     f"{t['hr@10']:.4f} ± {t['hr@10-std']:.4f} | {r['valid']:.4f} | {json.dumps(r['chosen'])} |")
    return "\n".join(lines)

if __name__ == "__main__":
    main()
