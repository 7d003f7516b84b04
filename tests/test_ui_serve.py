"""``fcn-ui --server`` in front of a running ``fcn-serve``, under load, on loopback.

One fcn-serve and one page for the module. The page's requests are sent by Gradio's own client
(what the page's script sends: the files inside the event request), bounded in number, while
fcn-serve answers its own clients at the same time; every answer is checked against local
`Segmenter.predict`, the resident memory of both processes is read between rounds, and SIGTERM
stops both (exit 0, nothing of them left running).
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from serve_helpers import ServerProcess
from test_api import scene
from ui_helpers import PageProcess, rss_bytes, small_onnx

from fcn_deploy.api import Segmenter

pytest.importorskip("gradio_client", reason="needs the ui extra (gradio)")
pytest.importorskip("tritonclient.http", reason="needs the serve extra (tritonclient)")
pytest.importorskip("pytriton", reason="needs the serve extra (nvidia-pytriton)")
# gradio_client sends telemetry unless this is set, whatever its analytics_enabled argument says
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from gradio_client import Client

from fcn_deploy.serve.client import RemoteSegmenter

ROUNDS = 5  # of load; memory is compared between the second and the last
PAGE_CLIENTS, PAGE_REQUESTS = 4, 3  # per round: 12 page requests (a good and a bad file each)
SERVE_CLIENTS, SERVE_REQUESTS = 2, 6  # and 12 requests straight to fcn-serve
FLAT = 40 * 2**20  # resident memory may not grow more than this over the last rounds


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_onnx(tmp_path_factory.mktemp("model"))


def _payload(*files: tuple[str, bytes]) -> str:
    """What the page's script sends: its list of files, base64."""
    return json.dumps([{"name": n, "data": base64.b64encode(d).decode()} for n, d in files])


def _cards(html: str) -> dict[str, dict[int, int] | str]:
    """Each file's legend (class → pixels) or error line, from the page's answer."""
    found: dict[str, dict[int, int] | str] = {}
    cards = r'<section class="fcn-card[^"]*" data-name="([^"]+)"(.*?)</section>'
    for name, body in re.findall(cards, html):
        rows = re.findall(r'data-class="(\d+)" data-pixels="(\d+)"', body)
        found[name] = {int(c): int(n) for c, n in rows}
    for line in re.findall(r'<p class="fcn-error">(.*?)</p>', html):
        found[line.split(": ")[1]] = line
    return found


@pytest.mark.slow
def test_page_and_fcn_serve_under_load_then_sigterm(
    model: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("servers")
    server = ServerProcess(model, root / "serve.log", ["-q"])
    page = None
    try:
        server.wait_ready()
        page = PageProcess(["--server", server.http, "--concurrency", "2", "--queue", "8"],
                           root / "ui.log", root / "tmp")  # fmt: skip
        page.wait_ready()
        # the model facts on the page are what fcn-serve publishes
        with urllib.request.urlopen(page.url + "config", timeout=30) as response:
            config = response.read().decode()
        facts = (f"fcn on fcn-serve at http://{server.http}", "onnxruntime", "fp32",
                 "not verified at export", "1x1..256x320 (H×W)")  # fmt: skip
        for fact in facts:
            assert fact in config, fact
        _load(page, server, model)
    finally:
        codes = _stop_both(page, server)
    assert codes == (0, 0), (codes, page.output()[-2000:] if page else "", server.output()[-2000:])
    assert "Traceback" not in page.output(), page.output()[-3000:]


def _load(page: PageProcess, server: ServerProcess, model: Path) -> None:
    local = Segmenter.load(model, device="cpu")
    rng = np.random.default_rng(3)
    sizes = [(int(rng.integers(24, 200)), int(rng.integers(24, 260))) for _ in range(5)]
    pictures = {f"p{k}.png": scene(h, w, 60 + k) for k, (h, w) in enumerate(sizes)}
    files = {name: cv2.imencode(".png", image)[1].tobytes() for name, image in pictures.items()}
    labels = {name: local.predict(image) for name, image in pictures.items()}
    counts = {name: {int(c): int(n) for c, n in enumerate(np.bincount(v.ravel())) if n}
              for name, v in labels.items()}  # fmt: skip
    answered = {"page": 0, "fcn-serve": 0}
    lock = threading.Lock()

    def page_client(seed: int) -> None:
        client = Client(page.url, verbose=False, analytics_enabled=False, download_files=False)
        chooser = np.random.default_rng(seed)
        try:
            for _ in range(PAGE_REQUESTS):
                name = str(chooser.choice(list(files)))
                html, cleared = client.predict(
                    _payload((name, files[name]), ("bad.png", b"garbage")), 0.5,
                    api_name="/segment",
                )  # fmt: skip
                found = _cards(html)
                assert found[name] == counts[name], name
                assert "7 bytes that do not decode as an image" in str(found["bad.png"])
                assert cleared == ""
                with lock:
                    answered["page"] += 1
        finally:
            client.close()

    def serve_client(seed: int) -> None:
        chooser = np.random.default_rng(seed)
        with RemoteSegmenter(server.http) as remote:
            for _ in range(SERVE_REQUESTS):
                name = str(chooser.choice(list(files)))
                np.testing.assert_array_equal(remote.predict(pictures[name]), labels[name])
                with lock:
                    answered["fcn-serve"] += 1

    memory = []
    for r in range(ROUNDS):
        with ThreadPoolExecutor(PAGE_CLIENTS + SERVE_CLIENTS) as pool:
            jobs = [pool.submit(page_client, 100 * r + t) for t in range(PAGE_CLIENTS)]
            jobs += [pool.submit(serve_client, 1000 + 100 * r + t) for t in range(SERVE_CLIENTS)]
            for job in jobs:
                job.result()  # re-raises a wrong answer or a failed request
        memory.append((rss_bytes(page.proc.pid), rss_bytes(server.proc.pid)))
    assert answered == {"page": ROUNDS * PAGE_CLIENTS * PAGE_REQUESTS,
                        "fcn-serve": ROUNDS * SERVE_CLIENTS * SERVE_REQUESTS}  # fmt: skip
    print("resident MiB after each round (page, fcn-serve):",
          [(a >> 20, b >> 20) for a, b in memory])  # fmt: skip
    for k, what in enumerate(("fcn-ui", "fcn-serve")):
        growth = max(m[k] for m in memory[2:]) - memory[1][k]
        assert growth < FLAT, f"{what} grew {growth >> 20} MiB: {[m[k] >> 20 for m in memory]}"


def _stop_both(page: PageProcess | None, server: ServerProcess) -> tuple[int, int]:
    """SIGTERM both at once (with page requests in flight); each must exit 0, leaving nothing."""
    if page is None:
        return 0, server.stop()
    busy = threading.Event()

    def keep_asking() -> None:  # the page is busy when the signal comes
        client = Client(page.url, verbose=False, analytics_enabled=False)
        image = cv2.imencode(".png", scene(200, 250, 9))[1].tobytes()
        try:
            for _ in range(20):
                busy.set()
                client.predict(_payload(("busy.png", image)), 0.5, api_name="/segment")
        except Exception:  # the page went away, as it should
            pass
        finally:
            busy.set()
            client.close()

    asker = threading.Thread(target=keep_asking, daemon=True)
    asker.start()
    busy.wait(60)
    time.sleep(0.3)
    with ThreadPoolExecutor(2) as pool:  # each stop() sends one SIGTERM and waits
        stops = pool.submit(page.stop), pool.submit(server.stop)
        codes = stops[0].result(), stops[1].result()
    asker.join(60)
    return codes
