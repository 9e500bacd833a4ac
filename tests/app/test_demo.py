"""``medseg demo``: areas by hand, the one-line install hint without gradio, and the page in a real browser.

The browser test starts the demo on localhost (a free port), opens it in headless Chromium (Debian's
``chromium`` package, driven by Playwright through ``executable_path``: Playwright's own browser download is
never used), uploads a PNG of the tiny run's data, waits for the overlay and checks the area table against
the mask the Python API predicts. It saves a screenshot (to ``$MEDSEG_DEMO_SCREENSHOT`` too when set: that
is how ``docs/demo.png`` is made). It skips, saying why, without gradio, playwright or chromium.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.app.session import Segmentation, area_markdown, area_rows
from medseg.cli import app
from tiny_runs import TINY_UNET, make_ct, train_tiny

NAMES = ["background", "liver", "tumour"]


def test_areas_by_hand() -> None:
    labels = np.zeros((2, 4, 5), np.int64)
    labels[1, :2, :3] = 1  # slice 1: 6 liver pixels, 1 tumour pixel
    labels[1, 3, 4] = 2
    labels[0, 0, 0] = 1  # slice 0: 1 liver pixel
    seg = Segmentation("v", np.zeros((2, 4, 5)), labels, (2.0, 0.5, 0.25), Path("m.nii.gz"))
    rows = area_rows(seg, NAMES, index=1)
    assert rows[0] == {"class": "liver", "pixels": 6, "percent": pytest.approx(30.0), "mm2": pytest.approx(0.75),
                       "voxels": 7, "ml": pytest.approx(7 * 0.25 / 1000)}
    assert rows[1]["pixels"] == 1 and rows[1]["percent"] == pytest.approx(5.0) and rows[1]["voxels"] == 1
    table = area_markdown(seg, NAMES, index=1)
    assert "| liver | 6 | 30.00 | 0.8 | 7 | 0.00 |" in table and "slice 2" in table
    flat = Segmentation("p", np.zeros((4, 5)), labels[1], None, Path("m.png"))
    assert "| class | pixels (image) | % of image |" in area_markdown(flat, NAMES)
    assert area_rows(flat, NAMES)[0]["mm2"] is None and "no pixel spacing" in area_markdown(flat, NAMES)


def test_demo_without_gradio_says_how_to_install(monkeypatch) -> None:
    import medseg.app.demo as demo

    monkeypatch.setattr(demo, "gradio_available", lambda: False)
    res = CliRunner().invoke(app, ["demo", "no-such-run"])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and 'pip install "medseg[demo]"' in res.output


def _chromium() -> str | None:
    return os.environ.get("MEDSEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """A one-epoch U-Net on 12 phantom-ct slices; ``MEDSEG_DEMO_RUN`` (a phantom-ct run folder) replaces it
    when making the docs screenshot with a better-trained run."""
    if os.environ.get("MEDSEG_DEMO_RUN"):
        from medseg.config import load_config

        run = Path(os.environ["MEDSEG_DEMO_RUN"])
        root = Path(load_config(str(run / "config.yaml")).data.root)
        return run, root if root.is_absolute() else run.parent / root  # trained from the run's parent folder
    data = make_ct(tmp_path_factory, count=12)
    run = train_tiny(data, tmp_path_factory, [*TINY_UNET, "trainer.max_epochs=1"], name="demo")
    return run, data


def test_demo_in_headless_chromium(tiny_run, tmp_path) -> None:
    for module, extra in (("gradio", "medseg[demo]"), ("playwright", "playwright (medseg[dev])")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install {extra}")
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH: apt-get install chromium (or set MEDSEG_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    from medseg.api import load_run, predict
    from medseg.app.demo import build_app
    from medseg.app.session import DemoSession

    run, data = tiny_run
    image = data / "images" / f"{(data / 'splits' / 'test.txt').read_text().split()[0]}.png"  # an unseen slice
    expected = predict(load_run(run), image)  # what the page must report
    liver = int((expected == 1).sum())
    start = time.perf_counter()
    session = DemoSession(run, workdir=tmp_path / "work")
    demo = build_app(session)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            chrome = p.chromium.launch(executable_path=browser, headless=True, args=["--no-sandbox"])
            page = chrome.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#upload input[type=file]").set_input_files(str(image))
            try:  # generous: a loaded CI machine; the page answers in ~2 s on an idle one
                page.locator("#overlay img").wait_for(timeout=90_000)
                page.locator("#areas table").wait_for(timeout=30_000)
            except Exception:
                pytest.fail(f"no overlay; the page says: {page.locator('body').inner_text()[:500]!r}")
            text = page.locator("#areas").inner_text()
            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=True)
            mask_name = page.locator("#mask").inner_text().replace("\n", "")
            chrome.close()
    finally:
        demo.close()
    seconds = time.perf_counter() - start
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in text.splitlines() if "\t" in line}
    assert rows["liver"][0] == f"{liver:,}" and rows["liver"][1] == f"{100 * liver / expected.size:.2f}"
    assert set(rows) >= {"class", "liver", "spleen", "kidney", "gallbladder", "liver_lesion", "vessel"}
    assert f"{image.stem}_mask.png" in mask_name
    written = next((tmp_path / "work").glob(f"*/{image.stem}_mask.png"))
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(written)), expected.astype(np.uint8))  # 7 classes: indices
    assert shot.stat().st_size < 300_000 and Image.open(shot).format == "PNG"
    target = os.environ.get("MEDSEG_DEMO_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)
    print(f"demo: page up, uploaded, overlay and areas shown in {seconds:.1f} s")
