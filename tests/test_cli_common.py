"""What every CLI shares: -v/-q on each, and library messages through logging at that level."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fcn_deploy import __version__
from fcn_deploy._progress import LOGGERS
from fcn_deploy.cli import bench, export, predict, serve, ui
from fcn_deploy.cli._common import add_verbosity, parse_args
from fcn_train.cli import eval_parser, train_parser
from fcn_train.pretrain_cli import pretrain_parser

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "fcn-export": export.build_parser,
    "fcn-predict": predict.build_parser,
    "fcn-bench": bench.build_parser,
    "fcn-train": train_parser,
    "fcn-eval": eval_parser,
    "fcn-pretrain": pretrain_parser,
    "fcn-serve": serve.build_parser,
    "fcn-ui": ui.build_parser,
}


@pytest.fixture(autouse=True)
def _restore_loggers() -> Iterator[None]:
    """parse_args sets up the package loggers for the process; put them back for other tests."""
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in LOGGERS}
    yield
    for name, (level, handlers) in saved.items():
        logging.getLogger(name).setLevel(level)
        logging.getLogger(name).handlers[:] = handlers


@pytest.mark.parametrize("name", PARSERS)
def test_every_cli_takes_verbose_and_quiet(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = PARSERS[name]().format_help()
    assert "-v, --verbose" in text and "-q, --quiet" in text
    with pytest.raises(SystemExit):  # one or the other
        PARSERS[name]().parse_args(["-v", "-q"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_levels_reach_the_library_loggers(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_verbosity(parser)
    library = logging.getLogger("fcn_deploy.export.exporter")
    for flags, shown in (([], "info"), (["-q"], "warning"), (["-v"], "debug")):
        parse_args(parser, flags)
        library.debug("a debug line")
        library.info("an info line")
        library.warning("a warning line")
        err = capsys.readouterr().err.splitlines()
        expected = {
            "debug": ["a debug line", "an info line", "warning: a warning line"],
            "info": ["an info line", "warning: a warning line"],
            "warning": ["warning: a warning line"],
        }[shown]
        assert err == expected, flags  # one handler (a second call replaced the first), plain lines


def test_export_cli_logs_its_steps_unless_quiet(
    make_checkpoint: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnxruntime")
    checkpoint = make_checkpoint("fcn32s", width=0.0625)
    args = [str(checkpoint), "-o", str(tmp_path / "m.onnx"), "--max-size", "64x64", "--no-verify"]
    assert export.main(args) == 0
    out, err = capsys.readouterr()
    assert "loaded fcn32s" in err and "checking the graph" in err
    assert "MiB" in out and "MiB" not in err  # size and time said once, in the summary line
    assert export.main([*args, "-q"]) == 0
    assert "loaded" not in capsys.readouterr().err


@pytest.mark.parametrize("name", PARSERS)
def test_every_cli_says_its_version(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        PARSERS[name]().parse_args(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"{name} {__version__}\n"


@pytest.mark.parametrize("name", ["fcn-eval", "fcn-bench"])
def test_the_model_comes_first_and_model_still_works(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = PARSERS[name]
    assert parse_args(parser(), ["m.onnx"]).model == Path("m.onnx")
    assert parse_args(parser(), ["--model", "m.onnx"]).model == Path("m.onnx")
    assert parse_args(parser(), ["m.onnx", "--model", "m.onnx"]).model == Path("m.onnx")
    with pytest.raises(SystemExit) as refused:
        parse_args(parser(), ["a.onnx", "--model", "b.onnx"])
    assert refused.value.code == 2
    assert "the model is given twice (a.onnx and --model b.onnx)" in capsys.readouterr().err


def test_predict_takes_the_model_first(
    make_checkpoint: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2
    import numpy as np

    model, image = make_checkpoint("fcn32s", width=0.0625), tmp_path / "a.png"
    cv2.imwrite(str(image), np.full((24, 32, 3), 90, np.uint8))
    assert predict.main([str(model), str(image), "-o", str(tmp_path / "first"), "-q"]) == 0
    assert (tmp_path / "first" / "a.png").is_file()
    assert predict.main(["--model", str(model), str(image), "-o", str(tmp_path / "opt")]) == 0
    assert (tmp_path / "opt" / "a.png").is_file()  # with --model, every argument is an input
    twice = [str(model), str(image), "--model", str(model), "-o", str(tmp_path / "twice")]
    assert predict.main(twice) == 0  # the same model written both ways is not read as an image
    assert sorted(p.name for p in (tmp_path / "twice").iterdir()) == ["a.png"]
    assert predict.main([str(model), "-o", str(tmp_path / "none")]) == 2
    assert "no inputs after the model" in capsys.readouterr().err
