"""A fuzzing campaign: every property of ``tests/test_fuzz_*.py`` under Hypothesis's ``campaign``
profile (100,000 inputs each), each in a subprocess of its own.

A property that segfaults is recorded as a crash, one that stops taking inputs for ``--stall``
seconds as a hang (it is killed), one that fails as a traceback (Hypothesis's shrunk input and
the error are kept); the campaign goes on with the next. The properties write each input they
run to a record file (``tests/fuzz_helpers.py``), so the count of inputs tried is exact and a
crash or hang comes with the input that caused it, saved beside the results.

    python benchmarks/fuzz_campaign.py                     # every reader, 100,000 inputs each
    python benchmarks/fuzz_campaign.py --only image_gate   # one reader
    python benchmarks/fuzz_campaign.py --profile ci        # a smoke run (150 inputs each)

Results: ``benchmarks/results/fuzz-<date>.json`` and ``.md`` (reader, property, inputs tried,
crashes, hangs, tracebacks, wall time, and the machine); an interrupted campaign writes what ran.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
PACKAGES = ("hypothesis", "pillow", "opencv-python", "protobuf")  # beside machine_info's


@dataclass
class Run:
    """One property's campaign."""

    reader: str  # the file's name after test_fuzz_
    prop: str  # the test function
    profile: str
    inputs: int = 0  # inputs the property ran (its record file's count)
    crashes: int = 0
    hangs: int = 0
    tracebacks: int = 0
    seconds: float = 0.0
    outcome: str = ""  # passed, failed, crashed (SIGSEGV), hung, not run
    detail: str = ""  # the error and shrunk input of a failure; the saved input of a crash/hang
    saved: list[str] = field(default_factory=list)


def properties(only: str | None) -> list[tuple[str, str]]:
    """(reader, node id) of every property in tests/test_fuzz_*.py (``only``: a reader's name)."""
    found = []
    for path in sorted(TESTS.glob("test_fuzz_*.py")):
        reader = path.stem[len("test_fuzz_") :]
        if only is not None and reader != only:
            continue
        listed = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
             str(path.relative_to(ROOT))],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        nodes = [line for line in listed.stdout.splitlines() if "::" in line]
        if not nodes:
            sys.exit(f"{path.name}: no properties collected\n{listed.stdout}{listed.stderr}")
        found += [(reader, node) for node in nodes]
    return found


def run_property(
    reader: str, node: str, profile: str, stall: float, limit: float, keep: Path
) -> Run:
    """Run one property in its own process group; watch its record file for stalls."""
    run = Run(reader, node.split("::", 1)[1], profile)
    record = Path(tempfile.mkstemp(prefix=f"fuzz-{reader}-")[1])
    last_input: bytes | None = None
    log = Path(tempfile.mkstemp(prefix=f"fuzz-{reader}-", suffix=".log")[1])
    env = {**os.environ, "FCN_HYPOTHESIS_PROFILE": profile, "FCN_FUZZ_RECORD": str(record)}
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", node, "-q", "-p", "no:cacheprovider", "-p",
             "no:logging", "--hypothesis-show-statistics", "-x"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        last_change, seen = time.monotonic(), 0
        while proc.poll() is None:
            time.sleep(1.0)
            # the property rewrites the record for every input: a read may catch it empty
            count, last = _read_record(record)
            if count > seen:
                last_change, seen, last_input = time.monotonic(), count, last
            stalled = time.monotonic() - last_change > stall
            if stalled or time.monotonic() - start > limit:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                run.outcome = "hung" if stalled else f"stopped at the {limit:.0f} s limit"
                run.hangs = int(stalled)
                break
    run.seconds = time.monotonic() - start
    count, last = _read_record(record)
    run.inputs = max(count, seen)
    last_input = last if count >= seen else last_input
    text = log.read_text(errors="replace")
    code = proc.returncode
    if not run.outcome:
        if code == 0:
            run.outcome = "passed"
        elif code < 0:
            run.outcome = f"crashed ({signal.Signals(-code).name})"
            run.crashes = 1
        elif code == 1:
            run.outcome, run.tracebacks = "failed", 1
            run.detail = _failure(text)
        else:
            run.outcome, run.detail = f"error (exit {code})", text[-2000:]
    if (run.crashes or run.hangs) and last_input is not None:
        keep.mkdir(parents=True, exist_ok=True)
        saved = keep / f"{reader}-{run.prop}-{run.outcome.split()[0]}.bin"
        saved.write_bytes(last_input)
        run.saved.append(saved.name)
        run.detail = f"the input being run is saved as {keep.name}/{saved.name}"
    if run.inputs == 0:  # a property that never reached the record (an import error)
        run.inputs = _statistics_count(text)
    record.unlink(missing_ok=True)
    log.unlink(missing_ok=True)
    return run


