"""End to end in a real browser: the analytics page on seeded history. Every chart draws, a filter
changes what they show, and a CSV download holds exactly the rows of the chart's table view."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.utils import timezone

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "analytics-test-password"
CHARTS = ["csat", "scores", "volume", "reasons", "agents", "ttft", "variant-rates"]

# True once every chart's canvas has pixels drawn on it (not only a blank, transparent canvas).
CHARTS_DRAWN = """(count) => {
  const canvases = [...document.querySelectorAll("canvas[data-chart]")];
  return canvases.length === count && canvases.every((canvas) => {
    if (!canvas.width || !canvas.height) return false;
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let drawn = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) drawn += 1;
    return drawn > 500;
  });
}"""

# The figures a chart shows: {chart name: its datasets' data}.
CHART_DATA = """() => Object.fromEntries([...document.querySelectorAll("canvas[data-chart]")].map(
  (canvas) => [canvas.dataset.chart, window.Chart.getChart(canvas).data.datasets.map((d) => d.data)]))"""

# The table view's header and rows, each cell as the value it shows (`data-value`).
TABLE_ROWS = """(box) => [
  [...box.querySelectorAll("thead th")].map((th) => th.textContent),
  ...[...box.querySelectorAll("tbody tr")].map((tr) => [...tr.children].map((cell) => cell.dataset.value)),
]"""


def record_problems(page) -> list[str]:
    problems: list[str] = []

    def on_console(message) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    return problems


def same(value: str) -> object:
    """A cell compared by its number where it is one (the CSV writes 100.0 where the page has 100)."""
    try:
        return float(value)
    except ValueError:
        return value


def card(page, view: str):
    return page.locator(f".card[data-view='{view}']")


def test_the_analytics_page_draws_every_chart_filters_them_and_its_csv_equals_the_table(browser, live_server_url):
    call_command("seed_demo_history", conversations=400, stdout=io.StringIO())
    analyst = get_user_model().objects.create_user(username="ana", password=PASSWORD, is_staff=True)
    analyst.user_permissions.add(Permission.objects.get(codename="view_analytics"))
    today = timezone.now().date()
    query = f"from={today - dt.timedelta(days=89)}&to={today}"

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems = record_problems(page)
    page.goto(f"{live_server_url}/analytics/?{query}")
    page.wait_for_url(re.compile(r"/desk/login/\?next="))
    page.fill("#id_username", "ana")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/analytics/\?from="))

    # Every chart draws; the summaries and the heatmap are filled in.
    page.wait_for_function(CHARTS_DRAWN, arg=len(CHARTS), timeout=30_000)
    assert sorted(page.evaluate(CHART_DATA)) == sorted(CHARTS)
    assert re.fullmatch(r"\d+(\.\d)? %", page.inner_text(".card[data-dataset='csat_summary'] .tile__value >> nth=0"))
    assert page.locator(".heatmap td[style*='background-color']").count() > 20
    assert page.locator(".card[data-view='comments'] tbody tr").count() > 0
    assert page.locator(".card:not(#rollout) .empty").count() == 0
    assert "No gradual rollout has run yet." in page.inner_text("#rollout")  # the seeded history has none
    before = page.evaluate(CHART_DATA)

    # The table view of a chart, and its CSV download: the same columns and rows.
    for view, name in (("csat", "csat_over_time"), ("agents", "agents")):
        toggle = card(page, view).locator("button.toggle")
        toggle.click()
        assert toggle.get_attribute("aria-pressed") == "true"
        table = card(page, view).locator(".table-box")
        table.wait_for()
        assert card(page, view).locator(".chart").is_hidden()
        shown = table.evaluate(TABLE_ROWS)
        assert len(shown) > 2, shown
        with page.expect_download() as download_info:
            card(page, view).locator("a.card__csv").click()
        download = download_info.value
        assert download.suggested_filename.startswith(f"{name}_")
        with open(download.path(), newline="", encoding="utf-8") as file:
            downloaded = list(csv.reader(file))
        assert downloaded[0] == shown[0]
        assert [[same(cell) for cell in row] for row in downloaded[1:]] == [
            [same(cell) for cell in row] for row in shown[1:]
        ]
        toggle.click()
        card(page, view).locator(".chart").wait_for()

    # A filter changes the figures: only the conversations the fp16 variant answered in.
    page.select_option("#filter-variant", "fp16")
    page.click("#filters button[type=submit]")
    page.wait_for_url(re.compile(r"variant=fp16"))
    page.wait_for_function(
        "() => document.querySelectorAll('canvas[data-chart]').length > 0"
        " && [...document.querySelectorAll('canvas[data-chart]')].every((c) => window.Chart.getChart(c))"
    )
    assert page.input_value("#filter-variant") == "fp16"
    assert page.input_value("#filter-from") == str(today - dt.timedelta(days=89))
    after = page.evaluate(CHART_DATA)
    assert after["volume"] != before["volume"]
    assert sum(after["volume"][0]) < sum(before["volume"][0])
    assert card(page, "compare").locator("thead th").all_inner_texts()[1:] == ["fp16"]
    assert problems == []
    context.close()
