"""Writing an audit report (:mod:`server.audit`) for people: ``report.json`` (versioned, the
source), ``report.md`` and one self-contained ``report.html`` (plots embedded as PNG, no network).

Failed checks come first in both, in red in the HTML; nothing is hidden or summarised away.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from common.files import atomic_write

PLOTS = ("epsilon", "utility", "egress", "roc", "canaries")


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write report.json, report.md, report.html and the plots' PNGs into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    pngs = {name: _plot(name, report) for name in PLOTS}
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    for name, png in pngs.items():
        if png:
            (out / f"{name}.png").write_bytes(png)
    atomic_write(paths["json"], json.dumps(report, indent=2, default=str))
    atomic_write(paths["md"], markdown(report, {n: f"{n}.png" for n, p in pngs.items() if p}))
    atomic_write(paths["html"], to_html(report, pngs))
    return paths


# ----- the document, as sections of (title, paragraphs, tables) -----------------------------------


def sections(report: dict) -> list[tuple[str, list[str], list[tuple[list[str], list[list[Any]]]]]]:
    run, acc, egress = report["run"], report["accounting"], report["egress"]
    out: list[tuple[str, list[str], list]] = []
    test = run.get("test") or {}
    out.append(
        (
            "The run",
            [
                f"Run {run['run-id']} in `{run['directory']}`, {run['started']} to {run['finished']}; "
                f"{run['clients']} clients, "
                f"{run['rounds']} round(s) with replies, DP mode `{run['dp']}`, best round {run['best-round']}; test "
                + ", ".join(f"{k} {v:.4f}" for k, v in test.items() if "@" in k)
                + ".",
                f"Model: {run['model']['base']}, {run['model']['parameters']:,} parameters, of which "
                f"{run['model']['exchanged-parameters']:,} are exchanged.",
                "Software: " + ", ".join(f"{k} {v}" for k, v in run["versions"].items()) + ".",
            ],
            [],
        )
    )
    paragraphs = [f"Unit protected: {acc['unit']}. Clipping: {acc['clipping']}."]
    tables = []
    fed = acc.get("federation")
    if fed:
        paragraphs.append(
            f"Federation ({fed['accountant']}, delta {fed['delta']:g}): "
            f"epsilon claimed {_num(fed['epsilon-claimed'])}, "
            f"recomputed with Opacus RDP {_num(fed['epsilon-recomputed'])}, with Opacus PRV {_num(fed['epsilon-prv'])}."
        )
        tables.append(
            (
                ["release", "noise multiplier", "sample rate", "steps"],
                [[i + 1, *h] for i, h in enumerate(fed["history"])],
            )
        )
    tables.append(
        (
            [
                "device",
                "accountant",
                "delta",
                "epsilon claimed",
                "epsilon recomputed",
                "budget",
                "budget left",
                "charges this run",
                "declined",
            ],
            [
                [
                    d["store"],
                    d["accountant"],
                    d["delta"],
                    _num(d["epsilon-claimed"]),
                    _num(d["epsilon-recomputed"]),
                    d["budget"],
                    _num(d["budget-left"]),
                    len(d["charges-this-run"]),
                    d["declined"],
                ]
                for d in acc["devices"]
            ],
        )
    )
    out.append(("Privacy accounting", paragraphs, tables))
    out.append(
        (
            "Data handling on each device",
            ["Counts only: what the anonymiser replaced, per entity type; how the store is encrypted."],
            [
                (
                    ["device", "anonymiser", "users", "reviews", "PII replaced", "encryption"],
                    [
                        [
                            d["store"],
                            d["data-handling"]["anonymiser"],
                            d["data-handling"]["users"],
                            d["data-handling"]["reviews"],
                            ", ".join(f"{k} {v}" for k, v in sorted(d["data-handling"]["pii-replaced"].items()))
                            or "none",
                            _encryption(d["data-handling"]["encryption"]),
                        ]
                        for d in report["devices"]
                    ],
                )
            ],
        )
    )
    rounds = sorted({int(r) for d in egress["per-device"] for r in d["bytes-by-round"]})
    out.append(
        (
            "What left each device",
            [
                "Bytes per device per round (every reply: train, evaluate and SecAgg+ stages) against the full "
                "model's "
                f"{egress['full-model-bytes']:,} bytes in float32. Tensor names that left: "
                f"{', '.join(egress['tensor-names']) or 'none'}. "
                f"Metric names: {', '.join(egress['metric-names']) or 'none'}. "
                f"Outside the allow-lists: {egress['unknown-tensors'] + egress['unknown-metrics'] or 'none'}."
            ],
            [
                (
                    ["device", "replies"] + [f"round {r}" for r in rounds],
                    [
                        [d["store"], d["replies"]] + [f"{d['bytes-by-round'].get(str(r), 0):,}" for r in rounds]
                        for d in egress["per-device"]
                    ],
                )
            ],
        )
    )
    out.append(
        (
            "Utility per round",
            [],
            [
                (
                    ["round", "valid NDCG@10", "valid HR@10"],
                    [[u["round"], _num(u.get("valid-ndcg@10")), _num(u.get("valid-hr@10"))] for u in report["utility"]],
                )
            ],
        )
    )
    out.append(("Empirical attacks", *_attack_section(report["attacks"])))
    return out


def _attack_section(attacks: dict) -> tuple[list[str], list]:
    if attacks.get("status") != "run":
        return [attacks["status"]], []
    bound, claimed = attacks["lower-bound"], attacks["claimed-epsilon"]
    paragraphs = [
        f"{attacks['canaries']} canaries (synthetic users with random items and a secret phrase), "
        f"{attacks['included']} of "
        "them in the federation on fair coins; each attack scores every canary from the final global model.",
        f"One-run lower bound (Steinke, Nasr, Jagielski 2023; {bound['confidence']:.0%} confidence): epsilon >= "
        f"{bound['epsilon']:.3f} ({bound['correct']} of {bound['guesses']} guesses right), beside the claimed epsilon "
        f"{_num(claimed) if claimed is not None else 'none (no DP)'}.",
        "Exposure (log2 catalogue size - log2 mean rank of a canary's items): "
        f"{_num(attacks['exposure']['in'])} for the "
        f"canaries in, {_num(attacks['exposure']['out'])} for those out.",
    ]
    rows = [
        [name, _num(a["auc"]), _num(a["tpr@1%fpr"]), _num(a["tpr@0.1%fpr"]), a.get("negatives", 0)]
        for name, a in attacks["attacks"].items()
    ]
    return paragraphs, [(["attack", "ROC AUC", "TPR at 1% FPR", "TPR at 0.1% FPR", "canaries out (negatives)"], rows)]


def markdown(report: dict, images: dict[str, str]) -> str:
    lines = [
        f"# PrivRec privacy audit: run {report['run']['run-id']}",
        "",
        f"Report format {report['format']}, generated {report['generated']}.",
        "",
    ]
    lines += _findings_md(report["findings"])
    for title, paragraphs, tables in sections(report):
        lines += [f"## {title}", ""]
        for p in paragraphs:
            lines += [p, ""]
        for head, rows in tables:
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""]
    lines += ["## Plots", ""] + [f"![{name}]({path})" for name, path in images.items()]
    return "\n".join(lines) + "\n"


def _findings_md(findings: list[dict]) -> list[str]:
    failures = [f for f in findings if f["severity"] == "failure"]
    head = f"**FAILED: {len(failures)} check(s) failed.**" if failures else "All checks passed."
    return [head, ""] + [f"- **{f['severity'].upper()}**: {f['text']}" for f in findings] + [""]


def to_html(report: dict, pngs: dict[str, bytes | None]) -> str:
    esc = html.escape
    failures = [f for f in report["findings"] if f["severity"] == "failure"]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>PrivRec audit, run {report['run']['run-id']}"
        "</title><style>body{font-family:sans-serif;max-width:70em;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}.failure{color:#b00;font-weight:bold}"
        ".warning{color:#a60}.ok{color:#060}</style></head><body>",
        f"<h1>PrivRec privacy audit: run {report['run']['run-id']}</h1>",
        f"<p>Report format {report['format']}, generated {esc(report['generated'])}.</p>",
        f"<p class='{'failure' if failures else 'ok'}'>"
        + (f"FAILED: {len(failures)} check(s) failed." if failures else "All checks passed.")
        + "</p><ul>",
    ]
    parts += [
        f"<li class='{f['severity']}'>{esc(f['severity'].upper())}: {esc(f['text'])}</li>" for f in report["findings"]
    ]
    parts.append("</ul>")
    for title, paragraphs, tables in sections(report):
        parts.append(f"<h2>{esc(title)}</h2>")
        parts += [f"<p>{esc(p)}</p>" for p in paragraphs]
        for head, rows in tables:
            parts.append("<table><tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in head) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
    parts.append("<h2>Plots</h2>")
    parts += [
        f"<p><img alt='{name}' src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>"
        for name, png in pngs.items()
        if png
    ]
    parts.append("</body></html>")
    return "\n".join(parts)


# ----- plots ------------------------------------------------------------------------------------------


def _plot(name: str, report: dict) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    drew = False
    if name == "epsilon":
        for d in report["devices"]:
            points = sorted(
                {e["round"]: e["epsilon-total"] for e in d["sent"] if e.get("epsilon-total") is not None}.items()
            )
            if points:
                ax.step(*zip(*points, strict=False), where="post", alpha=0.6, label=d["store"])
                drew = True
        ax.set(xlabel="round", ylabel="epsilon spent (ledger)", title="Epsilon per round, each device")
    elif name == "utility":
        points = [(u["round"], u["valid-ndcg@10"]) for u in report["utility"] if "valid-ndcg@10" in u]
        if points:
            ax.plot(*zip(*points, strict=False), marker="o")
            drew = True
        ax.set(xlabel="round", ylabel="validation NDCG@10", title="Utility per round")
    elif name in ("roc", "canaries"):
        attacks = report["attacks"]
        if attacks.get("status") != "run":
            plt.close(fig)
            return None
        if name == "roc":
            for attack, a in attacks["attacks"].items():
                if a["fpr"]:
                    ax.plot(a["fpr"], a["tpr"], label=f"{attack} (AUC {a['auc']:.2f})")
            ax.plot([0, 1], [0, 1], ls=":", color="grey")
            ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Membership inference on canaries")
        else:
            labels = np.array(attacks["labels"])
            scores = np.array(attacks["scores"]["calibrated"])
            ax.hist([scores[labels], scores[~labels]], bins=20, label=["in", "out"])
            ax.set(xlabel="calibrated score", ylabel="canaries", title="Canary scores, in and out")
        drew = True
    else:
        for d in report["egress"]["per-device"]:
            points = sorted((int(r), b) for r, b in d["bytes-by-round"].items())
            if points:
                ax.plot(*zip(*points, strict=False), marker=".", alpha=0.6, label=d["store"])
                drew = True
        ax.set(xlabel="round", ylabel="bytes sent", title="What left each device, per round")
    if drew and (name in ("roc", "canaries") or (name != "utility" and len(report["devices"]) <= 10)):
        ax.legend(fontsize=6)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue() if drew else None


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _encryption(e: dict) -> str:
    params = ", ".join(f"{k} {v}" for k, v in e["kdf-params"].items())
    return f"{e['cipher']} v{e['format-version']}, {e['kdf']}" + (f" ({params})" if params else "")
