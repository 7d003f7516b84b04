"""`RemoteSegmenter`: `Segmenter`'s predict interface over a Triton server (``fcn-serve``).

>>> seg = RemoteSegmenter("127.0.0.1:8000")               # or "grpc://127.0.0.1:8001"
>>> labels = seg.predict(cv2.imread("street.jpg"))        # H×W uint8 class ids
>>> labels = seg.predict_file("street.jpg")                # the file's bytes, decoded by the server

Class names, palette and size bounds come from the served model's config, so `overlay` and
palette PNGs match local inference. Any failure is an `FCNError` with one line: the server is
unreachable, the model is not there, or what the server said was wrong with a request.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..api import ImageLike, Segmenter, as_bgr8
from ..errors import FCNError
from ..imageio import DEFAULT_MAX_MEGAPIXELS, read_image_file
from ..meta import ModelInfo
from .protocol import ENCODED_SUFFIX, IMAGE_BYTES_INPUT, IMAGE_INPUT, LABELS_OUTPUT, ServedModel

__all__ = ["RemoteSegmenter", "parse_server", "server_error_line"]

PROTOCOLS = ("http", "grpc")


def parse_server(url: str) -> tuple[str, str]:
    """``"HOST:PORT"``, ``"http://HOST:PORT"`` or ``"grpc://HOST:PORT"`` → (protocol, HOST:PORT)."""
    match = re.fullmatch(r"(?:(\w+)://)?([^/\s]+):(\d+)/?", url.strip())
    if not match:
        raise FCNError(f"server={url!r}: expected HOST:PORT, http://HOST:PORT or grpc://HOST:PORT")
    protocol = (match.group(1) or "http").lower()
    if protocol not in PROTOCOLS:
        raise FCNError(f"server={url!r}: protocol must be http or grpc, got {protocol!r}")
    if not 0 < int(match.group(3)) < 65536:
        raise FCNError(f"server={url!r}: the port must be 1..65535")
    return protocol, f"{match.group(2)}:{match.group(3)}"


def server_error_line(error: Exception) -> str:
    """The one line of a Triton error that says what is wrong.

    Errors raised by the model come back from PyTriton wrapped in two tracebacks; the line that
    matters is the exception's own (``FCNError: ...``). Triton's own rejections are one line.
    """
    text = str(getattr(error, "message", lambda: None)() or error)
    found = re.findall(r"(?:FCNError|Error|Exception): (.+)", text)
    line = found[-1] if "Traceback" in text and found else text
    return line.strip().splitlines()[0] if line.strip() else type(error).__name__


class RemoteSegmenter:
    """Segment images on a Triton server that runs ``fcn-serve`` (HTTP or gRPC).

    Safe to share between threads: each thread talks through a client of its own (tritonclient's
    HTTP client runs on gevent, whose connection pool deadlocks when threads share it); `close`
    closes them all.
    """

    def __init__(
        self,
        url: str,
        model_name: str = "fcn",
        protocol: str | None = None,
        max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
    ) -> None:
        """``max_megapixels`` (None: no limit) refuses larger images here, before they are sent."""
        scheme, address = parse_server(url)
        self.max_megapixels = max_megapixels
        self.protocol = protocol or scheme
        if self.protocol not in PROTOCOLS:
            raise FCNError(f"protocol must be http or grpc, got {self.protocol!r}")
        self.address, self.model_name = address, model_name
        if self.protocol == "grpc":
            import tritonclient.grpc as client_module
        else:
            import tritonclient.http as client_module  # type: ignore[no-redef]
        self._module: Any = client_module
        self._local = threading.local()
        self._clients: list[Any] = []  # every thread's client, for close()
        self._lock = threading.Lock()
        self._connect()
        self.model = self._read_model()

    # -- what the model is (from its config) ---------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return list(self.info.palette)

    @property
    def batch_size(self) -> int:
        return self.model.bounds.max_batch or 1

    # -- inference -------------------------------------------------------------------------------

    def predict(self, image: ImageLike, rgb: bool = False) -> np.ndarray:
        """``H×W`` uint8 class ids; the image goes as BGR pixels (`as_bgr8`'s rule)."""
        return self.predict_batch([image], rgb)[0]

    def predict_batch(self, images: Sequence[ImageLike], rgb: bool = False) -> list[np.ndarray]:
        """Equal-size images go together, up to the server's max batch per request; order kept."""
        pixels = [as_bgr8(im, rgb, self.max_megapixels) for im in images]
        results: list[np.ndarray | None] = [None] * len(pixels)
        groups: dict[tuple[int, int], list[int]] = {}
        for k, p in enumerate(pixels):
            groups.setdefault((p.shape[0], p.shape[1]), []).append(k)
        for indices in groups.values():
            for i in range(0, len(indices), self.batch_size):
                chunk = indices[i : i + self.batch_size]
                labels = self._infer(
                    self.model_name, IMAGE_INPUT, np.stack([pixels[k] for k in chunk]), "UINT8"
                )
                for k, a in zip(chunk, labels, strict=True):
                    results[k] = a
        return results  # type: ignore[return-value]

    def predict_encoded(self, data: bytes) -> np.ndarray:
        """Labels of an encoded image file's bytes (JPEG, PNG, ...), decoded by the server."""
        array = np.array([data], dtype=np.object_)
        return self._infer(self.model_name + ENCODED_SUFFIX, IMAGE_BYTES_INPUT, array, "BYTES")

    def predict_file(self, path: str | os.PathLike[str]) -> np.ndarray:
        """`predict_encoded` of a file as it is on disk."""
        return self.predict_encoded(read_image_file(path, self.max_megapixels))

    def overlay(
        self, image: ImageLike, labels: np.ndarray, alpha: float = 0.5, rgb: bool = False
    ) -> np.ndarray:
        """`Segmenter.overlay` with the served model's palette."""
        return Segmenter.overlay(self, image, labels, alpha, rgb)  # type: ignore[arg-type]

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def __enter__(self) -> RemoteSegmenter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RemoteSegmenter {self.model_name} at {self.protocol}://{self.address}>"

    # -- internals -------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.protocol}://{self.address}"

    @property
    def _client(self) -> Any:
        """This thread's client (created on its first request)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._module.InferenceServerClient(self.address)
            with self._lock:
                self._clients.append(client)
        return client

    def _connect(self) -> None:
        try:
            live = self._client.is_server_live()
        except Exception as e:  # connection refused, DNS, timeout: each client raises its own
            self.close()
            raise FCNError(
                f"no Triton server answers at {self._where()} ({server_error_line(e)}); "
                "start one with fcn-serve MODEL or check --server"
            ) from None
        if not live:
            raise FCNError(f"the Triton server at {self._where()} is not live")

    def _read_model(self) -> ServedModel:
        try:
            ready = self._client.is_model_ready(self.model_name)
        except Exception as e:
            raise FCNError(f"{self._where()}: {server_error_line(e)}") from None
        if not ready:
            raise FCNError(
                f"the Triton server at {self._where()} has no model '{self.model_name}' ready; "
                "check the model name (fcn-serve --model-name)"
            )
        config = self._client.get_model_config(self.model_name)
        if self.protocol == "grpc":
            params = {k: v.string_value for k, v in config.config.parameters.items()}
        else:
            params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        try:
            return ServedModel.from_parameters(params)
        except (KeyError, ValueError, TypeError):
            raise FCNError(
                f"model '{self.model_name}' at {self._where()} was not served by fcn-serve "
                "(its config has no fcn_deploy parameters)"
            ) from None

    def _infer(self, model: str, name: str, array: np.ndarray, dtype: str) -> np.ndarray:
        tensor = self._module.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        output = self._module.InferRequestedOutput(LABELS_OUTPUT)
        try:
            result = self._client.infer(model, [tensor], outputs=[output])
        except Exception as e:
            raise FCNError(server_error_line(e)) from None
        labels = result.as_numpy(LABELS_OUTPUT)
        if labels is None:
            raise FCNError(f"model '{model}' at {self._where()} returned no '{LABELS_OUTPUT}'")
        return labels
