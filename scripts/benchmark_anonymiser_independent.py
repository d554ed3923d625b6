"""Benchmark the anonymiser on text nobody here wrote (issue 17).

Prints a table and writes ``benchmarks/anonymiser_independent.json`` and the "Anonymiser on
independent text (issue 17)" section of ``benchmarks/results.md``:

1. Recall and precision per entity type, with 95% Wilson score intervals, on an independent
   labelled set made by presidio-evaluator (Presidio's own evaluation framework: its
   ``PresidioSentenceFaker``, Faker and its fake-person records) from the review-style templates
   in ``tests/data/pii/review_templates.txt``, and on our own sets ``tests/data/pii/{dev,eval,test}``.
   The templates are split (seeded) into a development group and a held-out group, so the
   held-out sentences come from templates never looked at. **The held-out part is measured once
   per release and never used for error analysis**: look at errors with ``--show-errors`` (dev
   part only), and never change the scrubber or the templates because of a held-out miss.
2. Hard negatives: product words (brand and model words of the catalogue titles) in 500 sentences
   of real reviews (../shared/data, sampled with a fixed seed) and in the catalogue titles
   themselves; kept/total is the share of product-word occurrences that survive scrubbing.

The generated sentences are committed (``tests/data/pii/independent-{dev,heldout}.jsonl``, read by
``load_labelled``); ``--regenerate`` rebuilds them deterministically and needs the ``bench`` extra
(``pip install -e .[bench]``; made with presidio-evaluator 0.3.2 and Faker 40.63.0). Targets: recall
>= 0.97 and precision >= 0.90 on the independent set, product words kept >= 0.98.

    python scripts/benchmark_anonymiser_independent.py --help
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:  # Presidio and spaCy load in seconds: imported where used, so tests of the pure helpers stay fast.
    from client.anonymiser import PiiScrubber

DATA = ROOT.parent / "shared" / "data" / "amazon-musical-instruments-2014"
PII_DIR = ROOT / "tests" / "data" / "pii"
TEMPLATES = PII_DIR / "review_templates.txt"
OUT = ROOT / "benchmarks"
SECTION = "Anonymiser on independent text (issue 17)"
PARTS = ("independent-dev", "independent-heldout")
#: What the committed independent set was generated with; other versions may draw other sentences.
GENERATED_WITH = "presidio-evaluator 0.3.2, Faker 40.63.0"
log = logging.getLogger("benchmark")

#: Entity names of client/anonymiser/entities.py, in report order.
TYPES = (
    "PERSON",
    "LOCATION",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "URL",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SSN",
    "STREET_ADDRESS",
)
TARGETS = {"recall": 0.97, "precision": 0.90, "product-words-kept": 0.98}
#: presidio-evaluator's labels (after its provider -> label mapping) -> PrivRec entity types.
LABEL_MAP = {
    "PERSON": "PERSON",
    "GPE": "LOCATION",
    "LOCATION": "LOCATION",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "URL": "URL",
    "DOMAIN_NAME": "URL",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN_CODE",
    "IP_ADDRESS": "IP_ADDRESS",
    "US_SSN": "US_SSN",
    "STREET_ADDRESS": "STREET_ADDRESS",
}
#: Labels the scrubber is not meant to remove: kept in the rows as "unscored", not counted for recall.
NOT_SCORED = frozenset({"DATE_TIME", "ORGANIZATION", "NRP", "TITLE", "ZIP_CODE", "AGE", "US_DRIVER_LICENSE"})
#: Providers our templates use that presidio-evaluator's ENTITY_TYPE_MAPPING lacks.
EXTRA_PROVIDER_LABELS = {
    "free_email": "EMAIL_ADDRESS",
    "street_address": "STREET_ADDRESS",
    "domain_name": "DOMAIN_NAME",
    "company": "ORGANIZATION",
    "month_name": "DATE_TIME",
}
#: Fake-person records kept: the reviews come from an English-language store.
ENGLISH_COUNTRIES = ("US", "GB", "AU", "NZ", "CA", "IE", "ZA")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9'&-]*[A-Za-z0-9]|[A-Za-z0-9]")


def map_label(label: str) -> str | None:
    """PrivRec entity type of a presidio-evaluator label, or None for a label that is not scored."""
    if label in NOT_SCORED:
        return None
    if label not in LABEL_MAP:
        raise ValueError(f"presidio-evaluator label {label!r} is not mapped: add it to LABEL_MAP or NOT_SCORED.")
    return LABEL_MAP[label]


def wilson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (scipy's), (nan, nan) with no trials."""
    if trials == 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    ci = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def proportion(k: int, n: int) -> dict:
    """``k`` of ``n`` as JSON: the share and its 95% Wilson interval (None for both when ``n`` is 0)."""
    return {"n": n, "k": k, "value": k / n if n else None, "ci95": wilson(k, n) if n else None}


