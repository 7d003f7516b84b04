"""Checkpoints: round trips, the formats load_model reads, and a clear line for every bad file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reference_fcn import REFERENCE_ARGS, ReferenceFCN, TorchvisionVGG16

import fcn_deploy
from fcn_deploy import FCNError, Preprocessing, load_model, save_checkpoint
from fcn_deploy.checkpoint import read_checkpoint
from fcn_deploy.meta import VOC_CLASSES, voc_palette

X = torch.randn(1, 3, 45, 61) * 40


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    with torch.no_grad():
        return torch.allclose(a(X), b(X), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"])
def test_round_trip(tmp_path: Path, make_model, variant: str) -> None:
    model = make_model(variant, width=0.0625)
    path = tmp_path / "m.pt"
    save_checkpoint(model, path)
    loaded = load_model(path)
    assert (
        loaded.info.variant == variant
        and loaded.info.num_classes == 21
        and loaded.info.width == 0.0625
    )
    assert loaded.info.class_names == list(VOC_CLASSES)
    assert loaded.info.palette[:21] == voc_palette(21)
    assert loaded.info.preprocessing == Preprocessing.caffe()
    assert _same_outputs(model, loaded)
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_custom_metadata_round_trip(tmp_path: Path, make_model) -> None:
    model = make_model("fcn16s", width=0.0625, num_classes=3)
    names, palette = ["bg", "cat", "dog"], [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    save_checkpoint(
        model,
        tmp_path / "m.pt",
        class_names=names,
        palette=palette,
        preprocessing=Preprocessing.torchvision(),
        extra={"iteration": 7},
    )
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.info.class_names == names and loaded.info.palette == palette
    assert loaded.info.preprocessing == Preprocessing.torchvision()
    raw = read_checkpoint(tmp_path / "m.pt")
    assert raw["format_version"] == 1 and raw["extra"] == {"iteration": 7}
    with pytest.raises(ValueError, match="class names"):
        save_checkpoint(model, tmp_path / "bad.pt", class_names=["only one"])
    assert not (tmp_path / "bad.pt").exists()


@pytest.mark.parametrize("variant", ["fcn32s", "fcn16s", "fcn8s"])
def test_pytorch_port_state_dict_variant_inferred(tmp_path: Path, variant: str) -> None:
    ref = ReferenceFCN(**REFERENCE_ARGS[variant], width=0.0625).eval()
    torch.save(ref.state_dict(), tmp_path / "port.pth")
    model = load_model(tmp_path / "port.pth")
    assert model.info.variant == variant
    assert _same_outputs(ref, model)


def test_each_file_is_read_once(tmp_path: Path, make_checkpoint, monkeypatch) -> None:
    """load_model reads a file with one torch.load, whatever it holds (files reach 513 MiB)."""
    torch.manual_seed(0)
    torch.save(ReferenceFCN(stride=8, width=0.0625).state_dict(), tmp_path / "port.pth")
    torch.save(TorchvisionVGG16(width=0.0625).state_dict(), tmp_path / "vgg16.pth")
    real_load, reads = torch.load, []

    def counting_load(*args, **kwargs):  # torch.load gets the file checked as regular, open
        reads.append(Path(os.readlink(f"/proc/self/fd/{args[0].fileno()}")))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    for path in (
        make_checkpoint("fcn8s", width=0.0625),
        tmp_path / "port.pth",
        tmp_path / "vgg16.pth",
    ):
        reads.clear()
        load_model(path)
        assert reads == [path]


def test_port_state_dict_at_once_needs_variant(tmp_path: Path) -> None:
    ref = ReferenceFCN(stride=8, at_once=True, width=0.0625).eval()
    with torch.no_grad():
        for p in (ref.score_pool4.weight, ref.score_pool3.weight):
            p.normal_(0, 1.0)
    torch.save({"model_state_dict": ref.state_dict()}, tmp_path / "atonce.pth")  # a common wrapper
    model = load_model(tmp_path / "atonce.pth", variant="fcn8s-atonce")
    assert model.info.variant == "fcn8s-atonce" and _same_outputs(ref, model)
    assert load_model(tmp_path / "atonce.pth").info.variant == "fcn8s"  # keys alone can't tell


def test_torchvision_vgg16_file_gives_convolutionalized_classifier(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vgg = TorchvisionVGG16(width=0.0625).eval()
    torch.save(vgg.state_dict(), tmp_path / "vgg16-397923af.pth")
    model = load_model(tmp_path / "vgg16-397923af.pth")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x)[:, :, 0, 0], vgg(x), atol=1e-5)
    assert model.info.variant == "vgg16" and model.info.num_classes == 1000


def test_checkpoint_of_convolutionalized_vgg_round_trips(tmp_path: Path) -> None:
    vgg = TorchvisionVGG16(width=0.0625).eval()
    conv = fcn_deploy.convolutionalize(vgg.state_dict())
    save_checkpoint(conv, tmp_path / "conv.pt")
    loaded = load_model(tmp_path / "conv.pt")
    x = torch.randn(1, 3, 256, 288)
    with torch.no_grad():
        assert torch.allclose(loaded(x), conv(x), atol=1e-5)


def test_loading_never_runs_code_from_the_file(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # runs os.system on unpickling
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"conv1_1.weight": torch.zeros(1)}, "payload": Evil()}, path)
    with pytest.raises(FCNError, match="could run code"):
        load_model(path)
    assert not marker.exists()


def _expect_error(path: Path, pattern: str, **kw) -> str:
    with pytest.raises(FCNError, match=pattern) as info:
        load_model(path, **kw)
    message = str(info.value)
    assert "\n" not in message and str(path.name) in message
    return message


def test_missing_empty_folder(tmp_path: Path) -> None:
    _expect_error(tmp_path / "nope.pt", "no such file")
    (tmp_path / "empty.pt").write_bytes(b"")
    _expect_error(tmp_path / "empty.pt", "empty")
    (tmp_path / "dir.pt").mkdir()
    _expect_error(tmp_path / "dir.pt", "folder")


def test_truncated_and_garbage(tmp_path: Path, make_checkpoint) -> None:
    good = make_checkpoint("fcn32s", width=0.0625)
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    _expect_error(tmp_path / "trunc.pt", "truncated")
    (tmp_path / "text.pt").write_text("this is not a checkpoint\n")
    _expect_error(tmp_path / "text.pt", "is a text file, not a PyTorch checkpoint")
    (tmp_path / "png.pt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    _expect_error(tmp_path / "png.pt", "is a PNG image, not a PyTorch checkpoint")
    (tmp_path / "list.pt").write_bytes(b"")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    _expect_error(tmp_path / "list.pt", "holds a list")


def test_foreign_architecture_named(tmp_path: Path) -> None:
    resnet = {f"layer{i}.0.conv1.weight": torch.zeros(1) for i in range(1, 5)}
    resnet.update({"conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1)})
    torch.save(resnet, tmp_path / "resnet.pth")
    message = _expect_error(tmp_path / "resnet.pth", "looks like a ResNet checkpoint")
    assert "6 unexpected keys such as layer1.0.conv1.weight" in message


def test_wrong_variant_and_shapes(tmp_path: Path) -> None:
    torch.save(ReferenceFCN(stride=32, width=0.0625).state_dict(), tmp_path / "32s.pth")
    _expect_error(
        tmp_path / "32s.pth", "does not match fcn8s: .*missing keys such as", variant="fcn8s"
    )
    _expect_error(tmp_path / "32s.pth", "unknown variant", variant="fcn4s")
    sd = ReferenceFCN(stride=32, width=0.0625).state_dict()
    sd["fc7.weight"] = torch.zeros(3, 3, 1, 1)
    torch.save(sd, tmp_path / "shape.pth")
    _expect_error(tmp_path / "shape.pth", "fc7.weight has shape")


def test_no_partial_file_when_saving_fails(tmp_path: Path, make_model, monkeypatch) -> None:
    model = make_model("fcn32s", width=0.0625)

    def broken_save(obj, f, *a, **k):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(
        FCNError, match=r"cannot write .*m\.pt: disk full"
    ):  # one line, no traceback
        save_checkpoint(model, tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FCNError, match="does not exist"):
        save_checkpoint(model, tmp_path / "missing-dir" / "m.pt")


def test_checkpoint_is_plain_data(make_checkpoint) -> None:
    """weights_only=True must read it: nothing but tensors and plain Python types inside."""
    raw = torch.load(make_checkpoint("fcn16s", width=0.0625), weights_only=True)
    assert set(raw) == {"format", "format_version", "info", "state_dict", "extra"}
    assert raw["info"]["variant"] == "fcn16s" and raw["info"]["preprocessing"]["color"] == "bgr"


def test_package_import_stays_light() -> None:
    """``import fcn_deploy`` must not pull onnx, onnxruntime or tensorrt."""
    code = (
        "import sys, fcn_deploy; print(sorted(m for m in ('onnx', 'onnxruntime', 'tensorrt') if m "
        "in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_outputs_get_normal_permissions(tmp_path: Path, make_model) -> None:
    """Atomic writes go through a private temp file; the result must still be readable by others."""
    save_checkpoint(make_model("fcn32s", width=0.0625), tmp_path / "m.pt")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "m.pt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_metadata_that_disagrees_with_the_weights_is_refused(tmp_path: Path, make_model) -> None:
    # metadata says 21 classes, the weights hold 5: it must not load (an export would claim 21)
    path = tmp_path / "m.pt"
    save_checkpoint(make_model("fcn32s", width=0.0625, num_classes=5), path)
    payload = torch.load(path, weights_only=True)
    payload["info"]["num_classes"] = 21
    payload["info"]["class_names"] = [str(k) for k in range(21)]
    payload["info"]["palette"] = voc_palette(21)
    torch.save(payload, tmp_path / "edited.pt")
    message = _expect_error(tmp_path / "edited.pt", "metadata says num_classes=21")
    assert "weights hold num_classes=5" in message
    payload = torch.load(path, weights_only=True)
    payload["info"]["width"] = 1.0
    torch.save(payload, tmp_path / "wide.pt")
    _expect_error(tmp_path / "wide.pt", "metadata says width=1 but its weights hold width=0.0625")


def _deflated(source: Path, dest: Path) -> Path:
    """``source`` (a torch.save ZIP) with every record DEFLATE-compressed (torch.load reads it)."""
    import zipfile

    with zipfile.ZipFile(source) as old, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as new:
        for entry in old.infolist():
            new.writestr(entry.filename, old.read(entry))
    return dest


def test_a_compressed_bomb_is_refused_before_it_unpacks(tmp_path: Path, make_checkpoint) -> None:
    torch.save({"w": torch.zeros(16 << 20)}, tmp_path / "zeros.pt")  # 64 MiB of zeros
    bomb = _deflated(tmp_path / "zeros.pt", tmp_path / "bomb.pt")  # ~64 KiB
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(FCNError, match=r"would decompress to 64 MiB from a 0\.\d MiB file"):
        read_checkpoint(bomb)
    packed = _deflated(make_checkpoint("fcn32s", width=0.0625), tmp_path / "packed.pt")
    assert isinstance(load_model(packed), torch.nn.Module)  # random weights barely compress


def test_a_negative_storage_size_is_named_as_damage(tmp_path: Path) -> None:
    import struct
    import zipfile

    torch.save({"w": torch.zeros(7)}, tmp_path / "w.pt")
    with (
        zipfile.ZipFile(tmp_path / "w.pt") as old,
        zipfile.ZipFile(tmp_path / "neg.pt", "w") as new,
    ):
        for entry in old.infolist():
            data = old.read(entry)
            if entry.filename.endswith("data.pkl"):  # the storage's numel 7 → -5
                seven = b"X\x03\x00\x00\x00cpuq\x06K\x07t"
                assert seven in data
                data = data.replace(seven, seven[:-3] + b"J" + struct.pack("<i", -5) + b"t")
            new.writestr(entry, data)
    with pytest.raises(FCNError, match=r"a tensor record declares an invalid size or type\)"):
        read_checkpoint(tmp_path / "neg.pt")
