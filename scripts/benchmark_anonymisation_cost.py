"""What anonymisation costs the recommender (issue 17): NDCG@10 of the same federated run on the
real reviews kept raw, anonymised as PrivRec does, and with every name and place removed.

The three texts (each store holds one; everything else is the same):

* raw: research only: the text normalised (entities, tags, NFKC) and nothing replaced;
* anonymised: PrivRec's scrubber as ``privrec client prepare`` runs it (personal data replaced by
  ``<TYPE>`` tokens, the catalogue's words never taken for names or places);
* names and places removed: the same scrubber, but PERSON and LOCATION spans (the user's own
  names too) deleted instead of replaced by a token, and no catalogue brand spared from the NER
  model: what a blunter scrubber would cost.

Each run is one federated simulation (default: the product's run, ``dp = "distributed"`` at
epsilon 8, one secure release), 10 IID clients, simulated devices with fresh ledgers, validation
on 300 users, test on every user at the best validation round. A seed sets the partition and
a fresh build of the stores; the DP noise is OS entropy. Each text is scrubbed once per variant
and the result reused for every seed's stores (the scrubber sees one review at a time, so this
changes nothing but the time).

    python scripts/benchmark_anonymisation_cost.py [--seeds 0 1 2] [--label L --set KEY=VALUE ...]

Writes ``benchmarks/anonymisation_cost.json`` and the "Anonymisation cost (issue 17)" section of
``benchmarks/results.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.cli import build_config  # noqa: E402
from common.report_md import mean_std, replace_section  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "amazon-musical-instruments-2014"
OUT = ROOT / "benchmarks"
SECTION = "Anonymisation cost (issue 17)"
VARIANTS = ("raw", "anonymised", "names and places removed")
log = logging.getLogger("benchmark")


class RawText:
    """Research only: the reviews as written (normalised), nothing replaced."""

    model_name = "raw"
    mode = "raw text (research: nothing replaced)"

    def scrub_many(self, texts: Sequence[str], own_names: Sequence[Iterable[str | None]], **_) -> Iterable:
        from client.anonymiser.normalise import normalise
        from client.anonymiser.scrubber import ScrubResult

        return (ScrubResult(normalise(text)) for text in texts)


class ScrubbedOnce:
    """A scrubber whose results are kept by (text, own names): every seed's stores reuse them."""

    def __init__(self, scrubber) -> None:
        self.scrubber, self.done = scrubber, {}
        self.model_name, self.mode = scrubber.model_name, scrubber.mode

    def scrub_many(self, texts: Sequence[str], own_names: Sequence[Iterable[str | None]], **_) -> Iterable:
        keys = [(text, tuple(names)) for text, names in zip(texts, own_names, strict=True)]
        todo = [i for i, key in enumerate(keys) if key not in self.done]
        new = self.scrubber.scrub_many([texts[i] for i in todo], [own_names[i] for i in todo])
        for i, result in zip(todo, new, strict=True):
            self.done[keys[i]] = result
        return (self.done[key] for key in keys)

    def counts(self) -> Counter:
        """Spans replaced (or deleted) per type over every text scrubbed."""
        total: Counter = Counter()
        for result in self.done.values():
            total.update(result.counts)
        return total


def scrubbers(items) -> dict:
    from client.anonymiser import PiiScrubber
    from client.anonymiser import entities as E
    from client.anonymiser.vocabulary import product_words

    items = list(items)
    return {
        "raw": RawText(),
        "anonymised": ScrubbedOnce(PiiScrubber.for_catalogue(items)),
        "names and places removed": ScrubbedOnce(
            PiiScrubber(product_words=product_words(items), deleted=(E.PERSON, E.LOCATION))
        ),
    }


def _slug(text: str) -> str:
    return re.sub("[^A-Za-z0-9]+", "-", text).strip("-")


def _stat(runs: list[dict], key: str) -> str:
    return mean_std([r["test"][key] for r in runs])


