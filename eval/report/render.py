"""One markdown and one HTML renderer for the report's sections (``sections.py`` builds them once, as data)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from eval.report.blocks import Cell, Image, Section, Table, Text

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}"
    ".scroll{overflow-x:auto}table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;"
    "padding:4px 8px;text-align:left;vertical-align:top}td{white-space:nowrap}td.num{text-align:right}"
    "th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}"
    "img{max-width:100%}.note{background:#fff4d6;padding:6px}tr:nth-child(n) td.best{background:#e3f4e3}"
    "tr:nth-child(n) td.muted{color:#999;background:#eee}"
)


# -- markdown -------------------------------------------------------------------------------------------------------
def _md_cell(c: Cell) -> str:
    t = c.text.replace("|", "\\|")
    t = f"**{t}**" if c.bold and t else t
    return f"{t} {c.mark}" if c.mark else t


def _md_table(t: Table) -> str:
    out = ["| " + " | ".join(t.columns) + " |", "|" + "|".join("---" for _ in t.columns) + "|"]
    out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in t.rows]
    return "\n".join(out)


def _md_image(img: Image, out: Path) -> str:
    p = Path(img.path)
    rel = p.relative_to(out) if p.is_relative_to(out) else p
    return f"![{img.alt}]({rel})"


def markdown(sections: list[Section], out: Path) -> str:
    lines: list[str] = []

    def emit(s: Section) -> None:
        lines.append(f"{'#' * s.level} {s.title}\n")
        for b in s.blocks:
            if isinstance(b, Section):
                emit(b)
            elif isinstance(b, Table):
                lines.extend([_md_table(b), ""])
            elif isinstance(b, Image):
                lines.extend([_md_image(b, out), ""])
            elif isinstance(b, Text):
                lines.append((f"> **Note:** {b.text}" if b.note else b.text) + "\n")

    for s in sections:
        emit(s)
    return "\n".join(lines) + "\n"


# -- HTML ---------------------------------------------------------------------------------------------------------
def _inline(text: str) -> str:
    """HTML-escape, keeping the markdown ``**bold**`` the legend uses."""
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = []
    for r in t.rows:
        tds = []
        for c in r:
            title = f" title='{html.escape(c.title)}'" if c.title else ""
            text = html.escape(c.text)
            mark = f" <sup>{html.escape(c.mark)}</sup>" if c.mark else ""
            cls = " ".join(
                k for k, on in (("best", c.bold), ("num", _numeric(c.text)), ("muted", c.muted)) if on
            )
            cls = f" class='{cls}'" if cls else ""
            tds.append(
                f"<td{cls}{title}><b>{text}</b>{mark}</td>"
                if c.bold
                else f"<td{cls}{title}>{text}{mark}</td>"
            )
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or text[0] in "-+–")


def _b64(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def to_html(sections: list[Section], title: str = "live2diff-bench report") -> str:
    body: list[str] = []

    def emit(s: Section) -> None:
        body.append(f"<h{s.level}>{html.escape(s.title)}</h{s.level}>")
        for b in s.blocks:
            if isinstance(b, Section):
                emit(b)
            elif isinstance(b, Table):
                body.append(_html_table(b))
            elif isinstance(b, Image):
                body.append(f"<img src='{_b64(b.path)}' alt='{html.escape(b.alt)}'>")
            elif isinstance(b, Text):
                body.append(
                    f"<p class='note'><b>Note:</b> {_inline(b.text)}</p>"
                    if b.note
                    else f"<p>{_inline(b.text)}</p>"
                )

    for s in sections:
        emit(s)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
