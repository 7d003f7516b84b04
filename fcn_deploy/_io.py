"""Atomic file writes: an output file either appears whole or not at all."""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ._gate import open_regular, os_reason
from ._owned import publish, temp_name, temp_space
from .errors import FCNError

log = logging.getLogger(__name__)


def check_output_file(
    path: str | os.PathLike[str], suffixes: Sequence[str] | None = None, probe: bool = True
) -> Path:
    """Refuse an output path that cannot be written, before any work is done for it.

    ``path`` must not be a folder, its folder must exist and be writable, and with ``suffixes``
    its name must end in one of them (models are loaded by suffix: a file without the right one
    would be misread later). ``probe`` creates and deletes a file there to be sure.
    """
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise FCNError(
            f"{path}: the output name must end in {' or '.join(suffixes)} (e.g. "
            f"{path.stem or 'model'}{suffixes[0]}); model files are recognised by their suffix"
        )
    if path.is_dir():
        raise FCNError(f"cannot write {path}: it is a folder (give a file name inside it)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist (create it first)"
        raise FCNError(f"cannot write {path}: {parent} {what}")
    if probe:
        _probe(parent, f"cannot write {path}")
    elif not os.access(parent, os.W_OK):
        raise FCNError(f"cannot write {path}: folder {parent} is not writable")
    return path


def _probe(folder: Path, what: str) -> None:
    """Create and delete a file in ``folder``: the only test that holds for root, read-only mounts
    and pseudo file systems (os.access says yes to root everywhere)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".fcn-deploy-probe.", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise FCNError(f"{what}: folder {folder} is not writable ({os_reason(e)})") from None


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Refuse an output folder that could not be created or written, without creating it yet.

    Nothing is created here, so a run that fails before writing (a bad model, no inputs) leaves
    no empty folder behind; `make_output_dir` creates it once there is something to write.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FCNError(f"cannot use {path} as an output folder: it is a file")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise FCNError(f"cannot create output folder {path}: {existing} is a file")
    _probe(existing, f"cannot create output folder {path}")
    return path


def make_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create an output folder (and its parents); one line naming it and the cause if that fails."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FCNError(f"cannot use {path} as an output folder: it is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FCNError(f"cannot create output folder {path}: {os_reason(e)}") from None
    if not os.access(path, os.W_OK):
        raise FCNError(f"cannot write into output folder {path}: Permission denied")
    return path


def missing_folders(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, innermost first.

    Taken before a run creates its output folder, so that a run that wrote nothing can remove
    exactly what it created (`remove_empty_folders`) and nothing that was there before.
    """
    missing = []
    for folder in (Path(path), *Path(path).parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def remove_empty_folders(folders: Sequence[Path]) -> None:
    """Remove ``folders`` (innermost first) while they are empty; stop at the first that is not."""
    for folder in folders:
        try:
            folder.rmdir()  # fails on a folder with anything in it
        except OSError:
            return


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], owned_only: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Writers that take a file name (torch.save, onnx.save, cv2.imwrite) write to the yielded path,
    so a crash, a full disk or Ctrl-C never leaves half a checkpoint, ONNX file or engine behind.
    The temp path lies in a private folder of this process (`fcn_deploy._owned.temp_space`),
    removed afterwards whatever happens; one a killed process left is removed at the next write
    into the same folder. Every OSError of the temp file or the rename becomes one `FCNError`
    naming the path and the cause.

    ``owned_only``: for outputs named after inputs rather than by the user, replace only a file
    fcn-deploy wrote (`fcn_deploy._owned.publish`); anything else there is an `FCNError`.
    """
    path = check_output_file(path, probe=False)  # making the temp space is the real test
    parent = path.parent if str(path.parent) else Path(".")
    with temp_space(parent, f"cannot write {path}") as space:
        tmp = temp_name(space, path.suffix)
        try:
            yield tmp
        except OSError as e:  # the writer's own failure: a full disk, a quota, a lost mount
            raise FCNError(f"cannot write {path}: {os_reason(e)}") from None
        try:
            os.chmod(tmp, 0o666 & ~current_umask())  # as a plain open() would have made it
            if owned_only:
                publish(tmp, path)
            else:
                os.replace(tmp, path)
        except OSError as e:
            raise FCNError(f"cannot write {path}: {os_reason(e)}") from None


def current_umask() -> int:
    """The process's umask (read by setting and restoring it): new files get ``0o666 & ~umask``."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, owned_only: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (``owned_only``: see `atomic_path`)."""
    with atomic_path(path, owned_only) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (checkpoints, ONNX files, engines are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# leading bytes → what a file is, for messages about files that are not what was expected
_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive (PyTorch's torch.save format)"),
    (b"\x80\x02", "a Python pickle"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x89HDF", "an HDF5 file (Keras/TensorFlow weights?)"),
)


def describe_file(path: str | os.PathLike[str]) -> str | None:
    """What a file looks like from its first bytes ("an empty file", "a text file", "a PNG image"),
    or None when it is unknown. Used to say what a file *is* when it is not what was expected.
    Only a regular file is read (a FIFO would block)."""
    try:
        with open_regular(path) as f:
            head = f.read(512)
    except (FCNError, OSError):
        return None
    return describe_bytes(head)


def describe_bytes(data: bytes) -> str | None:
    """`describe_file` for a file's bytes already read (only the first 512 are looked at)."""
    head = data[:512]
    if not head:
        return "an empty file (0 bytes)"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head.startswith(b"\x80") and len(head) > 1 and 2 <= head[1] <= 5:
        return "a Python pickle"
    if head[0] == 0x08 and (b"pytorch" in head or b"onnx" in head or b"ai.onnx" in head):
        return "an ONNX model (name it .onnx)"
    try:  # incremental: a character cut at byte 512 is not an error
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return "a text file"
    return None
