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
    sc = Scenario(clients=2, rounds=3, attack_rounds=(2,), guard_stop_at_first=False)
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


def test_report_explains_itself(report):
    page = report.read_text()
    verdict, images = page.index("<h2>Verdict</h2>"), page.index("What the server reconstructed")
    explained = page.index("<h2>Per round</h2>")
    assert verdict < explained < images  # the verdict and its explanation before the tables
    top = page[verdict : page.index("<h2>How to read")]
    # the reason sits at the top, once for the two clients that refused, with its exposure
    assert top.count("forensics.imprint") == 1
    assert "Round 2: 2 refusals (clients 0, 1)" in top
    assert "this round would expose" in top and "of your 64 images" in top
    # definitions: leaked vs recovered, the 30 dB criterion, the guard score
    legend = page[verdict:explained]
    assert "30 dB" in legend and "<i>recovered</i>" in legend
    assert "measured value / threshold" in legend
    # every detector's verdict for every client, and per-client rows
    for name in ("health", "architecture", "forensics", "transmit-snr", "scale", "exposure"):
        assert f"<th>{name}</th>" in page
    assert page.count("<tr class='flag'>") == 2  # the two refusals in the per-client table
    # configuration, version and the Guard's cost
    from gradguard import __version__

    tail = page[images:]
    assert f"gradguard {__version__}" in tail and "gradguard demo --engine inprocess" in tail
    assert "ms per inspected model" in tail and "of local training" in tail
