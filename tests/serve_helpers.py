"""A real ``fcn-serve`` subprocess on free loopback ports, for the serving tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fcn_deploy.serve.server import process_tree

FCN_SERVE = str(Path(sys.executable).with_name("fcn-serve"))
START_TIMEOUT = 240.0  # seconds: model load plus tritonserver start on a busy 2-core machine


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now."""
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children, ...): the server's own walk."""
    return set(process_tree(pid))


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class ServerProcess:
    """``fcn-serve MODEL`` started on free ports; `stop` sends SIGTERM and checks the exit."""

    model: Path
    log_path: Path
    extra: list[str] = field(default_factory=list)
    model_name: str = "fcn"

    def __post_init__(self) -> None:
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [FCN_SERVE, str(self.model), "--device", "cpu", "--http-port", str(self.http_port),
             "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port),
             "--model-name", self.model_name, *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.children: set[int] = set()

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        import tritonclient.http as http

        client = http.InferenceServerClient(self.http)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"fcn-serve exited {self.proc.returncode}:\n{self.output()}")
            try:
                if all(
                    client.is_model_ready(m)
                    for m in (self.model_name, self.model_name + "_encoded")
                ):
                    self.children = descendants(self.proc.pid)
                    return
            except Exception:
                pass
            time.sleep(0.5)
        raise AssertionError(f"fcn-serve not ready after {START_TIMEOUT} s:\n{self.output()}")

    def stop(self, timeout: float = 90.0) -> int:
        """SIGTERM; wait for the exit; assert no process the server started survives."""
        self.children |= descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:  # never leave a server behind, even when failing
                for pid in [*self.children, self.proc.pid]:
                    if alive(pid):
                        os.kill(pid, signal.SIGKILL)
            self.log.close()
        deadline = time.monotonic() + 10
        while any(alive(p) for p in self.children) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = [p for p in self.children if alive(p)]
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        assert not survivors, f"processes left behind by fcn-serve: {survivors}"
        # PyTriton names the shared memory of tritonserver and its stubs after our process id
        found = subprocess.run(
            ["pgrep", "-af", f"pytrtion{self.proc.pid}-"], capture_output=True, text=True
        ).stdout
        assert not found.strip(), f"tritonserver or a backend stub still running:\n{found}"
        return code
