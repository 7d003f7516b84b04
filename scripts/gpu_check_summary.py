"""gpu-check's summary: every step, every result and every skipped item, rewritten after each step.

``scripts/gpu-check.sh`` calls this after every step, so a check stopped by its time limit still
leaves a summary of what it did. The summary says what ran, what failed, and what did not run
with its reason (GPU tests that skipped, benchmark backends that are unavailable, a schema check
without jsonschema, a step the time budget cut), and ``--final`` prints the check's last line:
"passed" only when nothing was skipped; otherwise the count of skipped items, never hidden.

    python scripts/gpu_check_summary.py --summary OUT-summary.md --scratch DIR --title TEXT \\
        [--final --seconds N] [LABEL=RESULT.json ...]

``DIR/steps.tsv`` holds one line per finished step (name, exit status, seconds) and
``DIR/gpu-tests.xml`` pytest's JUnit report. Exit status with ``--final``: 0 when no step failed
or was cut, 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TIMED_OUT = (124, 137)  # timeout(1): the limit ran out; 137: killed after the -k grace period


@dataclass
class Step:
    name: str
    code: int
    seconds: int

    @property
    def status(self) -> str:
        if self.code == 0:
            return "passed"
        if self.code in TIMED_OUT:
            return f"cut by the time budget (exit {self.code})"
        return f"FAILED (exit {self.code})"


@dataclass
class Findings:
    """What a check found beyond its steps' exit codes: items skipped and failures, with reasons."""

    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_steps(path: Path) -> list[Step]:
    if not path.is_file():
        return []
    rows = csv.reader(path.read_text().splitlines(), delimiter="\t")
    return [Step(name, int(code), int(seconds)) for name, code, seconds in rows]


def pytest_findings(junit: Path, findings: Findings) -> str | None:
    """Skipped and failed tests from pytest's JUnit XML into ``findings``; the counts line."""
    if not junit.is_file():
        return None
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    if not cases:  # collected only (the rehearsal), or nothing ran
        return None
    passed = 0
    for case in cases:
        test = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        skip = case.find("skipped")
        failure = case.find("failure") if case.find("failure") is not None else case.find("error")
        if skip is not None:
            reason = (skip.get("message") or "").removeprefix("Skipped: ") or "no reason given"
            findings.skipped.append(f"GPU test {test}: {reason}")
        elif failure is not None:
            findings.failed.append(f"GPU test {test}: {(failure.get('message') or '')[:200]}")
        else:
            passed += 1
    return f"{passed} passed, {len(findings.skipped)} skipped"


def bench_findings(label: str, doc: dict[str, Any], findings: Findings) -> None:
    """A benchmark run's skipped backends (unavailable) and failures into ``findings``."""
    for s in doc.get("skipped", []):
        line = f"{label}, {s['backend']}: {s['reason']}"
        (findings.failed if s.get("status") == "failed" else findings.skipped).append(line)


def schema_findings(docs: Sequence[tuple[str, dict[str, Any]]], findings: Findings) -> None:
    """Each result document checked against its schema, or one skipped item saying why not."""
    if not docs:
        return
    if importlib.util.find_spec("jsonschema") is None:
        findings.skipped.append(
            "schema check of the fcn-bench results: jsonschema is not installed here"
        )
        return
    from fcn_deploy.bench import validate

    for label, doc in docs:
        problems = validate(doc)
        if problems:
            findings.failed.append(f"schema of {label}: {'; '.join(problems[:3])}")


def training_rates(scratch: Path, findings: Findings) -> None:
    rates = {}
    for amp in ("amp", "fp32"):
        log = scratch / f"train-{amp}" / "log.csv"
        rows = [r for r in csv.DictReader(log.open()) if r["images_per_s"]] if log.is_file() else []
        rates[amp] = rows[-1]["images_per_s"] if rows else None
        if rates[amp] is None:
            findings.skipped.append(f"fcn-train {amp} rate: the run logged none (see the log)")
    if any(rates.values()):
        findings.notes.append(
            f"fcn-train fcn8s on synthetic scenes: {rates['amp'] or '-'} images/s with AMP, "
            f"{rates['fp32'] or '-'} without (last logged window)"
        )


def result_line(steps: Sequence[Step], findings: Findings) -> str:
    """``passed`` only without skips; else what failed, was cut and was skipped, counted."""
    failed = sum(s.status.startswith("FAILED") for s in steps)
    cut = sum(s.code in TIMED_OUT for s in steps)
    skipped = len(findings.skipped)
    if failed or cut or findings.failed:
        parts = [f"{failed} step(s) failed"] if failed else []
        parts += [f"{cut} step(s) cut by the time budget"] if cut else []
        parts += [f"{len(findings.failed)} failure(s) listed"] if findings.failed else []
        return f"FAILED ({', '.join(parts)}; {skipped} item(s) skipped)"
    if skipped:
        return f"passed, with {skipped} item(s) skipped (each listed with its reason)"
    return "passed"


def summarize(
    title: str, scratch: Path, runs: Sequence[tuple[str, Path]], final: bool, seconds: int | None
) -> tuple[str, str]:
    """The summary page and the result line."""
    from fcn_deploy.bench import format_summary

    steps = read_steps(scratch / "steps.tsv")
    findings = Findings()
    tests = pytest_findings(scratch / "gpu-tests.xml", findings)
    docs = []
    for label, path in runs:
        if path.is_file():
            docs.append((label, json.loads(path.read_text())))
            bench_findings(label, docs[-1][1], findings)
        elif final:
            findings.skipped.append(f"{label}: no results (the run failed or was cut; see the log)")
    schema_findings(docs, findings)
    if final:
        training_rates(scratch, findings)
    result = result_line(steps, findings)
    lines = [f"# gpu-check: {title}", ""]
    if final:
        took = f" in {seconds}s" if seconds is not None else ""
        lines += [f"**Result: {result}**{took}.", ""]
    else:
        lines += [
            f"**Result so far: {result}** after {len(steps)} step(s); the check was still "
            "running when this was written (if nothing follows, it was stopped).",
            "",
        ]
    lines += ["| step | status | seconds |", "|---|---|---|"]
    for step in steps:
        extra = f" ({tests})" if step.name == "GPU tests" and tests else ""
        lines.append(f"| {step.name} | {step.status}{extra} | {step.seconds} |")
    lines.append("")
    for heading, items in (("Failed", findings.failed), ("Skipped", findings.skipped)):
        if items:
            lines += [f"## {heading} ({len(items)})", "", *(f"- {item}" for item in items), ""]
    bench = format_summary([doc for _, doc in docs], findings.notes)
    lines.append(bench.replace("# fcn-bench summary", "## fcn-bench and fcn-train", 1))
    return "\n".join(lines), result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--summary", type=Path, required=True)
    p.add_argument("--scratch", type=Path, required=True)
    p.add_argument("--title", required=True)
    p.add_argument("--final", action="store_true")
    p.add_argument("--seconds", type=int)
    p.add_argument("runs", nargs="*", metavar="LABEL=RESULT.json")
    args = p.parse_args(argv)
    runs = [(label, Path(path)) for label, _, path in (r.partition("=") for r in args.runs)]
    text, result = summarize(args.title, args.scratch, runs, args.final, args.seconds)
    from fcn_deploy._io import atomic_write_text

    atomic_write_text(args.summary, text)
    if args.final:
        print(text)
        took = f" in {args.seconds}s" if args.seconds is not None else ""
        print(f"gpu-check: {result}{took} (summary: {args.summary})")
        return 0 if result.startswith("passed") else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
