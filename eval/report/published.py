"""The "Published figures beside ours" section: a figure published elsewhere is compared with ours only when the
settings it states (metric variant and settings, GPU, resolution, steps, acceleration, method and run settings)
match what ran; otherwise its cell says why it was not compared."""

from __future__ import annotations

import math

from eval.report.blocks import (
    Cell,
    Section,
    Table,
    Text,
    fmt,
    table,
)
from eval.report.context import (
    Context,
    interval_cell,
)


def our_settings(ctx: Context, method: str, metric: str) -> dict:
    """What a published figure's ``settings`` are compared with: the metric's settings, then the method's own
    (e.g. ``t_index_list``), then the run's (model, dtype, device, ...), plus what a published figure states in
    other words: ``gpu`` (the device's name), ``resolution`` (the frame size ``[H, W]`` that ran), ``denoising_steps`` and
    ``acceleration`` (``torch.compile`` with the method's ``compile``, else ``none``; never ``tensorrt``)."""
    run = next((s for s in ctx.run.settings.values() if s), {})
    prov = next((p for p in ctx.run.provenance.values() if p), {})
    derived: dict = {"gpu": (prov.get("device") or {}).get("gpu") or "none (cpu)"}
    size = (prov.get("frame_size") or {}).get("size")  # what ran (eval/frame_size.py), else the config's
    if size is None:
        size = ((prov.get("config") or {}).get("dataset") or {}).get("size")
    derived["resolution"] = list(size) if isinstance(size, (list, tuple)) else size
    settings = ctx.run.method_settings(method)
    method_cfg = {k: v for k, v in settings.items() if not isinstance(v, dict)}
    if isinstance(settings.get("t_index_list"), (list, tuple)):
        derived["denoising_steps"] = len(settings["t_index_list"])
        derived["acceleration"] = "torch.compile" if settings.get("compile") else "none"
    metric_cfg = ctx.desc[metric].config if metric in ctx.desc else {}
    return {**derived, **run, **method_cfg, **metric_cfg}


#: a published setting the source does not state (the figure can then never be compared)
NOT_STATED = ("not stated", None)


def _same(key: str, published, ours) -> bool:
    if key == "gpu" and isinstance(published, str) and isinstance(ours, str):
        return published.lower() in ours.lower()  # "RTX 4090" is "NVIDIA GeForce RTX 4090"
    if isinstance(published, (list, tuple)) and isinstance(ours, (list, tuple)):
        return list(published) == list(ours)
    return published == ours


def _settings_mismatch(published: dict, ours: dict) -> list[str]:
    return [
        f"{k} not stated by the source"
        if v in NOT_STATED
        else f"{k}: {v} published, {ours.get(k, 'unset')} ours"
        for k, v in published.items()
        if v in NOT_STATED or not _same(k, v, ours.get(k))
    ]


def not_compared(ctx: Context, r) -> str | None:
    """Why published figure ``r`` is not compared with ours (its cell greyed out), or None when it is: its settings
    must be stated, name the metric's ``variant`` when the metric has variants (warp errors: published scripts
    differ), equal ours on every key it states, and our values must be comparable (no random weights)."""
    if not r.settings:
        return "settings not stated"
    desc = ctx.desc.get(r.metric)
    if desc is not None and "variant" in desc.config and "variant" not in r.settings:
        return f"variant not stated (ours: {desc.config['variant']})"
    mism = _settings_mismatch(r.settings, our_settings(ctx, r.method, r.metric))
    if mism:
        return "; ".join(mism)
    if desc is not None and not desc.comparable:
        return "our values are not comparable (" + "; ".join(desc.notes) + ")"
    return None


def published_section(ctx: Context) -> Section | None:
    """Published | ours | Δ for every figure cited in ``report.reference`` (with its source); a cell where nothing
    is cited stays empty. A published figure that cannot be compared with ours (other settings, settings or variant
    not stated, our values not comparable) is shown greyed out with the reason, and no Δ is computed for it."""
    refs = ctx.run.references
    if not refs:
        return None
    metrics = list(dict.fromkeys(r.metric for r in refs))
    methods = list(dict.fromkeys([*ctx.methods, *(r.method for r in refs)]))
    t = ctx.table.set_index(["method", "metric"]) if not ctx.table.empty else None
    numbers = {id(r): i + 1 for i, r in enumerate(refs)}
    reasons = {id(r): not_compared(ctx, r) for r in refs}
    columns = ["method"]
    for m in metrics:
        h = ctx.desc[m].header if m in ctx.desc else m
        columns += [f"{h}: published", "ours", "Δ (ours − published)"]
    rows = []
    for method in methods:
        row = [Cell(ctx.label(method))]
        for metric in metrics:
            cited = [r for r in refs if r.method == method and r.metric == metric]
            ours = None
            if t is not None and (method, metric) in t.index:
                ours = float(t.loc[(method, metric), "mean"])
            pub, delta, why = [], [], []
            for r in cited:
                k = numbers[id(r)]
                if reasons[id(r)]:
                    pub.append(f"{fmt(r.value)} [{k}] (not compared)")
                    delta.append(f"not compared [{k}]")
                    why.append(f"[{k}] {reasons[id(r)]}")
                    continue
                pub.append(f"{fmt(r.value)} [{k}]")
                if ours is not None and math.isfinite(ours):
                    rel = f" ({(ours - r.value) / abs(r.value):+.0%})" if r.value else ""
                    delta.append(f"{'+' if ours >= r.value else ''}{fmt(ours - r.value)}{rel} [{k}]")
            muted = bool(cited) and all(reasons[id(r)] for r in cited)
            ours_cell = (
                interval_cell(ctx, method, metric) if ours is not None else Cell("not run" if cited else "")
            )
            title = "; ".join(why)
            row += [
                Cell("; ".join(pub), muted=muted, title=title),
                ours_cell,
                Cell("; ".join(delta), muted=muted, title=title),
            ]
        rows.append(row)
    blocks: list = [
        Text(
            "Figures published elsewhere (report.reference), each numbered by its source below; empty = not cited. "
            "A figure computed with other settings than ours (or not saying which) is shown greyed out, "
            '"not compared", with the reason below, and no Δ.'
        ),
        Table(columns, rows),
    ]
    src = []
    for i, r in enumerate(refs, start=1):
        stated = ", ".join(f"{k}={v}" for k, v in r.settings.items())
        if reasons[id(r)]:
            s = "NOT COMPARED — " + reasons[id(r)] + (f" (stated: {stated})" if stated else "")
        else:
            s = "settings match ours (" + stated + ")"
        src.append([str(i), f"{r.method} / {r.metric}", fmt(r.value), r.source, s])
    blocks.append(table(["#", "figure", "published", "source", "metric settings"], src))
    return Section("Published figures beside ours", blocks)
