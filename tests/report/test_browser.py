"""report.html in a real browser: headless Chromium renders it; the DOM it built must hold the table
and every plot, drawn with a real size, and the console must stay free of errors.

Chromium comes from Debian's `chromium` package (.ci/run installs it with apt-get). The tests
skip, saying why, only where no chromium binary exists. Screenshots are kept in
`test-artifacts/browser/` at the repository root (or $TUNELAB_TEST_ARTIFACTS), for a person to look at.
"""
from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from tunelab.report import build

from .browser import find_chromium, render

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no chromium binary on PATH: the browser test needs Debian's chromium (`apt-get install chromium`, "
           "which .ci/run does when it can)")

ARTIFACTS = Path(os.environ.get("TUNELAB_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")) / "browser"

# what the rendered page must show: per section, its box and every <svg> in it with its drawn size
PROBE = """(() => {
  const out = {};
  for (const el of document.querySelectorAll('section[id]')) {
    const r = el.getBoundingClientRect();
    out[el.id] = {height: r.height, width: r.width, rows: el.querySelectorAll('tbody tr').length,
      overflow: Math.max(0, ...[...el.querySelectorAll('table')].map(t => t.scrollWidth - el.clientWidth)),
      svgs: [...el.querySelectorAll('svg')].map(s => { const b = s.getBoundingClientRect();
        return {width: b.width, height: b.height, marks: s.querySelectorAll('path, use, rect').length,
                texts: s.querySelectorAll('text').length}; })};
  }
  return out;
})()"""


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def _open(page: Path, tmp_path: Path, shot_name: str):
    run = render(page.resolve().as_uri(), PROBE, profile=tmp_path / "chromium-profile")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / shot_name).write_bytes(run.screenshot)
    (tmp_path / shot_name).write_bytes(run.screenshot)
    width, height = _png_size(run.screenshot)
    assert width >= 1200 and height > 900  # the full page (less a scrollbar), not just the first screen
    assert run.errors() == [], f"console errors: {run.errors()}"
    return run


def _assert_plot(sections: dict, sid: str) -> None:
    assert sid in sections, f"section {sid} missing from the rendered DOM"
    (svg,) = sections[sid]["svgs"]
    assert svg["width"] > 300 and svg["height"] > 150, f"{sid}: plot drawn at {svg['width']}x{svg['height']}"
    assert svg["marks"] > 10 and svg["texts"] > 3, f"{sid}: an empty plot"


def test_compare_report_renders_in_chromium(compare_dir, tmp_path):
    import json

    page = build(compare_dir)
    run = _open(page, tmp_path, "compare-report.png")
    sections = run.probe
    arms = json.loads((compare_dir / "compare.json").read_text())["arms"]
    # two tables (quality, cost), one row per arm each, both within the page's width
    assert sections["table"]["rows"] == 2 * len(arms) and sections["table"]["height"] > 100
    assert sections["table"]["overflow"] <= 1, f"the arms tables are {sections['table']['overflow']} px wider than the page"
    for sid in ("plot-learning-curve", "plot-quality-cost", "plot-loss", "plot-toxicity"):
        _assert_plot(sections, sid)
    for sid in ("summary", "disagreements", "safety", "signatures", "configs", "missing"):
        assert sections[sid]["height"] > 0, sid
    assert sections["disagreements"]["rows"] > 0
    assert 'data-arm="zero_shot"' in run.dom and "lora-n32" in run.dom  # the DOM Chromium built, not our file


def test_report_with_missing_pieces_renders(compare_copy, tmp_path):
    (compare_copy / "compare.json").unlink()
    (compare_copy / "arms" / "lora-n16" / "eval" / "results.json").unlink()
    run = _open(build(compare_copy), tmp_path, "compare-report-missing-pieces.png")
    sections = run.probe
    assert "plot-learning-curve" not in sections
    _assert_plot(sections, "plot-quality-cost")
    _assert_plot(sections, "plot-loss")
    assert sections["missing"]["height"] > 0 and "compare.json: not found" in run.dom


@pytest.mark.parametrize("which, plot", [("arms/few_shot-k2/eval", "plot-metrics"), ("arms/lora-n32/train", "plot-loss")])
def test_eval_and_train_reports_render(compare_dir, tmp_path, which, plot):
    folder = shutil.copytree(compare_dir / which, tmp_path / "folder")
    run = _open(build(folder), tmp_path, f"{which.split('/')[-1]}-report.png")
    assert run.probe["table"]["height"] > 50
    _assert_plot(run.probe, plot)


def test_console_errors_are_caught(tmp_path):
    """The check can fail: a page with a broken image and a script error shows both."""
    page = tmp_path / "bad.html"
    page.write_text('<!doctype html><html><body><section id="table"></section><img src="nope.png">'
                    '<script>console.error("boom"); missingFunction();</script></body></html>')
    run = render(page.as_uri(), PROBE, profile=tmp_path / "profile")
    texts = " ".join(e["text"] for e in run.errors())
    assert "nope.png" in texts and "boom" in texts and "missingFunction" in texts
