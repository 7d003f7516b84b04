"""Ends the processes of a Ray that a driver started, once the driver is gone.

Run by `fcn_deploy.bulk.batch` as a script (``python -I -S _ray_reaper.py NAME=TOKEN``, standard
library only, never imported) before the driver starts a local Ray, in a session of its own so
that Ctrl-C on the terminal does not reach it. Every process Ray starts inherits ``NAME=TOKEN``
in its environment.

Ray ends its GCS and raylet with the driver (they die with their parent), and its workers follow
the raylet, but its agents, finding the raylet gone, first try for a minute to report that to the
GCS, which is gone too. This script waits for the end of its standard input, the read end of a
pipe whose write end only the driver holds, so it sees the driver end however it ends (``kill
-9`` included), then sends SIGTERM to every process of this user whose environment holds the
token, and SIGKILL to those still there 3 s later.
"""

import contextlib
import os
import signal
import sys
import time


def holders(token: bytes) -> list[int]:
    """The processes whose environment holds ``token`` (Linux: /proc; elsewhere none)."""
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if token in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue  # gone, or another user's
    return found


def main() -> None:
    token = sys.argv[1].encode()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):
        pass  # the driver never writes: this returns when its end closes
    deadline = time.monotonic() + 3.0
    while (pids := holders(token)) and time.monotonic() < deadline + 10.0:
        sig = signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        time.sleep(0.2)


if __name__ == "__main__":
    main()
