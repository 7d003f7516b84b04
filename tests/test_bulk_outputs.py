"""fcn-predict's outputs on a file system pyarrow opens (its in-process mock), as Ray replicas
write them to s3:// or gs://: whole files under their names, nothing else left."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from test_api import scene

from fcn_deploy.api import Segmenter
from fcn_deploy.bulk.outputs import OutputFolder, overlay_jpeg
from fcn_deploy.errors import FCNError
from fcn_deploy.imageio import encode_label_png


def test_outputs_on_a_pyarrow_file_system(make_checkpoint: Callable[..., Path]) -> None:
    from pyarrow import fs

    seg = Segmenter.load(make_checkpoint("fcn8s"), device="cpu")
    image = scene(40, 56, 3)
    labels = seg.predict(image)
    out = OutputFolder("mock:///bucket/run")
    assert out.remote and not out.complete("a", overlay=True)
    out.write_image(seg, "a", image, labels, overlay_alpha=0.5)
    assert out.complete("a", overlay=True)

    filesystem, root = out._filesystem()
    listed = filesystem.get_file_info(fs.FileSelector(root))
    assert sorted(Path(f.path).name for f in listed) == ["a.png", "a_overlay.jpg"]  # no temps
    with filesystem.open_input_file(f"{root}/a.png") as f:
        png = f.read()
    assert png == encode_label_png(labels, seg.palette)
    with Image.open(io.BytesIO(png)) as read_back:
        np.testing.assert_array_equal(np.array(read_back), labels)
    with filesystem.open_input_file(f"{root}/a_overlay.jpg") as f:
        jpeg = f.read()
    assert jpeg == overlay_jpeg(seg, image, labels, 0.5)
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == image.shape


def test_what_an_input_writes() -> None:
    from fcn_deploy.bulk.outputs import output_files

    assert output_files("a", overlay=True) == ["a_overlay.jpg", "a.png"]
    assert output_files("a", overlay=True, video=True) == ["a_overlay.mp4", "a"]


def test_a_file_in_the_way_on_an_object_store_is_never_replaced(
    make_checkpoint: Callable[..., Path],
) -> None:
    seg = Segmenter.load(make_checkpoint("fcn8s"), device="cpu")
    image = scene(24, 32, 1)
    out = OutputFolder("mock:///bucket/theirs")
    filesystem, root = out._filesystem()
    with filesystem.open_output_stream(f"{root}/a.png") as f:
        f.write(b"a user's file")
    assert not out.complete("a", overlay=False)  # there, but not fcn-deploy's: not done
    with pytest.raises(FCNError, match="is not an fcn-deploy output"):
        out.write_image(seg, "a", image, seg.predict(image))
    with filesystem.open_input_file(f"{root}/a.png") as f:
        assert f.read() == b"a user's file"
