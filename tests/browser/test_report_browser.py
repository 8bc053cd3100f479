"""The audit report opened in a real headless Chromium (Playwright): the verdict, the plots
(non-empty inline SVG) and the tables render, with no console error and no request.

Opt-in: ``make test-browser`` installs Playwright and Debian's chromium, then runs this file.
The report is rendered here, by the code under test, from the run directory
``SECUREFED_RUN`` (``make test-browser`` passes runs/demo when it exists), else from the audit
tests' fixture run. Without Playwright or a chromium binary
(``SECUREFED_CHROMIUM``, else /usr/bin/chromium) every test here is skipped, so the default
``pytest`` run passes on a machine without a browser.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from securefed.audit import render_report
from tests.audit import build_documented_run

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("SECUREFED_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no chromium binary at {CHROMIUM}", allow_module_level=True)

# Offline, as root, no first-run or background traffic (docs/audit.md, "Testing the report").
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    given = os.environ.get("SECUREFED_RUN")
    run_dir = Path(given) if given else build_documented_run(root).run_dir
    out = root / "report.html"
    render_report(run_dir, out_html=out)
    return out


@pytest.fixture(scope="module")
def page(report: Path) -> Iterator[tuple[Any, list[str], list[str]]]:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on(
                "request", lambda r: requests.append(r.url) if r.url != report.as_uri() else None
            )
            page.goto(report.as_uri())
            yield page, errors, requests
        finally:
            browser.close()


def test_the_verdict_comes_first_and_renders(page: tuple[Any, list[str], list[str]]) -> None:
    p, _, _ = page
    first = p.locator("section").first
    assert first.get_attribute("id") == "verdict"
    assert first.locator("table.verdict").is_visible()
    rows = first.locator("table.verdict tr")
    assert rows.count() >= 6
    assert "ledgers" in rows.first.inner_text()


def test_the_plots_render_as_non_empty_svg(page: tuple[Any, list[str], list[str]]) -> None:
    p, _, _ = page
    for plot_id in ("epsilon-plot", "accuracy-plot"):
        svg = p.locator(f"svg#{plot_id}")
        assert svg.is_visible()
        box = svg.bounding_box()
        assert box is not None
        assert box["width"] > 200
        assert box["height"] > 100
        assert svg.locator("path").count() > 10
        assert svg.locator("text").count() > 5


def test_the_tables_render(page: tuple[Any, list[str], list[str]]) -> None:
    p, _, _ = page
    for table_id in ("composed", "epsilon-table", "dp-table", "hazards-table", "provenance-table"):
        table = p.locator(f"table#{table_id}")
        assert table.is_visible(), table_id
        assert table.locator("tbody tr").count() >= 1, table_id
        box = table.bounding_box()
        assert box is not None
        assert box["height"] > 20


def test_no_console_error_and_nothing_loaded(page: tuple[Any, list[str], list[str]]) -> None:
    _, errors, requests = page
    assert errors == []
    assert requests == []
