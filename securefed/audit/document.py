"""A tiny document model for the report, rendered to self-contained HTML and to Markdown.

The report is built once as :class:`Section` objects holding plain-text blocks; the two renderers
turn the same sections into HTML (every text escaped with :func:`html.escape`; plots as inline
SVG; CSS inline; no scripts, links to other origins or external resources) and into Markdown
(text escaped so that ledger content cannot inject markup or links). Only :class:`Plot` carries
markup, and it must come from :mod:`securefed.audit.plots`, whose SVG writer escapes its own
text. A table cell may be :class:`Flagged`: its value is shown with the reason it is disputed
(``<td class="flagged">`` in HTML, a ``⚠`` mark in both formats), in place.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

__all__ = [
    "FLAG",
    "Block",
    "Cell",
    "Flagged",
    "Para",
    "Plot",
    "Section",
    "Table",
    "Verdict",
    "render_html",
    "render_markdown",
]

FLAG = "\N{WARNING SIGN}"


@dataclass(frozen=True, slots=True)
class Para:
    """A paragraph of plain text; ``strong`` renders it emphasised (warnings)."""

    text: str
    strong: bool = False


@dataclass(frozen=True, slots=True)
class Flagged:
    """A table cell whose source verification disputes: ``text`` is shown as found, followed
    by the flag and ``reason`` (e.g. ``TAMPERED: edited (ledgers/bank-1.jsonl seq 4)``)."""

    text: str
    reason: str

    def __str__(self) -> str:
        return f"{self.text} {FLAG} {self.reason}"


Cell = str | Flagged


@dataclass(frozen=True, slots=True)
class Table:
    """A table of plain-text cells; ``empty`` is shown instead when there are no rows.
    ``id``, when set, becomes the HTML table's id (tests and the browser check use it)."""

    headers: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    empty: str = "None recorded."
    id: str = ""


@dataclass(frozen=True, slots=True)
class Plot:
    """An inline SVG plot (from :mod:`securefed.audit.plots`) and its caption."""

    svg: str
    caption: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """The report's verdict block: one (check, result, ok) line each; ``ok`` False lines are
    shown as failures (HTML class ``fail``), None as not established (class ``unknown``)."""

    lines: tuple[tuple[str, str, bool | None], ...]


Block = Para | Table | Plot | Verdict


@dataclass(frozen=True, slots=True)
class Section:
    """A report section; ``id`` is stable (tests and links rely on it)."""

    id: str
    title: str
    blocks: tuple[Block, ...]


_CSS = """
body { font-family: sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #eee; }
section { border-top: 1px solid #ddd; margin-top: 1.5em; }
.strong { font-weight: bold; color: #8a1c1c; }
td.flagged { background: #fde2e2; color: #8a1c1c; font-weight: bold; }
table.verdict td.ok { color: #1b5e20; font-weight: bold; }
table.verdict td.fail { color: #8a1c1c; font-weight: bold; background: #fde2e2; }
table.verdict td.unknown { color: #7a5a00; font-weight: bold; }
svg.plot { max-width: 100%; height: auto; }
figure { margin: 0.5em 0; }
figcaption { font-size: 0.85em; color: #555; }
"""


def render_html(title: str, sections: list[Section]) -> str:
    """One self-contained HTML page: title, table of contents, sections."""
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
        '<nav id="contents"><ul>',
        *(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a></li>' for s in sections),
        "</ul></nav>",
    ]
    for section in sections:
        out.append(f'<section id="{esc(section.id)}">')
        out.append(f"<h2>{esc(section.title)}</h2>")
        out += [_html_block(block) for block in section.blocks]
        out.append("</section>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _html_block(block: Block) -> str:
    esc = html.escape
    if isinstance(block, Para):
        cls = ' class="strong"' if block.strong else ""
        return f"<p{cls}>{esc(block.text)}</p>"
    if isinstance(block, Plot):
        return f"<figure>{block.svg}<figcaption>{esc(block.caption)}</figcaption></figure>"
    if isinstance(block, Verdict):
        rows = "".join(
            f'<tr><th>{esc(check)}</th><td class="{_verdict_class(ok)}">{esc(result)}</td></tr>'
            for check, result, ok in block.lines
        )
        return f'<table class="verdict" id="verdict-table"><tbody>{rows}</tbody></table>'
    if not block.rows:
        return f"<p>{esc(block.empty)}</p>"
    head = "".join(f"<th>{esc(h)}</th>" for h in block.headers)
    body = "".join("<tr>" + "".join(map(_html_cell, row)) + "</tr>" for row in block.rows)
    table_id = f' id="{esc(block.id)}"' if block.id else ""
    return f"<table{table_id}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_cell(cell: Cell) -> str:
    esc = html.escape
    if isinstance(cell, Flagged):
        return f'<td class="flagged" title="{esc(cell.reason)}">{esc(str(cell))}</td>'
    return f"<td>{esc(cell)}</td>"


def _verdict_class(ok: bool | None) -> str:
    return "unknown" if ok is None else ("ok" if ok else "fail")


def render_markdown(title: str, sections: list[Section]) -> str:
    """The Markdown twin: the same sections, tables and text; plots become a pointer to the
    HTML page (their data is in the tables next to them)."""
    out = [f"# {_md(title)}", ""]
    for section in sections:
        out += [f'<a id="{html.escape(section.id)}"></a>', "", f"## {_md(section.title)}", ""]
        for block in section.blocks:
            out += [_md_block(block), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _md_block(block: Block) -> str:
    if isinstance(block, Para):
        return f"**{_md(block.text)}**" if block.strong else _md(block.text)
    if isinstance(block, Plot):
        return f"*Plot in the HTML report: {_md(block.caption)} Its data is in the table below.*"
    if isinstance(block, Verdict):
        marks = {True: "ok", False: "FAIL", None: "?"}
        lines = ["| check | result | |", "|---|---|---|"]
        lines += [
            f"| {_md(check)} | {_md(result)} | {marks[ok]} |" for check, result, ok in block.lines
        ]
        return "\n".join(lines)
    if not block.rows:
        return _md(block.empty)
    lines = [
        "| " + " | ".join(_md(h) for h in block.headers) + " |",
        "|" + "---|" * len(block.headers),
    ]
    lines += ["| " + " | ".join(_md(str(cell)) for cell in row) + " |" for row in block.rows]
    return "\n".join(lines)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#!~])")
_MD_LEADING = re.compile(r"^(\d{0,9})([-+=.)])(?=[\s=-]|$)")


def _md(text: str) -> str:
    """``text`` as inert Markdown: it renders as the same characters and nothing else.

    ``&``, ``<`` and ``>`` become the entities ``&amp;``, ``&lt;``, ``&gt;``, so no raw HTML tag
    (``<script``, ``<a``, ...) and no autolink (``<http://...>``) can appear in the output, and
    an entity in ``text`` is shown literally. The Markdown punctuation ``\\ ` * _ [ ] | # ! ~``
    is backslash-escaped (no emphasis, code, link, image, heading, strikethrough, or new table
    cell). Line breaks of any kind become spaces and surrounding whitespace is dropped, so a
    value cannot start a new block, row or code block; a leading list or rule marker (``- ``,
    ``+ ``, ``1. ``, ``1) ``, ``---``, ``===``) is escaped too. Numbers such as ``-0.5`` and
    ``1.25`` are left as they are.
    """
    flat = " ".join(text.splitlines()).strip()
    escaped = _MD_SPECIAL.sub(r"\\\1", html.escape(flat, quote=False))
    return _MD_LEADING.sub(r"\1\\\2", escaped, count=1)
