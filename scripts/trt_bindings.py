#!/usr/bin/env python
"""TensorRT's real Python bindings without TensorRT's libraries: fetch, make importable, stub.

Test-only (never installed). PyPI's ``tensorrt-cu12-bindings`` wheels hold the real compiled
``tensorrt_bindings`` module of each release (1–2 MB); only the ``-libs`` wheels with
libnvinfer & co. come from NVIDIA's index. The module needs nine C symbols from
``libnvinfer.so.N``, ``libnvinfer_plugin.so.N`` and ``libnvonnxparser.so.N`` (``nm -D
--undefined-only tensorrt.so``); stand-ins returning NULL, built with ``cc`` under those sonames,
satisfy the loader, so ``import tensorrt`` works and every enum, signature and docstring is that
release's own. Creating a Builder or Runtime then raises ``TypeError: ... factory function
returned nullptr``, exactly what a failed CUDA initialisation gives.

For each release this script keeps, under the cache folder (``FCN_TRT_CACHE``, default
``.cache/trt-bindings`` in the repository, ignored by git; each wheel is downloaded once):
``<version>/site`` (the bindings plus a ``tensorrt`` package re-exporting them, as the
``tensorrt`` wheel does) and ``<version>/stubs`` (``.pyi`` files by pybind11-stubgen, mended
for mypy). The stand-in libraries are built in a temporary folder by the caller::

    python scripts/trt_bindings.py stubs [OUT]        # newest release's stubs → OUT (typings/)
    python scripts/trt_bindings.py mypy [RELEASE...]  # mypy of the TensorRT modules, per release

Missing network or compiler: `Unavailable` with the reason (the tests skip with it).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The oldest and newest supported 10.x and 11.x (the code's floor is 10.12: strongly typed FP16).
RELEASES = ("10.12.0.36", "10.16.1.11", "11.0.0.114", "11.4.0.106")
NEWEST = RELEASES[-1]
# Every module that imports TensorRT or handles its objects: mypy checks them per release.
TRT_MODULES = (
    "fcn_deploy/engine",
    "fcn_deploy/runtime/trt_runner.py",
    "fcn_deploy/cli/engine_args.py",
    "fcn_deploy/bench/machine.py",
)
# What the bindings import from the three libraries (the same nine on 10.12 … 11.4).
_STAND_IN = """
void *createInferBuilder_INTERNAL(void *logger, int version) { return 0; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return 0; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return 0; }
void *getPluginRegistry(void) { return 0; }
void *getBuilderPluginRegistry(int capability) { return 0; }
int initLibNvInferPlugins(void *logger, const char *ns) { return 0; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return 0; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
"""
_LIBRARIES = ("nvinfer", "nvinfer_plugin", "nvonnxparser")
# The ``tensorrt`` package of a real install re-exports ``tensorrt_bindings`` the same way.
_FRONTEND = (
    "from tensorrt_bindings import *  # noqa: F403\nfrom tensorrt_bindings import __version__\n"
)
_FRONTEND_STUB = (
    "from tensorrt_bindings.tensorrt import *\n"
    "from tensorrt_bindings import common_enter, common_exit, nptype, volume\n"
    "__version__: str\n"
)
# (pattern, replacement): pybind11-stubgen output that mypy cannot parse. Each must apply.
_MENDS = (
    (r"([(,]\s*)in(\s*:)", r"\1in_\2"),  # a parameter named `in` (a keyword) in plugin classes
    # add_scale_nd's channel_axis has no default after defaulted parameters
    (r"(def add_scale_nd\(.*?power: Weights = None, channel_axis: [\w.]+)\)", r"\1 = ...)"),
)


class Unavailable(RuntimeError):
    """The bindings cannot be prepared here (no network, no C compiler): the reason."""


@dataclass(frozen=True)
class Binding:
    """One release made importable: put ``site`` on PYTHONPATH and ``libs`` on
    LD_LIBRARY_PATH."""

    version: str
    site: Path
    stubs: Path
    libs: Path

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.site), str(ROOT), str(ROOT / "train"), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [str(self.libs), env.get("LD_LIBRARY_PATH", "")]
        ).rstrip(os.pathsep)
        return env


def cache_dir() -> Path:
    return Path(os.environ.get("FCN_TRT_CACHE") or ROOT / ".cache" / "trt-bindings")


def _run(cmd: Sequence[str], what: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unavailable(f"{what}: {e}") from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise Unavailable(f"{what} failed: {' / '.join(tail)}")
    return result


def build_stand_ins(folder: Path, major: int) -> Path:
    """The three stand-in libraries of TensorRT ``major`` in ``folder``/``major``."""
    out = folder / str(major)
    if all((out / f"lib{name}.so.{major}").is_file() for name in _LIBRARIES):
        return out
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        raise Unavailable("no C compiler (cc) to build the stand-in TensorRT libraries")
    out.mkdir(parents=True, exist_ok=True)
    source = out / "stand_in.c"
    source.write_text(_STAND_IN)
    for name in _LIBRARIES:
        soname = f"lib{name}.so.{major}"
        _run(
            [cc, "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(out / soname), str(source)],
            f"building {soname}",
        )
    return out


def _fetch_wheel(version: str, folder: Path) -> Path:
    wheels = sorted(folder.glob("tensorrt_cu12_bindings-*.whl"))
    if not wheels:
        folder.mkdir(parents=True, exist_ok=True)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                str(folder),
                f"tensorrt-cu12-bindings=={version}",
            ],
            f"downloading tensorrt-cu12-bindings {version}",
        )
        wheels = sorted(folder.glob("tensorrt_cu12_bindings-*.whl"))
    if not wheels:
        raise Unavailable(f"pip found no tensorrt-cu12-bindings {version} wheel for this Python")
    return wheels[0]


def mend_stubs(text: str) -> str:
    """pybind11-stubgen's ``tensorrt.pyi`` made parseable by mypy; SystemExit if a mend no longer
    applies (the output changed: look, rather than check against silently broken stubs)."""
    for pattern, replacement in _MENDS:
        text, n = re.subn(pattern, replacement, text)
        if n == 0:
            raise SystemExit(f"stub mend {pattern!r} no longer applies: look at the new stubs")
    return text


def prepare(version: str, libs_folder: Path) -> Binding:
    """Release ``version`` importable and stubbed (cached), with stand-ins in ``libs_folder``."""
    base = cache_dir() / f"py{sys.version_info[0]}{sys.version_info[1]}" / version
    libs = build_stand_ins(libs_folder, int(version.split(".")[0]))
    site, stubs = base / "site", base / "stubs"
    if not (site / "tensorrt" / "__init__.py").is_file():
        wheel = _fetch_wheel(version, base)
        tmp = Path(tempfile.mkdtemp(dir=base))
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
        (tmp / "tensorrt").mkdir()
        (tmp / "tensorrt" / "__init__.py").write_text(_FRONTEND)
        shutil.rmtree(site, ignore_errors=True)
        tmp.replace(site)  # complete or absent: an interrupted run leaves no half folder
    binding = Binding(version, site, stubs, libs)
    if not (stubs / "tensorrt" / "__init__.pyi").is_file():
        tmp = Path(tempfile.mkdtemp(dir=base))
        _run(
            [sys.executable, "-m", "pybind11_stubgen", "tensorrt_bindings", "-o", str(tmp)],
            f"pybind11-stubgen on TensorRT {version} (pip install pybind11-stubgen)",
            env=binding.env(),
        )
        pyi = tmp / "tensorrt_bindings" / "tensorrt.pyi"
        pyi.write_text(mend_stubs(pyi.read_text()))
        (tmp / "tensorrt").mkdir()
        (tmp / "tensorrt" / "__init__.pyi").write_text(_FRONTEND_STUB)
        shutil.rmtree(stubs, ignore_errors=True)
        tmp.replace(stubs)
    return binding


def mypy(
    binding: Binding, targets: Sequence[str] = TRT_MODULES
) -> subprocess.CompletedProcess[str]:
    """mypy of ``targets`` against ``binding``'s stubs, with the project's configuration."""
    env = dict(os.environ, MYPYPATH=str(binding.stubs))
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    # the project's own cache, shared by all releases (and scripts/test.sh's full run): only the
    # tensorrt stubs and the modules importing them are checked again for each release
    cmd += ["--cache-dir", str(ROOT / ".mypy_cache"), *targets]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stubs", help=f"copy TensorRT {NEWEST}'s stubs to OUT (mypy_path)")
    s.add_argument("out", nargs="?", type=Path, default=ROOT / "typings")
    m = sub.add_parser("mypy", help="mypy of the TensorRT modules against each release's stubs")
    m.add_argument("releases", nargs="*", default=list(RELEASES))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trt-stand-ins-") as libs:
        try:
            if args.command == "stubs":
                stubs = prepare(NEWEST, Path(libs)).stubs
                for name in ("tensorrt", "tensorrt_bindings"):
                    shutil.rmtree(args.out / name, ignore_errors=True)
                    shutil.copytree(stubs / name, args.out / name)
                print(args.out)
                return 0
            failed = 0
            for version in args.releases:
                result = mypy(prepare(version, Path(libs)))
                print(f"TensorRT {version}: {result.stdout.strip().splitlines()[-1]}")
                if result.returncode != 0:
                    print(result.stdout, file=sys.stderr)
                    failed += 1
            return 1 if failed else 0
        except Unavailable as e:
            print(f"trt_bindings: {e}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