def _read_record(record: Path) -> tuple[int, bytes | None]:
    try:
        data = record.read_bytes()
    except OSError:
        return 0, None
    count, _, last = data.partition(b"\n")
    return (int(count), last) if count.isdigit() else (0, None)


def _failure(text: str) -> str:
    """The error lines and the falsifying example of a failed property."""
    lines = text.splitlines()
    errors = [line for line in lines if line.startswith("E ")][-20:]  # the error itself
    example = [line[:300] for line in lines if line.startswith("Draw ") or "Falsifying" in line]
    return "\n".join([*errors, *example[:10]])[:3000] or text[-3000:]


def _statistics_count(text: str) -> int:
    found = re.findall(r"(\d+) passing, (\d+) failing", text)
    return sum(int(a) + int(b) for a, b in found)


def machine() -> dict[str, Any]:
    """`fcn_deploy.bench.machine.machine_info`, plus the parsers' library versions, the load
    and the commit the campaign ran on."""
    import torch

    from fcn_deploy.bench.machine import machine_info

    info = machine_info(torch.device("cpu"))
    for name in PACKAGES:
        try:
            info["versions"][name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    info["load_average_at_start"] = [round(v, 1) for v in os.getloadavg()]
    info["commit"] = commit or None
    return info


def write(runs: list[Run], info: dict[str, Any], stem: Path, note: str) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    doc = {"machine": info, "note": note, "runs": [asdict(r) for r in runs]}
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        f"# Fuzzing campaign {stem.name[len('fuzz-') :]}",
        "",
        f"Machine: {info['cpu']}, {info['logical_cores']} logical cores, Python "
        f"{info['python']}; load average at start {info['load_average_at_start']}; commit "
        f"{info['commit']}. {note}",
        "",
        "| reader | property | profile | inputs tried | crashes | hangs | tracebacks | wall s | "
        "outcome |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        lines.append(f"| {r.reader} | {r.prop} | {r.profile} | {r.inputs:,} | {r.crashes} | "
                     f"{r.hangs} | {r.tracebacks} | {r.seconds:.0f} | {r.outcome} |")  # fmt: skip
    readers: dict[str, int] = {}
    for r in runs:
        readers[r.reader] = readers.get(r.reader, 0) + r.inputs
    lines += ["", "Inputs per reader: " + ", ".join(f"{k} {v:,}" for k, v in readers.items())]
    details = [f"- **{r.reader} / {r.prop}**: {r.detail}" for r in runs if r.detail]
    if details:
        lines += ["", "## Findings", "", *details]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="one reader (the name after test_fuzz_)")
    p.add_argument("--profile", default="campaign", help="Hypothesis profile (default campaign)")
    p.add_argument(
        "--stall", type=float, default=300.0,
        help="seconds without a new input that count as a hang (default 300)",
    )  # fmt: skip
    p.add_argument(
        "--limit", type=float, default=6 * 3600.0,
        help="seconds a property may run in all (default 6 h)",
    )  # fmt: skip
    p.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results",
        help="folder of the result files",
    )  # fmt: skip
    p.add_argument("--note", default="", help="said under the table (e.g. 'busy shared machine')")
    args = p.parse_args()
    stem = args.out / f"fuzz-{datetime.date.today().isoformat()}"
    if args.only:
        stem = stem.with_name(f"{stem.name}-{args.only}")
    info = machine()
    runs: list[Run] = []
    todo = properties(args.only)
    try:
        for reader, node in todo:
            print(f"{node} ...", flush=True)
            runs.append(run_property(reader, node, args.profile, args.stall, args.limit,
                                     stem.with_name(stem.name + "-inputs")))  # fmt: skip
            r = runs[-1]
            print(f"  {r.outcome}: {r.inputs:,} inputs in {r.seconds:.0f} s", flush=True)
            write(runs, info, stem, args.note)
    except KeyboardInterrupt:
        note = f"{args.note} Interrupted after {len(runs)} of {len(todo)} properties.".strip()
        write(runs, info, stem, note)
        raise
    write(runs, info, stem, args.note)
    print(f"wrote {stem.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
