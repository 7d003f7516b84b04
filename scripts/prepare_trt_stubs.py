#!/usr/bin/env python
"""Copy the tensorrt-stubs .pyi files where mypy reads them, mended, so mypy checks TensorRT calls.

The ``tensorrt-stubs`` wheel (10.13 API; install with ``pip install --no-deps tensorrt-stubs``,
since its ``tensorrt`` dependency downloads from NVIDIA's index) ships ``tensorrt/__init__.pyi``
and ``tensorrt_bindings/*.pyi`` without a ``py.typed`` marker, so mypy ignores them in
site-packages. This script copies them into OUT (default ``typings/``, the ``mypy_path`` in
pyproject.toml) and mends the three things mypy cannot parse or resolve:

1. a parameter named ``in`` (a keyword) in the plugin classes → ``in_``;
2. ``add_scale_nd(..., channel_axis: int)`` without a default after defaulted parameters;
3. ``import tensorrt_libs as tensorrt_libs`` (a runtime-only package with no stubs).

pyproject.toml sets ``ignore_errors`` for the stub modules themselves (they shadow ``bool``);
errors in OUR calls into them are still reported. Usage::

    python scripts/prepare_trt_stubs.py [OUT]
    mypy fcn_deploy/engine fcn_deploy/runtime/trt_runner.py
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

STUB_FILES = (
    "tensorrt/__init__.pyi",
    "tensorrt_bindings/__init__.pyi",
    "tensorrt_bindings/tensorrt.pyi",
)

# (pattern, replacement, how many matches are expected at least): each mend must apply, or the
# stubs changed and this script needs a look rather than silently producing unchecked stubs.
MENDS: tuple[tuple[str, str, str], ...] = (
    (r"([(,]\s*)in(\s*:)", r"\1in_\2", "tensorrt_bindings/tensorrt.pyi"),
    (
        r"(def add_scale_nd\(.*?power: Weights = None, )channel_axis: int\)",
        r"\1channel_axis: int = ...)",
        "tensorrt_bindings/tensorrt.pyi",
    ),
    (r"^import tensorrt_libs as tensorrt_libs\n", "", "*"),
)


def find_stubs() -> Path | None:
    """The site-packages folder holding ``tensorrt/__init__.pyi``, or None."""
    candidates = [Path(p) for p in sys.path if p] + [Path(sysconfig.get_paths()["purelib"])]
    for base in candidates:
        if all((base / f).is_file() for f in STUB_FILES):
            return base
    return None


def mend(relpath: str, text: str) -> tuple[str, int]:
    """Apply the mends that concern ``relpath``; returns the text and how many replacements were
    made."""
    total = 0
    for pattern, replacement, target in MENDS:
        if target in ("*", relpath):
            text, n = re.subn(pattern, replacement, text, flags=re.MULTILINE)
            total += n
    return text, total


def prepare(out: Path) -> list[Path]:
    """Write the mended stubs under ``out``; raises SystemExit with the reason if they are not
    installed."""
    base = find_stubs()
    if base is None:
        raise SystemExit(
            "tensorrt-stubs is not installed: pip install --no-deps tensorrt-stubs==10.13.*"
        )
    written, applied = [], 0
    for rel in STUB_FILES:
        text, n = mend(rel, (base / rel).read_text(encoding="utf-8"))
        applied += n
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)  # atomic: a concurrent mypy run never sees half a stub
        written.append(target)
    if applied < 3:
        raise SystemExit(
            f"only {applied} stub mends applied (expected at least 3): the tensorrt-stubs layout "
            "changed"
        )
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(__file__).resolve().parent.parent / "typings"
    for path in prepare(out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
