"""The files an ONNX model names as external data, checked before anything opens or copies them.

An initializer may keep its bytes in another file (``external_data`` ``location``). ONNX Runtime,
OpenVINO and TensorRT read that file as weights, and a Triton repository copies it: a model from a
stranger could name ``/etc/shadow``, ``../../secret.txt`` or a symlink pointing elsewhere and
have it read, served back as outputs, or copied world-readable. Only older ONNX Runtime releases
accept such paths, so fcn-deploy checks them itself: every location must resolve (symlinks
included) to a file inside the model's own folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._io import os_reason
from ..errors import FCNError

__all__ = ["external_data_files"]


def external_data_files(path: str | os.PathLike[str], model: Any | None = None) -> list[Path]:
    """The external-data files of the ONNX file ``path``, as written in it (relative to its folder).

    ``model``: the already parsed ``onnx.ModelProto`` (loaded without external data), to avoid a
    second parse. Raises `FCNError` for a location that is absolute, leaves the model's folder
    (``..``, or a symlink resolving outside it) or names no file.
    """
    path = Path(path)
    if model is None:
        import onnx

        try:
            model = onnx.load(os.fspath(path), load_external_data=False)
        except OSError as e:
            raise FCNError(f"{path}: cannot read ({os_reason(e)})") from None
        except Exception as e:  # protobuf's DecodeError and friends: the caller words "not ONNX"
            raise FCNError(f"{path} is not a readable ONNX file ({type(e).__name__})") from None
    tensors = [*model.graph.initializer, *_constant_tensors(model.graph)]
    names = sorted({e.value for t in tensors for e in t.external_data if e.key == "location"})
    folder = path.parent.resolve()
    files = []
    for name in names:
        relative = Path(name)
        target = (path.parent / relative).resolve()
        if relative.is_absolute() or not target.is_relative_to(folder):
            raise FCNError(
                f"{path} is refused: it names external data {name!r}, which resolves to "
                f"{target}, outside the model's folder {folder} (external-data files must lie "
                "in the model's folder or below it)"
            )
        if not target.is_file():
            raise FCNError(f"{path} names external data {name!r}, which is not a file in {folder}")
        files.append(relative)
    return files


def _constant_tensors(graph: Any) -> list[Any]:
    """Tensors held by node attributes (Constant nodes): they may name external data too."""
    return [a.t for node in graph.node for a in node.attribute if a.HasField("t")]
