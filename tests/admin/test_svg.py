"""The dashboard's chart (admin/svg.py): bars as tall as their counts, stacked in order,
labelled for people and screen readers, and refusing data it would draw wrong."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from freshsales_destination.admin.svg import HEIGHT, Chart, Series, nice_ceiling, render

SVG = "{http://www.w3.org/2000/svg}"
HOUR = 3600
START = 1_796_515_200.0  # 2026-12-06T00:00:00Z


def _chart(delivered: list[int], dead: list[int], received: list[int]) -> Chart:
    return Chart(
        title="Last 24 hours",
        starts=[START + i * HOUR for i in range(len(delivered))],
        bucket_seconds=HOUR,
        stacked=[Series("delivered", "#2a7", delivered), Series("dead", "#c33", dead)],
        line=Series("received", "#036", received),
    )


def _rects(root: ET.Element, name: str) -> list[ET.Element]:
    return [r for r in root.iter(f"{SVG}rect") if r.get("class") == name]


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (10, 10), (11, 20), (480, 500)]
)
def test_the_axis_top_is_a_round_number_at_least_the_peak(value: int, top: int) -> None:
    assert nice_ceiling(value) == top


def test_bars_are_as_tall_as_their_counts_and_stacked_bottom_first() -> None:
    root = ET.fromstring(render(_chart([4, 0, 8], [1, 2, 2], [5, 2, 10])))
    delivered = _rects(root, "delivered")
    dead = _rects(root, "dead")
    # A zero draws nothing: two delivered bars, three dead ones.
    assert len(delivered) == 2 and len(dead) == 3
    heights = [float(r.get("height", "")) for r in delivered]
    assert heights[1] == pytest.approx(2 * heights[0])  # 8 is twice 4
    # The dead part of the first bar sits right on top of its delivered part.
    assert float(dead[0].get("y", "")) + float(dead[0].get("height", "")) == pytest.approx(
        float(delivered[0].get("y", "")))
    # The peak (8 + 2 = 10, received 10) reaches the top of the axis (10): the plot's top.
    assert float(dead[2].get("y", "")) == pytest.approx(12.0)
    # The received line has one point per bucket.
    line = next(root.iter(f"{SVG}polyline"))
    assert len(line.get("points", "").split()) == 3


def test_it_is_labelled_for_screen_readers_and_tooltips() -> None:
    root = ET.fromstring(render(_chart([4, 0], [1, 2], [5, 2])))
    assert root.get("role") == "img"
    assert next(root.iter(f"{SVG}title")).text == "Last 24 hours"
    assert next(root.iter(f"{SVG}desc")).text == "Totals: delivered 4, dead 3, received 7."
    tips = [g.find(f"{SVG}title") for g in root.iter(f"{SVG}g")]
    assert [t.text for t in tips if t is not None] == [
        "00:00: delivered 4, dead 1, received 5",
        "01:00: delivered 0, dead 2, received 2",
    ]
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert "00:00" in labels and "5" in labels  # a time label; the axis top (5)


def test_ids_are_prefixed_so_two_charts_share_a_page() -> None:
    root = ET.fromstring(render(_chart([1], [0], [1]), ident="chart-2"))
    assert root.get("aria-labelledby") == "chart-2-title chart-2-desc"
    assert {e.get("id") for e in root.iter() if e.get("id")} == {"chart-2-title", "chart-2-desc"}


def test_names_are_escaped() -> None:
    chart = Chart("a <b> & c", [START], HOUR, [Series('x"><script>', "#000", [1])])
    text = render(chart)
    assert "<script>" not in text
    assert ET.fromstring(text) is not None


def test_an_empty_window_draws_an_empty_axis() -> None:
    root = ET.fromstring(render(_chart([0] * 24, [0] * 24, [0] * 24)))
    assert _rects(root, "delivered") == [] and _rects(root, "dead") == []
    assert root.get("height") == str(HEIGHT)


def test_a_series_of_the_wrong_length_or_a_negative_count_is_refused() -> None:
    with pytest.raises(ValueError, match="'dead' has 1 values for 2 buckets"):
        render(_chart([1, 2], [1], [1, 2]))
    with pytest.raises(ValueError, match="negative"):
        render(_chart([1, -2], [1, 1], [1, 2]))
