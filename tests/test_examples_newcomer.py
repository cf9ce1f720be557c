"""The README's first steps: a digit written where asked (not into the clone), readable detection labels,
and a perf_analyzer that a clone can install."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
README = (ROOT / "README.md").read_text(encoding="utf-8")
sys.path.insert(0, str(EXAMPLES))

import draw_detections  # noqa: E402  (examples/ is not a package)


def test_the_readme_writes_the_digit_outside_the_clone() -> None:
    commands = [line for line in README.splitlines() if "digits.py" in line and "python" in line]
    assert commands, "the README says how to get a digit image"
    for line in commands:
        output = re.search(r"-o\s+(\S+)", line)
        assert output and output.group(1).startswith("/tmp/"), line
    for line in README.splitlines():  # every client line sends the file it wrote
        if line.startswith(("python examples/client_", "IMAGE=")):
            assert "/tmp/digit.png" in line, line


def test_digits_script_writes_a_held_out_digit_where_told(tmp_path: Path) -> None:
    out = tmp_path / "digit.png"
    result = subprocess.run([sys.executable, str(EXAMPLES / "digits.py"), "-o", str(out), "--index", "3"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    image = np.asarray(Image.open(out))
    assert image.shape == (32, 32, 3) and image.min() < 100 < 250 <= image.max()  # dark ink, light paper
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digit.png"]
    refused = subprocess.run([sys.executable, str(EXAMPLES / "digits.py")], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
    assert refused.returncode == 2 and "-o/--output" in refused.stderr


@pytest.mark.parametrize("background", [(255, 255, 255), (0, 0, 0), (128, 128, 128)])
def test_every_label_reads_against_its_tab(background: tuple[int, int, int]) -> None:
    picture = Image.new("RGB", (640, 480), background)
    n = len(draw_detections.COLOURS)
    boxes = np.array([[40 + 90 * i, 100, 120 + 90 * i, 300] for i in range(n)], dtype=np.float32)
    labels = draw_detections.draw_detections(picture, boxes, np.full(n, 0.9, np.float32),
                                             np.arange(n), [f"class{i}" for i in range(n)])
    pixels = np.asarray(picture)
    assert len(labels) == n
    for box, label in zip(boxes, labels):
        assert label.fill == draw_detections.COLOURS[labels.index(label)]
        assert draw_detections.contrast(label.ink, label.fill) >= 4.5, label
        x0, y0, x1, y1 = label.tab
        tab = pixels[y0:y1, x0:x1].reshape(-1, 3)
        assert y1 <= box[1] + 1  # the tab sits on the box's top edge
        ink_pixels = np.sum(np.all(np.abs(tab.astype(int) - label.ink) <= 40, axis=1))
        fill_pixels = np.sum(np.all(tab == label.fill, axis=1))
        assert ink_pixels >= 10, "the text was drawn in the ink colour"
        assert fill_pixels > len(tab) / 2, "the tab is filled with the box colour"


def test_contrast_is_wcag() -> None:
    assert draw_detections.contrast((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert draw_detections.contrast((10, 20, 30), (10, 20, 30)) == pytest.approx(1.0)
    assert draw_detections.ink_for((70, 240, 240)) == (0, 0, 0)
    assert draw_detections.ink_for((145, 30, 180)) == (255, 255, 255)


def test_the_readme_says_how_to_get_perf_analyzer_and_how_long_it_runs() -> None:
    (line,) = [line for line in README.splitlines() if "perf_analyzer -m" in line]
    assert "examples/get_perf_analyzer.sh" in README
    assert (EXAMPLES / "get_perf_analyzer.sh").is_file()
    section = README[README.index("perf_analyzer -m"):][:1500]
    assert re.search(r"\d+\s*s\b|seconds|minute", section), "how long the default run takes"
    assert line.split()[0].endswith("perf_analyzer")


def test_get_perf_analyzer_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(EXAMPLES / "get_perf_analyzer.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
