"""The model card of a registered version: Markdown, written beside it and into its description.

`register_variants` logs the full card to the version's run as `model_card.md` and puts its head
(up to the metrics table, see `_summary`) into the version description. Pure text: it imports
no MLflow and none of the registry modules.
"""

from __future__ import annotations

import json
from typing import Any


def model_card(name: str, version: str, variant: str, meta: dict[str, Any],
               metrics: dict[str, dict[str, Any]], selected: list[str], skipped: dict[str, str],
               lineage: dict[str, Any], lineage_tags: dict[str, str]) -> str:
    """Markdown card: intended use, data and validation, metrics, selection, limits, lineage.

    ``lineage_tags``: the version's tags that say where it comes from, listed sorted under
    `## Lineage` (`register_variants` leaves out its bookkeeping tags).
    """
    inp = meta.get("input", {})
    out = meta.get("output", {})
    classes = meta.get("classes", [])
    pixels = inp.get("dtype") == "uint8"  # the shipped contract: 8-bit pixels, NHWC
    form = (f"uint8 pixels 0..255, {inp.get('layout', 'NHWC')}" if pixels
            else "float32 in [0, 1], NCHW")
    more = [o for o in meta.get("outputs", []) if o != out.get("name")]
    lines = [f"# {name} version {version}: `{variant}`", "",
             f"Selected for profiles: {', '.join(selected) or 'none'}.", "",
             "## Intended use", "",
             f"Classify images of shape {inp.get('shape', '?')} "
             f"(`{inp.get('name', 'image')}`, {form}) into {len(classes)} "
             f"classes ({', '.join(map(str, classes[:20]))}); output `{out.get('name', '?')}` "
             f"({out.get('kind', 'logits')})"
             + "".join(f", then `{o}`" for o in more) + ". "
             + ("Scaling to [0, 1], the NCHW transpose and normalisation are inside the graph."
                if pixels else "Normalisation is inside the graph."), "",
             "## Data", "",
             f"data_hash `{lineage.get('data_hash')}`; validation: "
             f"{json.dumps(lineage.get('validation'), sort_keys=True)[:800]}", "",
             "## Metrics (test split, per device profile)", "",
             "| profile | accuracy | p50 ms | p95 ms | size B | peak RSS MiB | budgets |",
             "|---|---|---|---|---|---|---|"]
    for p, m in metrics.items():
        ok = "ok" if m.get("meets_budget") else "; ".join(m.get("failed_budgets") or [])
        lines.append(f"| {p} | {_num(m.get('accuracy'))} | {_num(m.get('latency_ms_p50'))} "
                     f"| {_num(m.get('latency_ms_p95'))} | {_num(m.get('size_bytes'))} "
                     f"| {_num(m.get('peak_rss_mb'))} | {ok} |")
    lines += ["", *[f"Profile `{p}` skipped: {r}" for p, r in skipped.items()], "",
              "## Known limits", "",
              "- Accuracy is measured on this dataset's held-out test split only; inputs from "
              "another source (scanner, resolution, stroke width) are out of scope.",
              "- Latency and memory were measured on the machine that ran `evaluate`, one "
              "process at a time; other hardware will differ.",
              "- Quantized variants may disagree with fp32 on a few borderline samples.", "",
              "## Lineage", ""]
    lines += [f"- {k}: `{v}`" for k, v in sorted(lineage_tags.items())]
    return "\n".join(lines) + "\n"


def _summary(card: str, run_id: str | None) -> str:
    """The card up to its metrics table, pointing at the full card."""
    head = card.split("\n## Known limits")[0]
    return f"{head}\nFull model card: `model_card.md` of run {run_id}."


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)
