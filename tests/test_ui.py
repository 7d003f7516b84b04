"""``fcn-ui`` in a real browser: Debian's Chromium, headless, driven by Selenium, on loopback.

One page (a real ``fcn-ui`` subprocess on a small ONNX model) and one browser for the module.
What the page shows is checked against `Segmenter.predict` on the same pixels: the legend's pixel
counts, the label PNG, the class under the cursor, a video's per-frame counts. The module's
screenshot goes to the test's output, and to ``$FCN_UI_SCREENSHOT`` when set (docs/serving.md's
picture: ``FCN_UI_SCREENSHOT=docs/images/fcn-ui.png pytest tests/test_ui.py``).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from test_api import scene
from test_cli_errors import png_header
from ui_helpers import (
    FCN_UI,
    PageProcess,
    browser_paths,
    data_url_bytes,
    files_under,
    requested_urls,
    screenshot,
    small_onnx,
    start_browser,
    upload,
)

from fcn_deploy import FCNError
from fcn_deploy.api import Segmenter
from fcn_deploy.imageio import read_label_png

pytest.importorskip("gradio", reason="needs the ui extra (gradio)")

from fcn_deploy.serve.ui import UIConfig, Upload, parse_uploads

MAX_SIZE = (256, 320)
MAX_UPLOAD_MB = 1.0  # small, so that the test of the upload limit sends little


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_onnx(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def local(model: Path) -> Segmenter:
    return Segmenter.load(model, device="cpu")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Pictures, a short video and bad files, as the user would pick them."""
    root = tmp_path_factory.mktemp("inputs")
    cv2.imwrite(str(root / "street.png"), scene(120, 160, 3))
    cv2.imwrite(str(root / "gray.png"), cv2.cvtColor(scene(40, 50, 4), cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(root / "too-large.png"), scene(300, 400, 5))  # over the model's 256×320
    (root / "broken.png").write_bytes(b"not a png at all")
    (root / "bomb.png").write_bytes(png_header(20000, 20000))  # claims 400 megapixels
    (root / "heavy.bin").write_bytes(os.urandom(int(1.5 * MAX_UPLOAD_MB * 2**20)))
    video = cv2.VideoWriter(str(root / "clip.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), 10, (128, 96))
    for k in range(12):
        video.write(scene(96, 128, 40 + k))
    video.release()
    return {p.name: p for p in root.iterdir()}


@pytest.fixture(scope="module")
def page(model: Path, tmp_path_factory: pytest.TempPathFactory):
    """``fcn-ui MODEL`` with a TMPDIR of its own: everything it leaves on disk shows there."""
    root = tmp_path_factory.mktemp("page")
    process = PageProcess(
        [str(model), "--device", "cpu", "--max-upload-mb", str(MAX_UPLOAD_MB), "--opacity", "0.6"],
        root / "fcn-ui.log", root / "tmp",
    )  # fmt: skip
    try:
        process.wait_ready()
        # ONNX Runtime writes $TMPDIR/.ses when imported: files from before any request
        process.baseline = files_under(process.tmpdir)
        yield process
    finally:
        code = process.stop()
        assert code == 0, process.output()[-3000:]
        assert "Traceback" not in process.output(), process.output()[-3000:]
        # its private folder (Gradio's included) is gone with it
        left = {p.relative_to(process.tmpdir).parts[0] for p in process.tmpdir.rglob("*")}
        assert left <= {".ses"}, left


@pytest.fixture(scope="module")
def browser(page: PageProcess, tmp_path_factory: pytest.TempPathFactory):
    paths = browser_paths()
    if isinstance(paths, str):
        pytest.skip(paths)
    root = tmp_path_factory.mktemp("browser")
    driver = start_browser(root / "profile", root / "downloads")
    driver.downloads = root / "downloads"
    try:
        driver.get(page.url)
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#fcn-upload input[type=file]")
        )
        yield driver
    finally:
        driver.quit()


def _cards(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#fcn-result .fcn-card")


def _legend(card: Any) -> dict[int, int]:
    from selenium.webdriver.common.by import By

    rows = card.find_elements(By.CSS_SELECTOR, ".fcn-legend tr")
    return {int(r.get_attribute("data-class")): int(r.get_attribute("data-pixels")) for r in rows}


def _counts(labels: np.ndarray) -> dict[int, int]:
    counts = np.bincount(labels.ravel())
    return {int(c): int(counts[c]) for c in np.flatnonzero(counts)}


def test_image_legend_labels_and_hover_match_segmenter(
    browser: Any, page: PageProcess, inputs: dict[str, Path], local: Segmenter, tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    got = upload(browser, inputs["street.png"], inputs["gray.png"])
    assert [c.get_attribute("data-name") for c in got] == ["street.png", "gray.png"]
    for card, name in zip(got, ("street.png", "gray.png"), strict=True):
        want = local.predict(cv2.imread(str(inputs[name]), cv2.IMREAD_UNCHANGED))
        assert _legend(card) == _counts(want), name
        cells = card.find_elements(By.CSS_SELECTOR, "td.fcn-share")
        shares = [float(td.text.rstrip(" %")) for td in cells]
        assert abs(sum(shares) - 100.0) < 0.05 * len(shares)
        assert shares == sorted(shares, reverse=True)
        png = card.find_element(By.CSS_SELECTOR, "a.fcn-save-labels").get_attribute("href")
        (tmp_path / f"{name}-labels.png").write_bytes(data_url_bytes(png))
        np.testing.assert_array_equal(read_label_png(tmp_path / f"{name}-labels.png"), want)
        timing = card.find_element(By.CSS_SELECTOR, ".fcn-timing").text
        assert re.fullmatch(
            r"decode [\d.]+ ms · preprocess [\d.]+ ms · model [\d.]+ ms · labels [\d.]+ ms · "
            r"page [\d.]+ ms", timing
        ), timing  # fmt: skip

    # the class under the cursor, at a few points of the first picture
    card = got[0]
    want = local.predict(cv2.imread(str(inputs["street.png"])))
    view = card.find_element(By.CSS_SELECTOR, ".fcn-view")
    assert (view.size["width"], view.size["height"]) == (160, 120)  # shown at its own size
    names = local.class_names
    for dx, dy in ((-60, -40), (0, 0), (50, 30), (70, -50)):
        ActionChains(browser).move_to_element_with_offset(view, dx, dy).perform()
        text = card.find_element(By.CSS_SELECTOR, ".fcn-hover").text
        found = re.fullmatch(r"(.+) \(class (\d+)\) at x=(\d+), y=(\d+)", text)
        assert found, text
        k, x, y = int(found.group(2)), int(found.group(3)), int(found.group(4))
        assert abs(x - (80 + dx)) <= 1 and abs(y - (60 + dy)) <= 1, text
        assert k == want[y, x] and found.group(1) == names[k], text


def test_opacity_slider_and_overlay_download(
    browser: Any, page: PageProcess, inputs: dict[str, Path], local: Segmenter
) -> None:
    """The slider sets the overlay's opacity at once; the overlay saved is the one shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    card = upload(browser, inputs["street.png"])[0]
    colours = card.find_element(By.CSS_SELECTOR, "img.fcn-colours")
    assert float(colours.value_of_css_property("opacity")) == pytest.approx(0.6)  # --opacity
    number = browser.find_element(By.CSS_SELECTOR, "#fcn-opacity input[type=number]")
    number.send_keys(Keys.CONTROL, "a")
    number.send_keys("0.8", Keys.ENTER)
    deadline = time.monotonic() + 30
    while float(colours.value_of_css_property("opacity")) != pytest.approx(0.8):
        assert time.monotonic() < deadline, colours.value_of_css_property("opacity")
        time.sleep(0.1)
    card.find_element(By.CSS_SELECTOR, "a.fcn-save-overlay").click()
    saved = browser.downloads / "street_overlay.png"
    while not saved.exists():
        assert time.monotonic() < deadline + 30, list(browser.downloads.iterdir())
        time.sleep(0.1)
    time.sleep(0.2)
    image = cv2.imread(str(inputs["street.png"]))
    want = local.overlay(image, local.predict(image), alpha=0.8)
    got = cv2.imread(str(saved))
    assert got.shape == want.shape
    # the page shows the input as a JPEG: close to the exact overlay, not equal to it
    assert np.abs(got.astype(int) - want.astype(int)).mean() < 3.0


def test_bad_files_get_one_line_errors(
    browser: Any, page: PageProcess, inputs: dict[str, Path], local: Segmenter, tmp_path: Path
) -> None:
    """Each refusal is one line naming the file; good files sent with them are answered."""
    expected = {
        "broken.png": "16 bytes that do not decode as an image",
        "bomb.png": "is 400.0 megapixels, over the limit max_megapixels=100",
        "too-large.png": (
            "an image of 300x400 (HxW) is larger than this model accepts (up to 256x320)"
        ),
    }
    for name, fragment in expected.items():
        shown = upload(browser, inputs[name], inputs["gray.png"])
        assert [e.get_attribute("class") for e in shown] == ["fcn-error", "fcn-card fcn-image"]
        line = shown[0].text
        assert line.startswith(f"error: {name}: ") and fragment in line, line
        assert "\n" not in line and "Traceback" not in line, line
    # over the upload limit: refused in the page, before anything is sent
    shown = upload(browser, inputs["heavy.bin"])
    assert shown[0].text == (
        f"error: 1.5 MB of files at once; this page takes up to {MAX_UPLOAD_MB:.1f} MB"
    )
    screenshot(browser, tmp_path / "errors.png")


def test_short_video_plays_with_per_frame_class_counts(
    browser: Any, page: PageProcess, inputs: dict[str, Path], local: Segmenter
) -> None:
    from selenium.webdriver.common.by import By

    (card,) = upload(browser, inputs["clip.mp4"])
    assert "fcn-video" in card.get_attribute("class")
    data = json.loads(card.get_attribute("data-counts"))
    capture = cv2.VideoCapture(str(inputs["clip.mp4"]))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert data["frames"] == list(range(len(frames))) and data["pixels"] == 96 * 128
    for k, frame in enumerate(frames):
        counts = np.bincount(local.predict(frame).ravel(), minlength=21)
        assert data["counts"][k] == [int(counts[c]) for c in data["classes"]], f"frame {k}"
        assert counts.sum() == sum(data["counts"][k])
    assert card.find_elements(By.CSS_SELECTOR, ".fcn-plot svg")
    deadline = time.monotonic() + 30
    while True:  # the overlay video plays in the page
        state = browser.execute_script(
            "const v = arguments[0].querySelector('video.fcn-player');"
            "return [v.readyState, v.duration, v.videoWidth, v.error && v.error.message,"
            " v.currentTime];",
            card,
        )
        if (state[0] >= 2 and state[4] > 0) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert state[0] >= 2 and state[2] == 128 and state[3] is None, state
    assert state[1] == pytest.approx(len(frames) / 10, abs=0.15), state


def test_page_shows_the_model_facts(browser: Any, local: Segmenter) -> None:
    from selenium.webdriver.common.by import By

    facts = {
        row.get_attribute("data-fact"): row.find_element(By.TAG_NAME, "td").get_attribute(
            "textContent"
        )
        for row in browser.find_elements(By.CSS_SELECTOR, "#fcn-facts tr")
    }
    assert facts["model"] == "fcn8s.onnx"
    assert facts["variant"] == "fcn8s (width 0.125)"
    assert facts["classes"].startswith("21") and "tvmonitor" in facts["classes"]
    assert (facts["precision"], facts["backend"], facts["device"]) == ("fp32", "onnxruntime", "cpu")
    assert facts["verification"] == "not verified at export"
    assert facts["images"] == "1x1..256x320 (H×W), at most 100 megapixels"
    assert facts["uploads"].startswith("up to 8 files and 1 MB at once")


def test_nothing_on_disk_and_no_request_off_loopback(
    browser: Any, page: PageProcess, inputs: dict[str, Path], tmp_path: Path
) -> None:
    """After every kind of request: no file in the page's TMPDIR, Gradio's upload route
    refused, oversized requests refused before they are read, and the browser never asked
    anything of another host. The page's screenshot goes to the test's output (and docs)."""
    from selenium.webdriver.common.by import By

    upload(browser, inputs["street.png"], inputs["clip.mp4"], inputs["broken.png"])
    assert files_under(page.tmpdir) == page.baseline
    request = urllib.request.Request(
        page.url + "gradio_api/upload", data=b"--x\r\n", method="POST",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403
    # a request body over the limit is refused from its declared length, before it is read
    connection = http.client.HTTPConnection("127.0.0.1", page.port, timeout=30)
    connection.putrequest("POST", "/gradio_api/queue/join")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(3 * 2**20))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and b"over" in response.read()
    connection.close()
    # ... or, without a declared length, once it has read that much
    connection = http.client.HTTPConnection("127.0.0.1", page.port, timeout=30)
    connection.putrequest("POST", "/gradio_api/queue/join")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    chunk = b"x" * 2**16
    for _ in range(48):
        connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    assert response.status == 413 and b"over" in response.read()
    connection.close()
    assert files_under(page.tmpdir) == page.baseline

    hosts = {re.sub(r"^\w+://([^/]+)/.*$", r"\1", u) for u in requested_urls(browser)
             if u.startswith(("http:", "https:", "ws:", "wss:"))}  # fmt: skip
    assert hosts == {f"127.0.0.1:{page.port}"}, hosts

    # the picture of the page: a larger scene and the video
    cv2.imwrite(str(tmp_path / "scene.png"), scene(*MAX_SIZE, 7))
    upload(browser, tmp_path / "scene.png", inputs["clip.mp4"])
    video = browser.find_element(By.CSS_SELECTOR, "video.fcn-player")
    browser.execute_script("arguments[0].scrollIntoView()", video)  # Chromium pauses it offscreen
    deadline = time.monotonic() + 30
    while not browser.execute_script("return arguments[0].currentTime > 0.3", video):
        assert time.monotonic() < deadline, "the overlay video does not play"
        time.sleep(0.1)
    shot = screenshot(browser, tmp_path / "fcn-ui.png")
    if os.environ.get("FCN_UI_SCREENSHOT"):
        Path(os.environ["FCN_UI_SCREENSHOT"]).write_bytes(shot.read_bytes())


# -- without a browser ----------------------------------------------------------------------------


def test_fcn_ui_options_one_line_errors(model: Path, tmp_path: Path) -> None:
    """Bad options, a missing model, a busy port and no fcn-serve: exit 2 and one line."""
    import socket

    from serve_helpers import free_ports

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*FCN_UI, *map(str, args)], capture_output=True, text=True,
                              timeout=180)  # fmt: skip

    port, other = free_ports(2)
    for args, message in (
        ((), "give either MODEL or --server ADDRESS"),
        ((model, "--server", "127.0.0.1:1"), "give either MODEL or --server ADDRESS"),
        ((tmp_path / "missing.onnx",), f"{tmp_path / 'missing.onnx'}: no such model file"),
        (("--server", f"127.0.0.1:{other}"), "no Triton server answers"),
        ((model, "--opacity", "1.5"), "argument --opacity"),
        ((model, "--server-x"), "unrecognized arguments"),
    ):
        result = run(*args, "--port", port)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and message in result.stderr, (args, result.stderr)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        result = run(model, "--device", "cpu", "--port", port)
    # the model is loaded before the port is taken: the fixture's --no-verify export warns first
    *warnings, error = result.stderr.splitlines()
    assert result.returncode == 2 and all("without verification" in w for w in warnings), warnings
    assert error.startswith(f"error: port={port} cannot be used on 127.0.0.1"), result.stderr


def test_parse_uploads_examples() -> None:
    import base64

    def payload(*files: tuple[str, bytes]) -> str:
        return json.dumps([{"name": n, "data": base64.b64encode(d).decode()} for n, d in files])

    assert parse_uploads(None, 2, 100) == [] and parse_uploads("", 2, 100) == []
    assert parse_uploads(payload(("a.png", b"12"), ("b\nc.png", b"")), 2, 100) == [
        Upload("a.png", b"12"), Upload("b\\nc.png", b"")
    ]  # fmt: skip
    for bad, fragment in (
        ("{", "does not hold the page's list of files"),
        ('[{"name": 1, "data": ""}]', "does not hold the page's list of files"),
        (payload(("a", b"1"), ("b", b"2"), ("c", b"3")), "3 files at once; this page takes up"),
        (payload(("a", b"x" * 101)), "101 bytes of files at once; this page takes up to 100 bytes"),
        ('[{"name": "a.png", "data": "!!!!"}]', "a.png: the file did not arrive whole"),
    ):
        with pytest.raises(FCNError, match=re.escape(fragment)):
            parse_uploads(bad, 2, 100)


def test_ui_config_refuses_bad_values() -> None:
    bad = {"port": 0, "max_upload_mb": float("nan"), "max_files": 0, "concurrency": 0,
           "opacity": 1.5}  # fmt: skip
    for field, value in bad.items():
        with pytest.raises(FCNError) as caught:
            UIConfig(**{field: value})
        assert caught.value.param == field
    assert UIConfig().max_body_bytes > UIConfig().max_upload_bytes * 4 // 3