def render(results: dict) -> str:
    """The results.md section."""
    a = results["args"]
    lines = [
        "Command: `python scripts/benchmark_anonymisation_cost.py` (2-core CPU). Real data, "
        f"{a['clients']} IID clients; each row the same federated run on stores that differ only in their "
        "text: raw (research only: normalised, nothing replaced), anonymised (PrivRec's scrubber, as "
        "`privrec client prepare` runs it), or names and places removed (the same scrubber, PERSON and "
        "LOCATION spans deleted instead of replaced by a token, no catalogue brand spared from the NER "
        "model: what a blunter scrubber costs). Validation on "
        f"{a['max_eval_users']} users, test on every user (full ranking) at the best validation round; mean ± "
        "standard deviation over the seeds (partition and a fresh build of the stores; DP noise from OS "
        "entropy). Spans: what the variant's scrubber replaced (or deleted) over all 20,522 summaries and texts.",
        "",
        "| run | text | seeds | NDCG@10 | HR@10 | vs raw (NDCG@10) | names (PERSON) | places (LOCATION) | other spans |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, settings in results["settings"].items():
        rows = {v: results["runs"].get(f"{label} / {v}", []) for v in VARIANTS}
        raw = [r["test"]["ndcg@10"] for r in rows["raw"]]
        for variant, runs in rows.items():
            if not runs:
                continue
            ndcg = [r["test"]["ndcg@10"] for r in runs]
            change = (f"{(sum(ndcg) / len(ndcg)) / (sum(raw) / len(raw)) - 1:+.1%}"
                      if raw and variant != "raw" else "-")
            spans = results.get("spans", {}).get(variant, {})
            other = sum(n for k, n in spans.items() if k not in ("PERSON", "LOCATION"))
            lines.append(
                f"| {label} ({' '.join(settings) or 'defaults'}) | {variant} | "
                f"{', '.join(str(r['seed']) for r in runs)} | {_stat(runs, 'ndcg@10')} | {_stat(runs, 'hr@10')} | "
                f"{change} | {spans.get('PERSON', 0):,} | {spans.get('LOCATION', 0):,} | {other:,} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--max-eval-users", type=int, default=300)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--label", default="distributed, epsilon 8", help="row name for these settings")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        help="extra run setting KEY=VALUE for every run (repeatable), e.g. dp=none num-rounds=3")
    parser.add_argument("--render-only", action="store_true", help="rewrite results.md from the JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    path = OUT / "anonymisation_cost.json"
    if args.render_only:
        replace_section(OUT / "results.md", SECTION, render(json.loads(path.read_text())))
        return
    from client.policy import SIMULATED_DEVICE
    from client.simulated_devices import prepare_simulated_devices, reset_ledgers
    from common.data import load_items
    from server.simulation import simulate

    results = json.loads(path.read_text()) if path.is_file() else {"runs": {}, "settings": {}, "spans": {}}
    results["args"] = {k: v for k, v in vars(args).items() if k in ("clients", "max_eval_users")}
    results["settings"][args.label] = args.settings
    items, _ = load_items(DATA / "items.jsonl")
    texts = scrubbers(items.values())
    for variant in args.variants:
        name = f"{args.label} / {variant}"
        results["runs"][name] = [r for r in results["runs"].get(name, []) if r["seed"] not in args.seeds]
        for seed in args.seeds:
            cfg = build_config(None, args.settings, reviews_path=str(DATA / "reviews.jsonl.gz"),
                               items_path=str(DATA / "items.jsonl"), num_clients=args.clients,
                               max_eval_users=args.max_eval_users, seed=seed, run_dir=str(OUT / "runs"),
                               stores_dir=str(OUT / "runs" / "text-cost-stores" / _slug(variant)))
            prepare_simulated_devices(cfg, scrubber=texts[variant])
            reset_ledgers(cfg, reason=f"benchmark: {name}, seed {seed}")  # new devices for every run
            started = time.perf_counter()
            run = simulate(cfg, device_policy=SIMULATED_DEVICE, run_name=time.strftime(f"text-cost-{_slug(name)}-s{seed}-%Y%m%d-%H%M%S"))
            summary = json.loads((run / "summary.json").read_text())
            results["runs"][name].append({"seed": seed, "test": summary["test"], "best-round": summary["best-round"],
                                          "seconds": time.perf_counter() - started, "run": str(run)})
            if isinstance(texts[variant], ScrubbedOnce) and texts[variant].counts():  # empty when stores existed
                results["spans"][variant] = dict(texts[variant].counts())
            path.write_text(json.dumps(results, indent=2))
            replace_section(OUT / "results.md", SECTION, render(results))
            log.info("%s, seed %d: %s", name, seed, results["runs"][name][-1]["test"])
    print(render(results))


if __name__ == "__main__":
    main()
