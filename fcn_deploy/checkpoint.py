"""Checkpoints: the weights plus the `ModelInfo` that deploying them needs.

A checkpoint is a ``torch.save`` dict of plain types and tensors (format below), always read with
``weights_only=True``: a file from a stranger cannot run code. ``load_model`` also reads a bare
state dict of the PyTorch FCN port and torchvision's VGG16 file, and explains in one line what a
file it cannot use looks like instead of raising a bare traceback.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ._gate import open_regular, regular_file
from ._io import atomic_path, describe_file, os_reason
from .caffemodel import is_caffe_file, read_caffemodel
from .errors import FCNError
from .meta import VARIANTS, ModelInfo, Preprocessing
from .models import Net, convolutionalize, create_model, width_of
from .models.vgg import torchvision_to_caffe_names

__all__ = [
    "infer_variant",
    "load_model",
    "read_checkpoint",
    "read_state_dict",
    "save_atomically",
    "save_checkpoint",
]

FORMAT = "fcn-deploy-checkpoint"
FORMAT_VERSION = 1
MAX_UNPACK_RATIO = 16  # how much larger than its file a checkpoint's records may unpack to
MAX_UNPACK_SLACK = 1 << 20  # plus this many bytes (small files: the pickle, tiny tensors)


def save_checkpoint(
    model: Net,
    path: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    preprocessing: Preprocessing | None = None,
    extra: Mapping[str, Any] | None = None,
) -> ModelInfo:
    """Write ``model`` and its metadata to ``path`` atomically; returns the metadata written.

    Names, palette and preprocessing default to the model's own ``info`` (VOC's names and colour
    rule, Caffe preprocessing for FCNs). ``extra`` holds plain data such as a trainer's state.
    """
    info = model.info.replace(
        class_names=list(class_names) if class_names is not None else None,
        palette=[tuple(c) for c in palette] if palette is not None else None,
        preprocessing=preprocessing,
    )
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "info": info.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    save_atomically(payload, path)
    return info


def save_atomically(payload: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to ``path`` atomically; a failed write (a full disk, a file size limit) is one
    `FCNError` naming the file, and the earlier file stays as it was."""
    with atomic_path(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as e:  # torch's ZIP writer words an OSError as an enforce failure
            if "PytorchStreamWriter" not in str(e) and "inline_container" not in str(e):
                raise
            raise FCNError(
                f"cannot write {path}: the write failed (is the disk full, or a file size limit "
                "reached?)"
            ) from None


def _torch_load(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    with open_regular(path, "file", _EXPECTED) as f:  # a FIFO or a device: one line, no hang
        if os.fstat(f.fileno()).st_size == 0:
            raise FCNError(f"{path} is empty; expected a checkpoint file written by torch.save")
        _check_unpacked_size(path, f)
        f.seek(0)
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            what = describe_file(path)  # torch reads an ONNX or PNG file as an unsafe pickle
            if what is not None and not what.startswith(("a ZIP", "a Python pickle")):
                raise FCNError(f"{path} is {what}, not a PyTorch checkpoint") from None
            if "Weights only load failed" in str(e):
                raise FCNError(
                    f"{path} holds Python objects beyond tensors and plain data; it is not loaded "
                    "because that could run code from the file (re-save just its state_dict)"
                ) from None
            raise _unreadable(path, e, "is it truncated?") from None
        except Exception as e:  # torch.load raises many types for non-torch bytes (IndexError, …)
            raise _unreadable(path, e, "it may be truncated or of another format") from None


_EXPECTED = (
    "expected an fcn-deploy checkpoint, a PyTorch-port state dict or a torchvision VGG16 .pth"
)


def _check_unpacked_size(path: Path, f: BinaryIO) -> None:
    """Refuse a ZIP-format checkpoint whose records would decompress far beyond the file's size.

    torch.save stores records uncompressed, but torch.load also reads DEFLATE-compressed ones: a
    12 MB file can hold 3 GiB of zeros, and torch allocates each record at the size its ZIP entry
    declares (an entry cannot unpack beyond that). So the declared sizes, read from the ZIP
    directory before any record, bound the memory: at most twice the file plus 1 MiB.
    """
    try:
        with zipfile.ZipFile(f) as archive:
            declared = sum(max(entry.file_size, 0) for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a ZIP (a legacy pickle, or not a checkpoint): torch.load words it
    size = os.fstat(f.fileno()).st_size
    if declared > MAX_UNPACK_RATIO * size + MAX_UNPACK_SLACK:
        raise FCNError(
            f"{path} is refused: its records would decompress to {declared / 2**20:.0f} MiB "
            f"from a {size / 2**20:.1f} MiB file (torch.save writes them uncompressed; a "
            f"checkpoint may unpack to at most {MAX_UNPACK_RATIO} times its size)"
        )


def _unreadable(path: Path, error: Exception, hint: str) -> FCNError:
    """One line for a file torch.load could not read: what the file really is, when that's clear."""
    if isinstance(error, OSError) and error.errno is not None:
        return FCNError(f"{path}: cannot read ({os_reason(error)})")
    what = describe_file(path)
    if what is not None and not what.startswith(("a ZIP", "a Python pickle")):
        return FCNError(f"{path} is {what}, not a PyTorch checkpoint")
    reason = _first_line(error)
    if "incompatible function arguments" in reason:  # pybind's signature list: not a reason
        reason = "a tensor record declares an invalid size or type"
    return FCNError(f"{path} is not a readable PyTorch file ({reason}); {hint}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw payload of any readable file: an fcn-deploy checkpoint dict or a bare state dict."""
    payload = _torch_load(path)
    if not isinstance(payload, Mapping):
        raise FCNError(
            f"{path} holds a {type(payload).__name__}, not a state dict or checkpoint dict"
        )
    return dict(payload)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint or bare state dict, such as torchvision's VGG16 file.

    Common wrappers such as ``{"model": sd}`` are unwrapped. This is how a file becomes what the
    model factories take: ``FCN32s.from_vgg16(read_state_dict("vgg16-397923af.pth"))``.
    """
    return _tensors(read_checkpoint(path), path)


def _tensors(payload: dict[str, Any], path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(payload.get(key), Mapping):
            payload = dict(payload[key])
            break
    tensors = {k: v for k, v in payload.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise FCNError(f"{path} holds no tensors; expected model weights")
    return tensors


def infer_variant(sd: Mapping[str, Any]) -> str | None:
    """The variant a state dict's keys name, or None. FCN-8s at-once has FCN-8s's keys: pass it
    explicitly."""
    if "features.0.weight" in sd and "classifier.0.weight" in sd:
        return "torchvision-vgg16"
    if "conv1_1.weight" not in sd:
        return None
    for key, variant in (
        ("upscore8.weight", "fcn8s"),
        ("upscore16.weight", "fcn16s"),
        ("upscore.weight", "fcn32s"),
        ("fc8.weight", "vgg16"),
    ):
        if key in sd:
            return variant
    return None


_FOREIGN = (  # key patterns of other architectures, for a helpful error
    ("layer1.0.conv1.weight", "ResNet"),
    ("encoder.layer.0.", "transformer (BERT/ViT-like)"),
    ("blocks.0.", "transformer (ViT-like)"),
    ("backbone.", "detection/segmentation framework (torchvision/MMDet style)"),
    ("features.0.weight", "torchvision classifier (not VGG16)"),
)


def _describe_foreign(sd: Mapping[str, Any], expected: str) -> str:
    keys = list(sd)
    for pattern, family in _FOREIGN:
        hits = [k for k in keys if pattern in k]
        if hits:
            return (
                f"looks like a {family} checkpoint: {len(keys)} unexpected keys such as {hits[0]}; "
                f"expected {expected}"
            )
    sample = ", ".join(keys[:3])
    return f"has {len(keys)} keys such as {sample}, none of which is {expected}"


def _model_from_state_dict(sd: dict[str, torch.Tensor], variant: str, path: Any) -> Net:
    if variant == "torchvision-vgg16":
        try:
            torchvision_sd = {
                k: v for k, v in sd.items() if k.rpartition(".")[0] in torchvision_to_caffe_names()
            }
            return convolutionalize(torchvision_sd)
        except (KeyError, RuntimeError, ValueError) as e:
            raise FCNError(
                f"{path} looks like torchvision's VGG16 but does not load: {_first_line(e)}"
            ) from None
    try:
        num_classes = _outputs(sd, "score_fr.weight" if variant != "vgg16" else "fc8.weight", path)
        _outputs(sd, "conv1_1.weight", path)
        width = width_of(sd)
    except KeyError as e:
        raise FCNError(
            f"{path}: {_describe_foreign(sd, f'a {variant} state dict (conv1_1 … score_fr)')} "
            f"(missing {e})"
        ) from None
    with torch.device("meta"):  # no memory or init time for weights about to be replaced
        model = create_model(variant, num_classes=num_classes, width=width)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys such as {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys such as {unexpected[0]}")
        hint = (
            " (FCN-8s at-once has FCN-8s's keys; check variant=)"
            if variant.startswith("fcn")
            else ""
        )
        raise FCNError(f"{path} does not match {variant}: {'; '.join(parts)}{hint}")
    for key, value in sd.items():
        if own[key].shape != value.shape:
            raise FCNError(
                f"{path}: {key} has shape {tuple(value.shape)} but {variant} at width {width:g} "
                f"with {num_classes} classes expects {tuple(own[key].shape)}"
            )
    # the file's tensors become the parameters: a 540 MB net is held once, not twice
    model.load_state_dict(
        {k: v.to(torch.float32).contiguous() for k, v in sd.items()}, strict=True, assign=True
    )
    return model


def _outputs(sd: Mapping[str, Any], key: str, path: Any) -> int:
    """The outputs of a convolution the net is sized by (conv1_1: the width, score_fr: the
    classes), checked before they are used: a 4-D weight with at least one."""
    value = sd[key]
    if not isinstance(value, torch.Tensor) or value.dim() != 4 or value.shape[0] < 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise FCNError(
            f"{path}: {key} has shape {shape}; a convolution's weight is out×in×kh×kw with at "
            "least one output"
        )
    return int(value.shape[0])


def _check_info_matches_weights(stored: ModelInfo, built: ModelInfo, path: Any) -> None:
    """Refuse a checkpoint whose metadata describes another net than its weights hold.

    Otherwise it would load and predict, and an export would carry the wrong class count.
    """
    for name, said, held in (
        ("num_classes", stored.num_classes, built.num_classes),
        ("width", stored.width, built.width),
    ):
        if said != held:
            raise FCNError(
                f"{path}: the checkpoint's metadata says {name}={said:g} but its weights hold "
                f"{name}={held:g}; the file was edited or assembled by hand (re-save it with "
                "save_checkpoint)"
            )


def load_model(path: str | os.PathLike[str], variant: str | None = None) -> Net:
    """Any weights file this package understands → an eval-mode net with its ``info`` attached.

    Accepts an fcn-deploy checkpoint, a bare state dict of the PyTorch FCN port (``variant`` given
    or inferred from its keys: ``fcn32s``, ``fcn16s``, ``fcn8s``, ``fcn8s-atonce``), a
    torchvision VGG16 file (giving the convolutionalized classifier) and a Caffe ``.caffemodel``
    (the FCN authors' released nets or the VGG team's VGG16), recognised by what the file is.
    """
    if variant is not None and variant not in VARIANTS:
        raise FCNError(f"{path}: unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    regular_file(path, "file", _EXPECTED)  # before anything opens it: a FIFO would block
    if is_caffe_file(path):
        return _load_caffemodel(path, variant)
    payload = read_checkpoint(path)
    info: ModelInfo | None = None
    if payload.get("format") == FORMAT:
        if int(payload.get("format_version", 0)) > FORMAT_VERSION:
            raise FCNError(
                f"{path} is checkpoint format {payload['format_version']}, newer than this "
                "fcn-deploy "
                f"reads ({FORMAT_VERSION}); upgrade fcn-deploy"
            )
        try:
            info = ModelInfo.from_dict(payload["info"])
        except (KeyError, TypeError, ValueError) as e:
            raise FCNError(f"{path}: checkpoint metadata is damaged ({_first_line(e)})") from None
        sd = {k: v for k, v in payload["state_dict"].items()}
        variant = variant or info.variant
    else:
        sd = _tensors(payload, path)  # the file is read once, whatever it holds
    guessed = infer_variant(sd)
    if variant is None or guessed == "torchvision-vgg16":
        variant = guessed
    if variant is None:
        raise FCNError(
            f"{path}: {_describe_foreign(sd, 'an FCN (conv1_1 … score_fr) or VGG16 state dict')}"
        )
    model = _model_from_state_dict(sd, variant, path)
    if info is not None:
        _check_info_matches_weights(info, model.info, path)
        model.info = info.replace(variant=variant)
    return model.eval()


def _load_caffemodel(path: str | os.PathLike[str], variant: str | None) -> Net:
    """A ``.caffemodel`` → its net, with its release's preprocessing (BGR 0..255 minus the mean
    pixel of the data it was trained on) and class names."""
    weights = read_caffemodel(path)
    guessed = infer_variant(weights.state_dict)
    if guessed is None:
        expected = ("conv1_1", "fc6", "score_fr")
        missing = [n for n in expected if n not in weights.layers]
        raise FCNError(
            f"{path} is a Caffe net of {len(weights.layers)} layers with weights such as "
            f"{', '.join(weights.layers[:3])}, not a VGG16 FCN or VGG16 (missing "
            f"{', '.join(missing) or 'the upsampling layers'})"
        )
    if weights.at_once:
        if variant not in (None, "fcn8s-atonce"):
            raise FCNError(
                f"{path} holds FCN-8s at-once's scale_pool4/scale_pool3 layers; it is "
                f"fcn8s-atonce, not {variant}",
                param="variant",
            )
        variant = "fcn8s-atonce"
    elif variant == "fcn8s-atonce":  # its fixed skip scales would be applied to a net without
        raise FCNError(
            f"{path} has no scale_pool4/scale_pool3 Scale layers, which FCN-8s at-once has; it "
            f"is {guessed}, not fcn8s-atonce",
            param="variant",
        )
    model = _model_from_state_dict(weights.state_dict, variant or guessed, path)
    model.info = model.info.replace(
        preprocessing=weights.preprocessing, class_names=weights.class_names or None
    )
    return model.eval()
