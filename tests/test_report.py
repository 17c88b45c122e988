"""The demo's HTML report renders in headless Chromium with its image grids."""

import shutil
import subprocess

import pytest

from gradguard.bench.inprocess import run_inprocess
from gradguard.bench.scenario import Scenario
from gradguard.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    sc = Scenario(clients=2, rounds=3, attack_rounds=(2,))
    runs = {
        "attack-free": run_inprocess(sc, guarded=False, attacked=False),
        "unguarded": run_inprocess(sc, guarded=False, attacked=True),
        "guarded": run_inprocess(sc, guarded=True, attacked=True),
    }
    out = tmp_path_factory.mktemp("report")
    return write_report(out, sc, runs, {"engine": "inprocess"})


def test_report_references_grids(report):
    page = report.read_text()
    grids = sorted(report.parent.glob("leak_unguarded_round2_client*.png"))
    assert len(grids) == 2
    for grid in grids:
        assert f"src='{grid.name}'" in page
    assert "src='accuracy.png'" in page and "src='detection.png'" in page
    assert "abstained" in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt install chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    import matplotlib.image as mpimg

    flags = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1100,4000", report.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dom = subprocess.run(
        [*flags, "--dump-dom", report.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert dom.count("<img") >= 4 and "leak_unguarded_round2_client0.png" in dom
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[0] >= 3000 and pixels.std() > 0.05  # not a blank page
    # The digit grids put large black image backgrounds on the white page: a broken image
    # would render as a small icon instead.
    dark = (pixels.max(axis=2) < 0.1).mean()
    assert dark > 0.01
