"""The web viewer in a real browser: Debian's Chromium driven by Playwright (no browser download).

Loads the bundled CT, clicks inside the liver on the axial view, waits for the overlay, checks
through the API that the mask is non-empty and that the click reached the server as the voxel
under the cursor, undoes, and saves a screenshot in the test's output folder. Skips when
/usr/bin/chromium or playwright is missing (CI installs both: scripts/install_browser.sh).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx2 as httpx
import nibabel as nib
import numpy as np
import pytest

from sammed.data import SAMPLE_CT, SAMPLE_CT_LIVER_VOXEL
from sammed.server import ServerConfig, create_app
from server_fixtures import RunningServer, tiny_checkpoint

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]

playwright_api = pytest.importorskip("playwright.sync_api")
# In CI a missing browser is a failure (the launch below fails), elsewhere a skip.
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"), reason="Debian chromium not installed (scripts/install_browser.sh)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    root = folder / "data"
    root.mkdir()
    shutil.copy(SAMPLE_CT, root / "ct.nii.gz")
    config = ServerConfig(model="sam-med3d-tiny", checkpoint=tiny_checkpoint(folder / "tiny.pth"), data_root=root)
    with RunningServer(create_app(config)) as running:
        yield running


@pytest.fixture(scope="module")
def page(server):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "/")
        page.evaluate("() => window.sammedViewer.ready")
        page.page_errors = errors
        yield page
        browser.close()


def idle(page) -> None:
    page.wait_for_function("() => window.sammedViewer.busy === 0", timeout=60_000)


def axial_pixel(page, voxel, shape) -> tuple[float, float]:
    """Screen position of a voxel's centre in the axial view, from the tile's rectangle alone.

    The sample CT is stored in RAS order with a diagonal affine, so the axial tile shows i to the
    right and j upwards (anterior at the top), each voxel an equal share of the tile.
    """
    tiles = page.evaluate("() => window.sammedViewer.nv.screenSlices.map(s => [s.axCorSag, s.leftTopWidthHeight])")
    left, top, width, height = next(rect for kind, rect in tiles if kind == 0)
    box = page.locator("#gl").bounding_box()
    x = left + (voxel[0] + 0.5) / shape[0] * width
    y = top + (1 - (voxel[1] + 0.5) / shape[1]) * height
    return box["x"] + x, box["y"] + y


def test_click_on_liver_shows_mask_then_undo(page, server, tmp_path):
    assert nib.aff2axcodes(nib.load(SAMPLE_CT).affine) == ("R", "A", "S")
    page.select_option("#root-files", "image:ct.nii.gz")
    page.click("#open-root")
    idle(page)
    session = page.evaluate("() => window.sammedViewer.api.session")
    headers = {"X-Session-Key": session["session_key"]}
    api = f"{server.url}/api/sessions/{session['session_id']}"
    shape = session["shape"]
    voxel = SAMPLE_CT_LIVER_VOXEL

    page.evaluate(f"() => window.sammedViewer.showVoxel({list(voxel)})")
    x, y = axial_pixel(page, voxel, shape)
    page.mouse.click(x, y)
    idle(page)

    state = httpx.get(api, headers=headers).json()
    (only,) = state["objects"]
    assert only["voxels"] > 0
    (click,) = only["clicks"]
    assert click["positive"] is True
    assert [round(v) for v in click["voxel"]] == list(voxel)
    overlay_sum = page.evaluate("() => window.sammedViewer.overlay.img.reduce((a, b) => a + (b > 0), 0)")
    assert overlay_sum == only["voxels"]  # the overlay shows exactly the server's mask
    page.screenshot(path=str(tmp_path / "viewer_after_click.png"))

    page.click("#undo")
    idle(page)
    state = httpx.get(api, headers=headers).json()
    assert all(obj["voxels"] == 0 for obj in state["objects"]) and state["can_redo"]
    assert page.evaluate("() => window.sammedViewer.overlay.img.reduce((a, b) => a + (b > 0), 0)") == 0

    page.click("#redo")
    idle(page)
    assert httpx.get(api, headers=headers).json()["objects"][0]["voxels"] == only["voxels"]
    page.screenshot(path=str(tmp_path / "viewer.png"))
    print(f"screenshots in {tmp_path}")
    assert page.page_errors == []


def test_right_click_is_negative_and_new_object_gets_its_own_label(page, server):
    session = page.evaluate("() => window.sammedViewer.api.session")
    headers = {"X-Session-Key": session["session_key"]}
    api = f"{server.url}/api/sessions/{session['session_id']}"
    page.click("#new-object")
    idle(page)
    voxel = (60, 50, 20)
    page.evaluate(f"() => window.sammedViewer.showVoxel({list(voxel)})")
    x, y = axial_pixel(page, voxel, session["shape"])
    page.mouse.click(x, y)
    idle(page)
    page.mouse.click(x + 3, y, button="right")
    idle(page)
    objects = {o["object_id"]: o for o in httpx.get(api, headers=headers).json()["objects"]}
    second = objects[2]
    assert [c["positive"] for c in second["clicks"]] == [True, False]
    assert [round(v) for v in second["clicks"][0]["voxel"]] == list(voxel)
    labels = page.evaluate("() => Array.from(new Set(window.sammedViewer.overlay.img)).sort()")
    assert set(labels) <= {0, 1, 2} and 2 in labels


def drag(page, points, shift: bool = False) -> None:
    """Press at the first screen point, pass through the others, release at the last one."""
    if shift:
        page.keyboard.down("Shift")
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*point, steps=3)
    page.mouse.up()
    if shift:
        page.keyboard.up("Shift")
    idle(page)


def slice_labels(api, headers, shape, k) -> np.ndarray:
    reply = httpx.get(f"{api}/labels", params={"offset": f"0,0,{k}", "shape": f"{shape[0]},{shape[1]},1"}, headers=headers)
    return np.frombuffer(reply.content, dtype=reply.headers["X-Dtype"]).reshape(shape[0], shape[1], order="F")


def test_scribble_and_lasso_drags_then_undo(page, server):
    session = page.evaluate("() => window.sammedViewer.api.session")
    headers = {"X-Session-Key": session["session_key"]}
    api = f"{server.url}/api/sessions/{session['session_id']}"
    shape, k = session["shape"], 20
    page.evaluate(f"() => window.sammedViewer.showVoxel([60, 50, {k}])")
    screen = lambda i, j: axial_pixel(page, (i, j, k), shape)  # noqa: E731

    page.click("#new-object")
    idle(page)
    scribbled = page.evaluate("() => window.sammedViewer.activeObject")
    page.select_option("#tool", "scribble")
    drag(page, [screen(80, 55), screen(86, 58), screen(90, 64)])
    objects = {o["object_id"]: o for o in httpx.get(api, headers=headers).json()["objects"]}
    clicks = objects[scribbled]["clicks"]
    assert len(clicks) == 8 and all(c["positive"] for c in clicks)  # the stroke, sampled into 8 clicks
    assert all(abs(c["voxel"][2] - k) < 0.51 for c in clicks) and 79 <= clicks[0]["voxel"][0] <= 81

    page.click("#new-object")
    idle(page)
    lassoed = page.evaluate("() => window.sammedViewer.activeObject")
    page.select_option("#tool", "lasso")
    drag(page, [screen(20, 20), screen(44, 20), screen(44, 44), screen(20, 44), screen(20, 21)])
    filled = slice_labels(api, headers, shape, k)
    assert (filled[22:43, 22:43] == lassoed).all()  # the loop's inside joined the new object
    drag(page, [screen(28, 28), screen(36, 28), screen(36, 36), screen(28, 36), screen(28, 29)], shift=True)
    cut = slice_labels(api, headers, shape, k)
    assert not (cut[30:35, 30:35] == lassoed).any() and (cut[22:26, 22:43] == lassoed).all()
    overlay = np.array(page.evaluate("() => Array.from(window.sammedViewer.overlay.img)"), dtype=np.uint8)
    np.testing.assert_array_equal(overlay.reshape(shape, order="F")[:, :, k], np.minimum(cut, 255))

    page.keyboard.press("Control+z")  # undoes the cut
    idle(page)
    assert (slice_labels(api, headers, shape, k)[22:43, 22:43] == lassoed).all()
    chips = page.locator("#objects").inner_text()
    assert f"object {lassoed}" in chips and "object 1" in chips  # chips show object names; double-click renames
    page.once("dialog", lambda dialog: dialog.accept("spleen"))
    page.locator(f'#objects [data-object-id="{lassoed}"]').dblclick()
    idle(page)
    assert "spleen" in page.locator("#objects").inner_text()
    assert {o["object_id"]: o["name"] for o in httpx.get(api, headers=headers).json()["objects"]}[lassoed] == "spleen"
    page.select_option("#tool", "click")
    assert page.page_errors == []
