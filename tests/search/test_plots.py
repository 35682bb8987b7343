"""Pareto plots (prunetune.search.plots) of an in-memory study: a PNG, and an HTML page with the
figure as inline SVG, the front as a table and no scripts."""

from __future__ import annotations

import re

import pytest

from prunetune.search.plots import pareto_html, pareto_png
from prunetune.search.results import summarize
from tests.search.studies import BASE, add, new_study, record


@pytest.fixture
def result():
    study = new_study()
    add(study, record(0, accuracy=0.85, flops=400, fps=150.0, speedup=1.5))
    add(study, record(1, accuracy=0.80, flops=200, fps=300.0, speedup=3.0))
    add(study, record(2, accuracy=0.70, flops=450, fps=90.0, speedup=0.9))  # dominated
    return summarize(study)


def test_the_png_is_an_image(result, tmp_path):
    path = pareto_png(result, tmp_path / "front.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_html_page_has_the_figure_and_the_front_and_no_scripts(result, tmp_path):
    page = pareto_html(result, tmp_path / "front.html").read_text()
    assert "<svg" in page and "<script" not in page and "http" not in page.split("<svg")[0]
    cells = re.findall(r"<tr><td>([^<]*)</td>", page)
    assert cells == ["base", "0*", "1"]  # the base first, the front after it, the knee starred
    assert "knee (trial 0)" in page and "base model" in page  # the figure's legend, as text
    assert f"{BASE['accuracy'] * 100:.1f}%" in page
