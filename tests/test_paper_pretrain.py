"""fcn-pretrain: its windows, its torchvision VGG16 layout, and FCNs starting from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fcn_deploy import load_model
from fcn_deploy.checkpoint import read_checkpoint
from fcn_deploy.data import SYNTHETIC_CLASSES, SyntheticSegmentation
from fcn_deploy.errors import FCNError
from fcn_deploy.metrics import IGNORE_LABEL
from fcn_deploy.models import FCVGG16
from fcn_deploy.models.vgg import torchvision_to_caffe_names
from fcn_train.config import TrainConfig
from fcn_train.loop import train
from fcn_train.pretrain import CentreWindows, PretrainConfig, _window, pretrain

BIN = Path(sys.executable).parent
WIDTH = 0.0625  # 4…32 conv channels, 256 fc channels


def test_window_is_centred_on_its_pixel_with_mean_colour_outside() -> None:
    x = np.arange(3 * 5 * 7, dtype=np.float32).reshape(3, 5, 7) + 1  # no zeros inside the scene
    window = _window(x, 2, 6, 5, 7)
    assert window.shape == (3, 224, 224)
    assert np.array_equal(window[:, 112, 112], x[:, 2, 6])
    assert np.array_equal(window[:, 110:115, 106:113], x)  # the whole scene, in place
    assert np.count_nonzero(window) == x.size  # and zero (the mean colour) everywhere else


def test_scene_windows_hold_one_window_per_class_away_from_outlines() -> None:
    windows = CentreWindows("train", 4, margin=3)
    for i in range(4):
        x, y = windows.scene(i, np.random.default_rng(i))
        _, labels = SyntheticSegmentation("train", 4)[i]
        present = set(np.unique(labels[labels != IGNORE_LABEL]).tolist())
        assert x.shape == (len(y), 3, 224, 224) and x.dtype == np.float32
        assert len(set(y.tolist())) == len(y) and set(y.tolist()) <= present


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("pretrain")
    path, summary = out / "vgg16-synthetic.pth", out / "pretrain.json"
    done = subprocess.run(
        [
            str(BIN / "fcn-pretrain"),
            *("--width", str(WIDTH), "--iterations", "2", "--batch-size", "2"),
            *("--val-images", "3", "--device", "cpu", "--out", str(path), "--json", str(summary)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "val accuracy" in done.stderr
    return path, json.loads(summary.read_text())


def test_pretrain_reports_accuracy(classifier: tuple[Path, dict[str, object]]) -> None:
    _, summary = classifier
    assert summary["iterations"] == 2 and summary["val_windows"] >= 3  # type: ignore[operator]
    assert 0.0 <= summary["accuracy"] <= 1.0  # type: ignore[operator]
    assert list(summary["per_class_accuracy"]) == list(SYNTHETIC_CLASSES)  # type: ignore[call-overload]


def test_file_has_torchvision_vgg16_layout(classifier: tuple[Path, dict[str, object]]) -> None:
    path, _ = classifier
    sd = torch.load(path, map_location="cpu", weights_only=True)  # a bare state dict
    prefixes = torchvision_to_caffe_names()
    expected = {f"{p}.{kind}" for p in prefixes for kind in ("weight", "bias")}
    assert set(sd) == expected
    assert tuple(sd["classifier.0.weight"].shape) == (256, 32 * 7 * 7)  # fc6 on pool5 of 224×224
    assert tuple(sd["classifier.6.weight"].shape) == (len(SYNTHETIC_CLASSES), 256)


def test_convolutionalized_classifier_equals_it_on_a_window(
    classifier: tuple[Path, dict[str, object]],
) -> None:
    path, _ = classifier
    fc = FCVGG16(num_classes=len(SYNTHETIC_CLASSES), width=WIDTH).eval()
    fc.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    conv = load_model(path)  # torchvision layout → ConvVGG16, as for vgg16-397923af.pth
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, dense = fc(x), conv(x)
    assert dense.shape == (2, len(SYNTHETIC_CLASSES), 1, 1)
    torch.testing.assert_close(dense[:, :, 0, 0], expected, rtol=1e-4, atol=1e-4)


def test_fcn_train_starts_from_it(
    tmp_path: Path, classifier: tuple[Path, dict[str, object]]
) -> None:
    path, _ = classifier
    sd = torch.load(path, map_location="cpu", weights_only=True)
    result = train(
        TrainConfig(
            out=str(tmp_path / "fixed"),
            variant="fcn32s",
            init=f"vgg16:{path}",
            train="last-layer",
            iterations=1,
            batch_size=1,
            val_images=2,
            device="cpu",
        )
    )
    fcn = read_checkpoint(result.last)["state_dict"]
    # FCN-32s-fixed: the classifier's layers are copied and stay as they were
    assert torch.equal(fcn["conv1_1.weight"], sd["features.0.weight"])
    assert torch.equal(fcn["conv5_3.bias"], sd["features.28.bias"])
    assert torch.equal(fcn["fc6.weight"], sd["classifier.0.weight"].reshape(256, 32, 7, 7))
    assert torch.equal(fcn["fc7.weight"], sd["classifier.3.weight"].reshape(256, 256, 1, 1))
    assert fcn["score_fr.weight"].abs().sum() > 0  # the one layer that learned


def test_bad_settings_get_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "fcn-pretrain"), "--iterations", "0", "--out", str(tmp_path / "x.pth")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: argument --iterations: expected a whole number ≥ 1, got '0' "
        "(see fcn-pretrain --help)"
    )
    assert not (tmp_path / "x.pth").exists()
    # the library names its parameter; the CLI adds its option
    with pytest.raises(FCNError, match="iterations must be ≥ 1") as error:
        pretrain(PretrainConfig(out=str(tmp_path / "x.pth"), iterations=0))
    assert error.value.param == "iterations"
    # an output that cannot be written is refused before any training
    done = subprocess.run(
        [str(BIN / "fcn-pretrain"), "-q", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: out={str(tmp_path)!r} is a folder; give a file name inside it (option --out)"
    )
