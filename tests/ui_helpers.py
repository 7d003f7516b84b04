"""A real ``fcn-ui`` subprocess, and Debian's Chromium driven headless by Selenium, on loopback.

No browser is ever downloaded: the tests use the system's Chromium and chromedriver (Debian's
``chromium`` and ``chromium-driver`` packages, which ``.ci/run`` installs) and skip, saying so,
where they are missing. The browser starts with every background connection of its own off (a
closed network refuses them otherwise) and a fresh profile.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serve_helpers import alive, descendants, free_ports

_SCRIPT = Path(sys.executable).with_name("fcn-ui")
# the console script; `python -m` where the environment was installed before fcn-ui existed
FCN_UI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "fcn_deploy.cli.ui"]
START_TIMEOUT = 180.0  # seconds: model load plus Gradio's import on a busy 2-core machine
RESULT_TIMEOUT = 120.0
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,1000",
)  # fmt: skip


def small_onnx(root: Path, max_size: tuple[int, int] = (256, 320)) -> Path:
    """A width-0.125 FCN-8s with random score layers (labels vary), exported to ``root``."""
    import torch
    from conftest import randomize

    import fcn_deploy
    from fcn_deploy.export import export_onnx
    from fcn_deploy.models import create_model

    torch.manual_seed(0)
    net = randomize(create_model("fcn8s", num_classes=21, width=0.125))
    fcn_deploy.save_checkpoint(net, root / "fcn8s.pt")
    export_onnx(root / "fcn8s.pt", root / "fcn8s.onnx", max_size=max_size, max_batch=4,
                verify=False, progress=False)  # fmt: skip
    return root / "fcn8s.onnx"


def browser_paths() -> tuple[str, str] | str:
    """(chromium, chromedriver), or why the browser tests cannot run here."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs selenium (the dev extra)"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        return "needs Chromium and chromedriver (apt-get install chromium chromium-driver)"
    return chromium, driver


def start_browser(profile: Path, downloads: Path) -> Any:
    """Headless Chromium (fresh profile) logging its network requests; downloads go to
    ``downloads``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = browser_paths()
    assert not isinstance(paths, str), paths
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(paths[1]), options=options)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    return driver


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser requested so far (from its performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            params = message["params"]
            urls.append(params["request"]["url"] if "request" in params else params["url"])
    return urls


def upload(driver: Any, *paths: Path, timeout: float = RESULT_TIMEOUT) -> list[Any]:
    """Pick ``paths`` in the page's file field; wait for the new result (cards and error lines,
    or the upload field's own error line) and return its elements."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script(
        "document.querySelectorAll('#fcn-result .fcn-card, #fcn-result .fcn-error')"
        ".forEach((e) => { e.dataset.old = '1'; });"
    )
    field_ = driver.find_element(By.CSS_SELECTOR, "#fcn-upload input[type=file]")
    field_.send_keys("\n".join(str(p) for p in paths))

    def arrived(d: Any) -> list[Any]:
        status = d.find_elements(By.CSS_SELECTOR, "#fcn-upload .fcn-status")
        if status and status[0].text.startswith("error:"):
            return status
        selector = "#fcn-result .fcn-card:not([data-old]), #fcn-result .fcn-error:not([data-old])"
        return d.find_elements(By.CSS_SELECTOR, selector)

    return WebDriverWait(driver, timeout).until(arrived)


def data_url_bytes(url: str) -> bytes:
    """The bytes of a ``data:...;base64,`` URL."""
    head, _, data = url.partition(",")
    assert head.startswith("data:") and head.endswith(";base64"), head[:40]
    return base64.b64decode(data)


def screenshot(driver: Any, path: Path) -> Path:
    """The whole page as a PNG, below the window's height too (Chromium's own capture)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
    })  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class PageProcess:
    """``fcn-ui ARGS`` on a free loopback port; `stop` sends SIGTERM and checks the exit.

    ``tmpdir`` is its TMPDIR: what it leaves there can be checked."""

    args: list[str]
    log_path: Path
    tmpdir: Path
    env: dict[str, str] = field(default_factory=dict)
    baseline: list[Path] = field(default_factory=list)  # files in tmpdir before any request

    def __post_init__(self) -> None:
        (self.port,) = free_ports(1)
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        env = {**os.environ, "TMPDIR": str(self.tmpdir), **self.env}
        self.proc = subprocess.Popen(
            [*FCN_UI, *self.args, "--port", str(self.port)], stdout=self.log,
            stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"fcn-ui exited {self.proc.returncode}:\n{self.output()}")
            if "ready: " in self.output():
                with urllib.request.urlopen(self.url, timeout=30) as response:
                    assert response.status == 200
                return
            time.sleep(0.3)
        raise AssertionError(f"fcn-ui not ready after {START_TIMEOUT} s:\n{self.output()}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM; wait for the exit; assert no process it started survives."""
        children = descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:  # never leave a page behind, even when failing
                self.proc.kill()
                self.proc.wait()
            self.log.close()
        survivors = [p for p in children if alive(p)]
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        assert not survivors, f"processes left behind by fcn-ui: {survivors}"
        return code


def files_under(folder: Path) -> list[Path]:
    """Regular files (and links) below ``folder``: what a process left on disk there."""
    return sorted(p for p in folder.rglob("*") if not p.is_dir())
