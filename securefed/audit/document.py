"""A tiny document model for the report, rendered to self-contained HTML and to Markdown.

The report is built once as :class:`Section` objects holding plain-text blocks; the two renderers
turn the same sections into HTML (every text escaped with :func:`html.escape`; plots as inline
SVG; CSS inline; no scripts, links to other origins or external resources) and into Markdown
(text escaped so that ledger content cannot inject markup or links). Only :class:`Plot` carries
markup, and it must come from :func:`securefed.audit.svg.line_plot`, which escapes its own text.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

__all__ = ["Block", "Para", "Plot", "Section", "Table", "render_html", "render_markdown"]


@dataclass(frozen=True, slots=True)
class Para:
    """A paragraph of plain text; ``strong`` renders it emphasised (warnings)."""

    text: str
    strong: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    """A table of plain-text cells; ``empty`` is shown instead when there are no rows."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    empty: str = "None recorded."


@dataclass(frozen=True, slots=True)
class Plot:
    """An inline SVG plot (from :func:`~securefed.audit.svg.line_plot`) and its caption."""

    svg: str
    caption: str


Block = Para | Table | Plot


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
    if not block.rows:
        return f"<p>{esc(block.empty)}</p>"
    head = "".join(f"<th>{esc(h)}</th>" for h in block.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in block.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
    if not block.rows:
        return _md(block.empty)
    lines = [
        "| " + " | ".join(_md(h) for h in block.headers) + " |",
        "|" + "---|" * len(block.headers),
    ]
    lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in block.rows]
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
