"""What-if explorer for DP-SGD settings on the real data: seconds per setting instead of 13 minutes.

It answers "which tensors, batch, steps and learning rate can learn anything at client epsilon
8?" before a full ``benchmark_dp_utility.py`` run. To be that fast it simplifies: the BERT
encoder stays frozen with LoRA off (the zero-shot start), each training profile's pooled vector
is computed once and cached (``benchmarks/runs/explore-cache.pt``), text is not anonymised, and
per-example gradients, clipping and noise are written with ``torch.func`` in a few lines
(Opacus's own loop is what the product uses, in ``client/dp_training.py``). The partition,
model initialisation, loss, noise calibration (Opacus's RDP ``get_noise_multiplier``, delta =
1/(10 x users)) and FedAvg weighting match the product. Validation and test NDCG@10 are on every
user; the test row is the best validation round.

    python scripts/explore_dp.py --help
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

import torch
from torch.func import grad, vmap

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.cli import build_config  # noqa: E402
from common.model import mean_pool  # noqa: E402
from common.report_md import replace_section  # noqa: E402
from common.recommender import Recommender, all_examples  # noqa: E402
from common.run_data import RunData  # noqa: E402
from common.text import profile_text  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "amazon-musical-instruments-2014"
OUT = ROOT / "benchmarks"
HEADS = ("user_proj.weight", "user_proj.bias", "item_proj.weight", "item_proj.bias", "table")
GROUPS = {"heads": HEADS, "heads+bias": HEADS + ("bias",), "table": ("table",),
          "table+bias": ("table", "bias"), "bias": ("bias",)}
# (tensors, batch (0 = every user), local steps per round, optimiser, learning rate); epsilon 8.
SETTINGS = [("heads", 64, 3, "adam", 0.03), ("heads", 0, 1, "adam", 0.03), ("heads+bias", 0, 10, "adam", 0.03),
            ("table+bias", 0, 10, "adam", 0.1), ("table+bias", 0, 10, "sgd", 100.0),
            ("bias", 0, 1, "adam", 0.3), ("bias", 0, 10, "sgd", 100.0), ("bias", 0, 10, "adam", 1.0),
            ("bias", 0, 10, "adam", 2.0), ("bias", 0, 10, "adam", 3.0), ("bias", 0, 20, "adam", 3.0)]
SECTION = "DP what-if exploration (issue 4)"
log = logging.getLogger("explore-dp")


class Explorer:
    """The cached data and the heads-only model as plain tensors."""

    def __init__(self, clients: int) -> None:
        self.cfg = build_config(None, [], reviews_path=str(DATA / "reviews.jsonl.gz"),
                                items_path=str(DATA / "items.jsonl"), num_clients=clients, device="cpu")
        self.rd = RunData.load(self.cfg)
        self.rec = Recommender(self.cfg, self.rd.catalogue)
        cat, split = self.rd.catalogue, self.rd.split
        self.users = sorted(split.train)
        self.items = self.rec.items.pooled
        cache = OUT / "runs" / "explore-cache.pt"
        if not cache.is_file():
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save(self._encode_profiles(), cache)
        c = torch.load(cache)
        self.ex_user, self.ex_target, self.ex_x, self.full_x = c["ex_user"], c["ex_target"], c["ex_x"], c["full_x"]
        self.seen = torch.zeros(len(self.users), len(cat), dtype=torch.bool)
        for row, user in enumerate(self.users):
            self.seen[row, cat.rows(r.item_id for r in split.train[user])] = True
        self.examples: list[list[int]] = [[] for _ in self.users]
        for e, row in enumerate(self.ex_user.tolist()):
            self.examples[row].append(e)

        def held_out(part):
            return torch.tensor([cat.index[part[u].item_id] if u in part else -1 for u in self.users])
        self.targets = {"valid": held_out(split.valid), "test": held_out(split.test)}
        index = {u: i for i, u in enumerate(self.users)}
        self.parts = [[index[u] for u in self.rd.client_users(self.cfg, k) if self.examples[index[u]]]
                      for k in range(clients)]
        self.per_example = vmap(grad(self._loss), in_dims=(None, None, 0, 0, 0))

    def _encode_profiles(self) -> dict:
        """Pooled frozen-encoder vectors of every next-item training profile and every full profile."""
        from tqdm import tqdm

        cat, split, cfg = self.rd.catalogue, self.rd.split, self.cfg
        users, targets, texts, full = [], [], [], []
        for row, user in enumerate(self.users):
            reviews = split.train[user]
            for profile, target in all_examples(reviews, cfg.training_targets):  # the product's examples
                users.append(row)
                targets.append(cat.index[target])
                texts.append(profile_text(profile, cat.items, style=cfg.profile_style))
            full.append(profile_text(reviews, cat.items, style=cfg.profile_style))

        def encode(batch_texts):
            out = []
            with torch.no_grad():
                for s in tqdm(range(0, len(batch_texts), 64), desc="encoding profiles", leave=False):
                    b = self.rec.tokenizer(batch_texts[s:s + 64], truncation=True, padding=True,
                                           max_length=cfg.max_profile_tokens, return_tensors="pt")
                    h = self.rec.model.encoder(**b).last_hidden_state
                    out.append(mean_pool(h, b["attention_mask"]))
            return torch.cat(out)
        return {"ex_user": torch.tensor(users), "ex_target": torch.tensor(targets), "ex_x": encode(texts),
                "full_x": encode(full)}

    def initial(self) -> dict[str, torch.Tensor]:
        m = self.rec.model
        return {"user_proj.weight": m.user_proj.weight.detach().clone(), "user_proj.bias": m.user_proj.bias.detach().clone(),
                "item_proj.weight": m.item_proj.weight.detach().clone(), "item_proj.bias": m.item_proj.bias.detach().clone(),
                "table": torch.zeros_like(m.item_embedding.weight), "bias": torch.zeros(len(self.rd.catalogue))}

    def scores(self, p: dict, x: torch.Tensor) -> torch.Tensor:
        u = torch.nn.functional.normalize(x @ p["user_proj.weight"].T + p["user_proj.bias"], dim=-1)
        i = torch.nn.functional.normalize(self.items @ p["item_proj.weight"].T + p["item_proj.bias"] + p["table"], dim=-1)
        return u @ i.T / self.cfg.temperature + p["bias"]

    def _loss(self, train: dict, fixed: dict, x, target, mask) -> torch.Tensor:
        logits = self.scores({**fixed, **train}, x.unsqueeze(0))[0].masked_fill(mask, float("-inf"))
        return torch.nn.functional.cross_entropy(logits.unsqueeze(0), target.unsqueeze(0))

    def evaluate(self, p: dict, target: str) -> float:
        t = self.targets[target]
        ok = t >= 0
        with torch.no_grad():
            s = self.scores(p, self.full_x[ok])
        t = t[ok]
        mask = self.seen[ok].clone()
        mask[torch.arange(len(t)), t] = False
        s = s.masked_fill(mask, float("-inf"))
        rank = (s >= s.gather(1, t[:, None])).sum(1).float()
        return float(torch.where(rank <= 10, 1 / torch.log2(rank + 1), torch.zeros(())).mean())

    def local(self, p: dict, users: list[int], names: tuple, *, batch: int, steps: int, opt: str, lr: float,
              sigma: float | None, clip: float, rng: random.Random, gen: torch.Generator) -> dict:
        """``steps`` (DP-)SGD/Adam steps on the named tensors; ``sigma`` None = no DP."""
        p = {k: v.clone() for k, v in p.items()}
        m = {k: torch.zeros_like(p[k]) for k in names}
        v = {k: torch.zeros_like(p[k]) for k in names}
        q = 1.0 if batch == 0 else min(1.0, batch / len(users))
        for step in range(1, steps + 1):
            chosen = [u for u in users if rng.random() < q]
            g = {k: torch.zeros_like(p[k]) for k in names}
            if chosen:
                ex = [rng.choice(self.examples[u]) for u in chosen]
                target = self.ex_target[ex]
                mask = self.seen[chosen].clone()
                mask[torch.arange(len(ex)), target] = False
                fixed = {k: t for k, t in p.items() if k not in names}
                gs = self.per_example({k: p[k] for k in names}, fixed, self.ex_x[ex], target, mask)
                if sigma is not None:  # clip each user's gradient to ``clip``
                    norms = torch.sqrt(sum((gs[k].reshape(len(ex), -1) ** 2).sum(1) for k in names))
                    scale = (clip / (norms + 1e-6)).clamp(max=1.0)
                    gs = {k: gs[k] * scale.view(-1, *[1] * (gs[k].dim() - 1)) for k in names}
                g = {k: gs[k].sum(0) for k in names}
            for k in names:  # Gaussian noise, mean over the expected batch (as Opacus does)
                g[k] = (g[k] + torch.randn(g[k].shape, generator=gen) * sigma * clip) / (q * len(users)) \
                    if sigma is not None else g[k] / max(len(chosen), 1)
                if opt == "adam":
                    m[k].mul_(0.9).add_(g[k], alpha=0.1)
                    v[k].mul_(0.999).addcmul_(g[k], g[k], value=0.001)
                    p[k] = p[k] - lr * (m[k] / (1 - 0.9 ** step)) / ((v[k] / (1 - 0.999 ** step)).sqrt() + 1e-8)
                else:
                    p[k] = p[k] - lr * g[k]
        return p

    def federate(self, group: str, *, batch: int, steps: int, opt: str, lr: float, epsilon: float | None,
                 rounds: int, clip: float = 1.0, seed: int = 0) -> dict:
        from opacus.accountants.utils import get_noise_multiplier

        rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
        p = self.initial()
        history = [(self.evaluate(p, "valid"), self.evaluate(p, "test"))]
        sigmas = []
        for _ in range(rounds):
            updates, weights = [], []
            for users in self.parts:
                q = 1.0 if batch == 0 else min(1.0, batch / len(users))
                sigma = None
                if epsilon is not None:
                    sigma = get_noise_multiplier(target_epsilon=epsilon, target_delta=1 / (10 * len(users)),
                                                 sample_rate=q, steps=steps * rounds, accountant="rdp")
                    sigmas.append(sigma)
                updates.append(self.local(p, users, GROUPS[group], batch=batch, steps=steps, opt=opt, lr=lr,
                                          sigma=sigma, clip=clip, rng=rng, gen=gen))
                weights.append(len(users))
            total = sum(weights)
            p = {k: p[k] + sum(w / total * (u[k] - p[k]) for w, u in zip(weights, updates)) for k in p}
            history.append((self.evaluate(p, "valid"), self.evaluate(p, "test")))
        best = max(range(len(history)), key=lambda r: history[r][0])
        return {"best-round": best, "valid": history[best][0], "test": history[best][1],
                "valid-by-round": [round(h[0], 4) for h in history],
                "noise-multiplier": round(sum(sigmas) / len(sigmas), 3) if sigmas else None}


def popularity_prior(explorer: Explorer) -> dict:
    """A ceiling for what the offsets can carry: the zero-shot model plus the exact (non-private)
    training popularity, beta x log(1 + count), beta chosen on validation."""
    counts = torch.zeros(len(explorer.rd.catalogue))
    for user in explorer.users:
        for review in explorer.rd.split.train[user]:
            counts[explorer.rd.catalogue.index[review.item_id]] += 1
    rows = []
    for beta in (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0):
        p = {**explorer.initial(), "bias": beta * torch.log1p(counts)}
        rows.append({"beta": beta, "valid": explorer.evaluate(p, "valid"), "test": explorer.evaluate(p, "test")})
    return max(rows, key=lambda r: r["valid"])


def render(results: dict) -> str:
    """The results.md section."""
    a = results["args"]
    prior = results.get("popularity-prior")
    lines = [f"Command: `python scripts/explore_dp.py` (2-core CPU; about 10 minutes, 3 of them to cache the "
             f"profile vectors). Real data, {a['clients']} IID clients, {a['rounds']} rounds, client epsilon "
             f"{a['epsilon']:g} (delta 1/(10 x users), RDP), clip 1.0, seed 0. A what-if model, not the product: the "
             "BERT tower is frozen with LoRA off, profiles are cached, per-example gradients are computed with "
             "torch.func, and one random training example per user is drawn per step (the product's "
             "`dp-train = item-bias` averages over all of a user's examples instead). Validation and test are "
             "on every user; test is at the best validation round. 'heads' = both projections + item vectors "
             "(about 214,000 numbers); 'table' = item vectors (115,200); 'bias' = per-item offsets (900).", "",
             f"| setting (epsilon {a['epsilon']:g} unless no DP) | noise multiplier | best round "
             "| valid NDCG@10 by round | test NDCG@10 |", "|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['noise-multiplier'] or '-'} | {r['best-round']} | {r['valid-by-round']} | "
              f"{r['test']:.4f} |" for r in results["rows"]]
    utility = OUT / "dp_utility.json"  # the product's no-DP federation, from benchmark_dp_utility.py
    no_dp = json.loads(utility.read_text())["runs"]["no DP"]["test"]["ndcg@10"] if utility.is_file() else None
    if prior and no_dp:
        lines += ["", f"- Ceiling for the offsets: the zero-shot model plus the exact, non-private training "
                      f"popularity (beta x log(1 + count), beta {prior['beta']:g} chosen on validation) scores test "
                      f"NDCG@10 **{prior['test']:.4f}**, {prior['test'] / no_dp:.1%} of the product's no-DP "
                      f"federation ({no_dp:.4f}, \"DP utility\"), before any noise: the most that DP on the "
                      "offsets alone can approach."]
    lines += ["- Noise swamps anything large: training the projections and item vectors ('heads') stays within "
              "0.003 of the untrained start (0.0217 here); adding the offsets to them reaches at most 0.031, "
              "while the 900 offsets alone, with every user in every step and 10 steps per round, reach "
              "0.031-0.037. That is why `dp-train` defaults to `item-bias`."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--render-only", action="store_true", help="rewrite results.md from the JSON")
    parser.add_argument("--prior-only", action="store_true",
                        help="only the exact-popularity ceiling (no training); keeps the saved rows")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    path = OUT / "dp_explore.json"
    if args.render_only:
        replace_section(OUT / "results.md", SECTION, render(json.loads(path.read_text())))
        return
    explorer = Explorer(args.clients)
    prior = popularity_prior(explorer)
    print(f"zero-shot + exact popularity prior (no DP, beta {prior['beta']:g} on validation): "
          f"valid NDCG@10 {prior['valid']:.4f}, test NDCG@10 {prior['test']:.4f}")
    if args.prior_only:
        if path.is_file():
            path.write_text(json.dumps({**json.loads(path.read_text()), "popularity-prior": prior}, indent=2))
        return
    rows = []
    runs = [("heads, no DP", "heads", 8, 18, "adam", 2e-3, None)] + [
        (f"{g}, batch {b or 'all'}, {s} steps, {o} {lr:g}", g, b, s, o, lr, args.epsilon) for g, b, s, o, lr in SETTINGS]
    for name, group, batch, steps, opt, lr, eps in runs:
        started = time.perf_counter()
        r = explorer.federate(group, batch=batch, steps=steps, opt=opt, lr=lr, epsilon=eps, rounds=args.rounds)
        rows.append({"setting": name, **r, "seconds": round(time.perf_counter() - started, 1)})
        log.info("%s: %s", name, rows[-1])
    path.write_text(json.dumps({"args": vars(args), "rows": rows, "popularity-prior": prior}, indent=2))
    results = json.loads(path.read_text())
    replace_section(OUT / "results.md", SECTION, render(results))
    print(render(results))


if __name__ == "__main__":
    main()
