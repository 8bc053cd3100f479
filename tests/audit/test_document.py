"""The report's document model: Markdown and HTML escaping of untrusted text (ledger payloads)."""

from __future__ import annotations

import html
import re

import pytest

from securefed.audit.document import Para, Section, Table, render_html, render_markdown

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<http://evil.example/>",
    "[click](javascript:alert(1))",
    "![pixel](http://evil.example/p.png)",
    "a | b | c",
    "first\n## injected heading",
    "first\r\n| injected | row |",
    "- looks like a list",
    "1. looks like a list",
    "---",
    "**bold** _em_ `code` ~~strike~~",
    "&lt;script&gt; already an entity",
    "    four spaces: a code block",
    "back\\slash",
]


def _document(text: str) -> list[Section]:
    return [
        Section(
            "s",
            "Title",
            (Para(text), Para(text, strong=True), Table(("h",), ((text,), ("plain",)))),
        )
    ]


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_cannot_inject_markup(text: str) -> None:
    markdown = render_markdown("t", _document(text))
    body = markdown.split("## Title", 1)[1]
    assert "<" not in body
    assert ">" not in body
    assert "](" not in body.replace("\\](", "")
    table = [line for line in body.splitlines() if line.startswith("|")]
    assert len(table) == 4  # header, rule, two rows: no row was injected
    assert all(len(re.findall(r"(?<!\\)\|", line)) == 2 for line in table)
    assert not any(line.startswith(("#", "-", "1.", "    ")) for line in body.splitlines())


@pytest.mark.parametrize("text", HOSTILE)
def test_rendered_markdown_shows_the_text_and_nothing_else(text: str) -> None:
    """Through a real CommonMark renderer (raw HTML allowed), the hostile text comes out as
    text: no element but the report's own anchors, paragraphs, emphasis and table."""
    markdown_it = pytest.importorskip("markdown_it")
    rendered = (
        markdown_it.MarkdownIt("commonmark")
        .enable("table")
        .render(render_markdown("t", _document(text)))
    )
    tags = set(re.findall(r"<([a-z0-9]+)", rendered))
    assert tags <= {"h1", "h2", "a", "p", "strong", "table", "thead", "tbody", "tr", "th", "td"}
    assert re.findall(r"<a [^>]*>", rendered) == ['<a id="s">']
    flat = " ".join(text.splitlines()).strip()
    shown = html.unescape(re.sub(r"<[^>]+>", "", rendered))
    assert flat in shown


@pytest.mark.parametrize("text", HOSTILE)
def test_html_escapes_every_text(text: str) -> None:
    page = render_html("t <b>", _document(text))
    assert html.escape(text) in page
    assert "<b>" not in page
    assert "<script" not in page
    assert "<img" not in page


def test_numbers_are_not_mangled() -> None:
    markdown = render_markdown("t", [Section("s", "S", (Table(("x",), (("-0.5",), ("1.25",))),))])
    assert "| -0.5 |" in markdown
    assert "| 1.25 |" in markdown