def to_row(row_id: str, text: str, spans: Sequence[tuple[str, int, int]], template_id: int) -> dict | None:
    """A ``load_labelled`` row from a generated sentence and its (label, start, end) spans; None when
    a value also occurs where no span of it is ("Al" in "Also", "Patricia" in "PatriciaNevels@..."),
    since that format marks every occurrence of an entity's text as gold."""
    entities: dict[str, str] = {}
    unscored: dict[str, str] = {}
    starts = {(text[s:e].strip(), s + len(text[s:e]) - len(text[s:e].lstrip())) for _, s, e in spans}
    for label, start, end in spans:
        value = text[start:end].strip()
        if not value:
            continue
        at = text.find(value)
        while at >= 0:
            if (value, at) not in starts:
                return None
            at = text.find(value, at + 1)
        kind = map_label(label)
        if kind:
            entities.setdefault(value, kind)
        else:
            unscored.setdefault(value, label)
    return {
        "id": row_id,
        "text": text,
        "entities": [{"type": t, "text": v} for v, t in entities.items()],
        "unscored": [{"type": t, "text": v} for v, t in unscored.items()],
        "own_names": [],
        "template": template_id,
    }


def split_templates(
    templates: Sequence[str], seed: int, kinds: Callable[[str], set[str]], *, tries: int = 1000
) -> tuple[list[int], list[int]]:
    """Template indices of the development and held-out groups: a seeded half each, redrawn until
    each group has at least a third (and at least one) of the templates of every entity kind."""
    rng = random.Random(seed)
    order = list(range(len(templates)))
    per_kind = Counter(k for t in templates for k in kinds(t))
    for _ in range(tries):
        rng.shuffle(order)
        groups = sorted(order[: len(order) // 2]), sorted(order[len(order) // 2 :])
        counts = [Counter(k for i in group for k in kinds(templates[i])) for group in groups]
        if all(c[k] >= max(1, n // 3) for c in counts for k, n in per_kind.items()):
            return groups
    raise ValueError(
        f"no split of {len(templates)} templates in {tries} tries gives both groups a third of every kind's "
        f"templates ({dict(per_kind)}): add templates for the rare kinds."
    )


def occurrences(text: str, words: frozenset[str], key: Callable[[str], str] = str.lower) -> list[tuple[int, int]]:
    """(start, end) of every token of ``text`` written as a name (capital or digit first: "Boss", not
    "my boss") whose ``key`` (possessive "'s" dropped) is in ``words``."""
    found = []
    for m in _TOKEN.finditer(text):
        if m.group(0)[0].islower():
            continue
        token = key(m.group(0))
        token = token[:-2] if token.endswith("'s") else token
        if token in words:
            found.append((m.start(), m.end()))
    return found


def count_kept(spots: Iterable[tuple[int, int]], removed: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """(kept, total): occurrences that no removed span overlaps, of all occurrences."""
    removed = list(removed)
    spots = list(spots)
    kept = sum(not any(s < e2 and s2 < e for s2, e2 in removed) for s, e in spots)
    return kept, len(spots)


def name_words(titles: Iterable[str], sentences: Iterable[str], *, min_seen: int = 3) -> frozenset[str]:
    """Brand and model words of the catalogue: title tokens with a letter and a digit ("sm58"), and
    capitalised title tokens that reviewers capitalise in at least half their uses inside a sentence
    (seen at least ``min_seen`` times: "Fender", "Dunlop", "Paul" of Les Paul; not "Classic")."""
    models, capitals = set(), set()
    for title in titles:
        for token in _TOKEN.findall(title):
            if len(token) < 2:
                continue
            if any(c.isdigit() for c in token) and any(c.isalpha() for c in token):
                models.add(token.lower())
            elif token[0].isupper():
                capitals.add(token.lower())
    seen: Counter[str] = Counter()
    upper: Counter[str] = Counter()
    for sentence in sentences:
        for token in _TOKEN.findall(sentence)[1:]:
            word = token.lower()
            if word in capitals:
                seen[word] += 1
                upper[word] += token[0].isupper()
    return frozenset(models | {w for w in capitals if seen[w] >= min_seen and upper[w] * 2 >= seen[w]})


def regenerate(templates: list[str], sizes: tuple[int, int], seed: int) -> None:
    """Write ``independent-{dev,heldout}.jsonl`` from presidio-evaluator's sentence faker."""
    from presidio_evaluator.data_generator import PresidioSentenceFaker

    installed = f"presidio-evaluator {metadata.version('presidio-evaluator')}, Faker {metadata.version('faker')}"
    if installed != GENERATED_WITH:
        log.warning(
            "regenerating with %s, not %s: the sentences may differ from the committed ones; "
            "update GENERATED_WITH if you keep them",
            installed,
            GENERATED_WITH,
        )
    mapping = PresidioSentenceFaker.ENTITY_TYPE_MAPPING | EXTRA_PROVIDER_LABELS

    def kinds(template: str) -> set[str]:
        return {k for p in re.findall(r"{{(\w+)}}", template) if (k := map_label(mapping[p]))}

    groups = split_templates(templates, seed, kinds)
    for offset, (name, ids, size) in enumerate(zip(PARTS, groups, sizes, strict=True)):
        rows = generate(templates, ids, size, seed + offset, name, mapping)
        (PII_DIR / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def generate(templates: list[str], ids: list[int], count: int, seed: int, prefix: str, mapping: dict) -> list[dict]:
    """``count`` labelled rows from presidio-evaluator's sentence faker over ``templates[ids]``."""
    import pandas as pd
    from presidio_evaluator.data_generator import PresidioSentenceFaker, presidio_additional_entity_providers
    from presidio_evaluator.data_generator.faker_extensions import HospitalProvider
    from presidio_evaluator.data_generator.faker_extensions.datasets import load_fake_person_df

    random.seed(seed)  # load_fake_person_df draws full names with the global random module
    people = load_fake_person_df()
    people = people[people["country_code"].isin(ENGLISH_COUNTRIES)]
    # Its "street_name" column holds number and street ("1235 Honeysuckle Lane"): offered as a street
    # address, else Faker's "{{building_number}} {{street_name}}" writes "87376 1235 Honeysuckle Lane".
    people = people.rename(columns={"street_name": "street_address"})
    # Missing values dropped, so the record generator falls back to Faker instead of writing "nan".
    records = [{k: v for k, v in r.items() if not pd.isna(v)} for r in people.to_dict(orient="records")]
    faker = PresidioSentenceFaker(
        locale="en_US",
        lower_case_ratio=0.0,  # 0.3.2 lower-cases span values but not the sentence: off
        sentence_templates=[templates[i] for i in ids],
        # HospitalProvider queries WikiData when built; no template of ours needs it.
        entity_providers=[p for p in presidio_additional_entity_providers if p is not HospitalProvider],
        base_records=records,
        entity_type_mapping=dict(mapping),
        provider_aliases=PresidioSentenceFaker.PROVIDER_ALIASES,
        random_seed=seed,
    )
    rows: list[dict] = []
    skipped = 0
    while len(rows) < count:
        for sample in faker.generate_new_fake_sentences(count - len(rows)):
            spans = [(s.entity_type, s.start_position, s.end_position) for s in sample.spans]
            row = to_row(f"{prefix}-{len(rows) + 1:04d}", sample.full_text, spans, ids[sample.template_id])
            skipped += row is None
            if row is not None:
                rows.append(row)
    log.info(
        "%s: %d sentences from %d templates (%d skipped: an entity text also elsewhere)",
        prefix,
        len(rows),
        len(ids),
        skipped,
    )
    return rows


class _Recorder:
    """The scrubber, remembering the spans it found per text (for unscored overlaps and error analysis)."""

    def __init__(self, scrubber: PiiScrubber) -> None:
        self.scrubber = scrubber
        self.found: dict[str, list] = {}

    def analyze(self, text: str, **kwargs: Any) -> list:
        self.found[text] = self.scrubber.analyze(text, **kwargs)
        return self.found[text]


def labelled_scores(scrubber: PiiScrubber, path: Path, *, show_errors: int = 0) -> dict:
    """Recall and precision (with Wilson intervals) per type and overall on one labelled set."""
    from client.anonymiser.scoring import load_labelled, score

    rows = load_labelled(path)
    recorder = _Recorder(scrubber)
    result = score(recorder, tqdm(rows, desc=path.stem, leave=False))  # type: ignore[arg-type]

    out = {
        "sentences": len(rows),
        "overall": {
            "recall": proportion(sum(result.removed.values()), sum(result.gold.values())),
            "precision": proportion(sum(result.correct.values()), sum(result.found.values())),
        },
        "per-type": {
            t: {
                "recall": proportion(result.removed[t], result.gold[t]),
                "precision": proportion(result.correct[t], result.found[t]),
            }
            for t in TYPES
        },
    }
    raw = {r["id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r.get("unscored")}
    if raw:
        out["unscored"] = _unscored(rows, raw, recorder.found, result)
    if show_errors:
        _log_errors(result, rows, recorder.found, show_errors)
    log.info("%s: recall %.3f precision %.3f", path.stem, result.recall(), result.precision())
    return out


def _unscored(rows: list, raw: dict, found: dict, result: Any) -> dict:
    """Unscored spans (dates, organisations...) per label, how many the scrubber removed anyway, and the
    precision when found spans over them alone are left out (``score`` counts those as false positives)."""
    spans: Counter[str] = Counter()
    removed: Counter[str] = Counter()
    extra = 0
    for row in rows:
        if row.id not in raw:
            continue
        hits = found[row.text]
        places = [
            (u["type"], m.start(), m.end())
            for u in raw[row.id]["unscored"]
            for m in re.finditer(re.escape(u["text"]), row.text)
        ]
        for label, start, end in places:
            spans[label] += 1
            removed[label] += any(r.start < end and start < r.end for r in hits)
        extra += sum(
            not any(r.start < e and s < r.end for _, s, e in row.spans)
            and any(r.start < e and s < r.end for _, s, e in places)
            for r in hits
        )
    correct, total = sum(result.correct.values()), sum(result.found.values()) - extra
    return {
        "spans": dict(spans),
        "removed": dict(removed),
        "found-over-unscored": extra,
        "precision-without-them": proportion(correct, total),
    }


def _log_errors(result: Any, rows: list, found: dict, limit: int) -> None:
    """Missed gold spans and spurious found spans with their (synthetic) text: dev part only."""
    by_id = {r.id: r for r in rows}
    for line in result.missed[:limit]:
        row = by_id[line.split(":")[0]]
        log.info("MISSED %s | %s", line, row.text)
    for line in result.spurious[:limit]:
        row = by_id[line.split(":")[0]]
        spans = [f"{r.entity_type}:{row.text[r.start : r.end]!r}" for r in found[row.text]]
        log.info("SPURIOUS %s | %s | %s", line, spans, row.text)


def hard_negatives(scrubber: PiiScrubber, sample: int, seed: int) -> dict:
    """Product words kept/total in sampled real review sentences and in the catalogue titles."""
    import spacy

    from client.anonymiser.normalise import fold, normalise
    from common.data import load_dataset

    data = load_dataset(DATA / "reviews.jsonl.gz", DATA / "items.jsonl")
    titles = [normalise(i.title) for i in data.items.values()]
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    texts = (normalise(r.text) for r in data.reviews if r.text)
    sentences = [s.text for doc in nlp.pipe(texts, batch_size=256) for s in doc.sents]
    words = name_words(titles, sentences)

    def key(w: str) -> str:
        return fold(w.lower())

    with_words = [s for s in sentences if occurrences(s, words, key)]
    picked = random.Random(seed).sample(with_words, min(sample, len(with_words)))
    log.info(
        "%d catalogue name words; %d of %d review sentences hold one; %d sampled",
        len(words),
        len(with_words),
        len(sentences),
        len(picked),
    )
    out: dict[str, Any] = {"name-words": len(words), "sentences": len(sentences), "with-words": len(with_words)}
    for name, texts_ in (("review-sentences", picked), ("catalogue-titles", titles)):
        kept = total = 0
        lost: Counter[str] = Counter()
        for text in tqdm(texts_, desc=name, leave=False):
            spots = occurrences(text, words, key)
            spans = scrubber.analyze(text)
            k, n = count_kept(spots, [(r.start, r.end) for r in spans])
            kept, total = kept + k, total + n
            for s, e in spots:  # catalogue words only (no review text) go to the report
                hits = [r.entity_type for r in spans if r.start < e and s < r.end]
                if hits:
                    word = key(text[s:e]).removesuffix("'s")
                    lost[f"{word} as {hits[0]}"] += 1
        out[name] = {"texts": len(texts_), "lost": dict(lost.most_common(15))} | proportion(kept, total)
        log.info("%s: kept %d/%d", name, kept, total)
    return out


def render(results: dict) -> str:
    """The results.md section (also printed)."""
    g = results["generator"]
    lines = [
        f"Command: `python scripts/benchmark_anonymiser_independent.py` (2-core CPU). Anonymiser "
        f"`{results['anonymiser']}`, product words from the catalogue. Independent set: "
        f"{GENERATED_WITH} (seed {g['seed']}), review-style templates split by template into dev "
        f"({g['independent-dev-templates']} templates) and held-out ({g['independent-heldout-templates']}); "
        "the held-out part is measured once per release and never used for error analysis. "
        "`dev`, `eval`, `test`: our own hand-written sets (see the section above). "
        f"Targets: recall >= {TARGETS['recall']:.2f}, precision >= {TARGETS['precision']:.2f} (independent set), "
        f"product words kept >= {TARGETS['product-words-kept']:.2f}. Brackets: 95% Wilson intervals.",
        "",
        "| set | entity | gold | recall [95% CI] | found | precision [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results["labelled"].items():
        for entity, v in [("all", r["overall"])] + list(r["per-type"].items()):
            rec, pre = v["recall"], v["precision"]
            label = f"**{name}** ({r['sentences']})" if entity == "all" else ""
            lines.append(f"| {label} | {entity} | {rec['n']} | {_fmt(rec)} | {pre['n']} | {_fmt(pre)} |")
    for name, r in results["labelled"].items():
        if "unscored" in r:
            u = r["unscored"]
            lines.append(
                f"\n{name}: unscored spans {u['spans']}, removed anyway {u['removed'] or 'none'}; "
                f"{u['found-over-unscored']} found spans lie only over them (false positives above); "
                f"precision without them {_fmt(u['precision-without-them'])}."
            )
    h = results.get("hard-negatives")
    if h:
        lines += [
            "",
            f"**Hard negatives**: {h['name-words']} catalogue brand and model words (title words with a digit, "
            "or capitalised in titles and by reviewers); an occurrence written as a name is kept when no scrubber "
            f"span overlaps it. Review sentences: sampled (seed {g['seed']}) from the {h['with-words']:,} of "
            f"{h['sentences']:,} real review sentences that hold one.",
            "",
            "| texts | occurrences | kept | kept/total [95% CI] | most often removed |",
            "|---|---|---|---|---|",
        ]
        for name in ("review-sentences", "catalogue-titles"):
            v = h[name]
            lost = ", ".join(f"{k} {n}" for k, n in list(v["lost"].items())[:6]) or "none"
            lines.append(f"| {name} ({v['texts']}) | {v['n']} | {v['k']} | {_fmt(v)} | {lost} |")
    return "\n".join(lines)


def _fmt(share: dict) -> str:
    if not share["n"]:
        return "-"
    lo, hi = share["ci95"]
    return f"{share['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--regenerate", action="store_true", help="Rebuild the independent set (bench extra).")
    parser.add_argument("--dev-size", type=int, default=600, help="Generated development sentences.")
    parser.add_argument("--heldout-size", type=int, default=600, help="Generated held-out sentences.")
    parser.add_argument("--seed", type=int, default=17, help="Seed of the template split, the faker and sampling.")
    parser.add_argument("--sentences", type=int, default=500, help="Real review sentences for hard negatives.")
    parser.add_argument(
        "--skip-heldout",
        action="store_true",
        help="Development run: leave the held-out part unmeasured (implies --no-write).",
    )
    parser.add_argument("--skip-hard-negatives", action="store_true", help="Skip the real-data pass.")
    parser.add_argument(
        "--show-errors",
        type=int,
        default=0,
        metavar="N",
        help="Log up to N misses and N spurious spans of the dev part (never the held-out part).",
    )
    parser.add_argument("--no-write", action="store_true", help="Print only; leave benchmarks/ unchanged.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
    from client.anonymiser import PiiScrubber
    from common.data import load_items
    from common.report_md import replace_section

    if args.regenerate:
        templates = [t for t in TEMPLATES.read_text(encoding="utf-8").splitlines() if t.strip() and t[0] != "#"]
        regenerate(templates, (args.dev_size, args.heldout_size), args.seed)
    items, _ = load_items(DATA / "items.jsonl")
    scrubber = PiiScrubber.for_catalogue(items.values())
    names = ["independent-dev"] + ([] if args.skip_heldout else ["independent-heldout"]) + ["dev", "eval", "test"]
    labelled = {}
    for name in names:
        path = PII_DIR / f"{name}.jsonl"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run with --regenerate (needs `pip install -e .[bench]`).")
        errors = args.show_errors if name == "independent-dev" else 0
        labelled[name] = labelled_scores(scrubber, path, show_errors=errors)
    results: dict = {
        "anonymiser": scrubber.mode,
        "generator": _generator(args.seed),
        "targets": TARGETS,
        "labelled": labelled,
    }
    if not args.skip_hard_negatives:
        results["hard-negatives"] = hard_negatives(scrubber, args.sentences, args.seed)
    body = render(results)
    if not (args.no_write or args.skip_heldout):
        (OUT / "anonymiser_independent.json").write_text(json.dumps(results, indent=2) + "\n")
        replace_section(OUT / "results.md", SECTION, body)
    print(body)


def _generator(seed: int) -> dict:
    """Generator and template groups of the independent set (template ids read from its rows)."""
    out: dict = {"generated-with": GENERATED_WITH, "seed": seed}
    for name in PARTS:
        rows = (json.loads(line) for line in (PII_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines())
        out[f"{name}-templates"] = len({r["template"] for r in rows})
    return out


if __name__ == "__main__":
    main()
