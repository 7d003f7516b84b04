"""Plain logic around running engines, tested here without a GPU: device normalization, buffer
alignment, forced profiles, the timing-cache fallback.

The device tests patch torch.cuda's queries (current device, count, availability) because the
mapping from a device string to an indexed device is logic; they say nothing about a GPU backend.
"""

from __future__ import annotations

import pytest
import torch

from fcn_deploy._device import indexed_device, same_device
from fcn_deploy.engine import Profile, choose_profile, default_profiles
from fcn_deploy.engine.buffers import TENSOR_ALIGNMENT, aligned_input, is_aligned
from fcn_deploy.errors import FCNError
from fcn_deploy.runtime import resolve_device

# --- devices ------------------------------------------------------------------------------------


@pytest.fixture
def two_gpus_current_1(monkeypatch):
    """A machine whose torch reports two GPUs, the current one being cuda:1."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)


def test_resolve_device_is_always_indexed_for_cuda(two_gpus_current_1):
    assert resolve_device(None) == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(FCNError, match="cuda:2 does not exist: this machine has 2 GPU"):
        resolve_device("cuda:2")


def test_resolve_device_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(FCNError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(FCNError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


def test_same_device_compares_type_and_index(two_gpus_current_1):
    cuda0, cuda1, bare = torch.device("cuda:0"), torch.device("cuda:1"), torch.device("cuda")
    assert cuda0 != bare  # torch's own comparison: why same_device exists
    assert same_device(cuda1, bare) and same_device(bare, cuda1) and same_device(bare, bare)
    assert not same_device(cuda0, bare) and not same_device(cuda0, cuda1)
    assert same_device(torch.device("cpu"), torch.device("cpu"))
    assert not same_device(torch.device("cpu"), cuda0)
    assert indexed_device(bare) == cuda1 and indexed_device(cuda0) == cuda0


def test_resolve_device_here_matches_the_machine():
    dev = resolve_device(None)
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert dev.type == "cpu" or dev.index is not None


# --- alignment ----------------------------------------------------------------------------------


def test_alignment_rule_is_256_bytes():
    assert TENSOR_ALIGNMENT == 256
    assert is_aligned(0) and is_aligned(256 * 7) and not is_aligned(256 * 7 + 4)


def test_misaligned_views_are_copied_and_aligned_tensors_are_not():
    # a float32 batch of 3×5×7 images: one image is 420 bytes, so batch[1:] starts 420 bytes in
    batch = torch.arange(4 * 3 * 5 * 7, dtype=torch.float32).reshape(4, 3, 5, 7)
    view = batch[1:]
    assert view.is_contiguous() and view.data_ptr() - batch.data_ptr() == 420
    base_aligned = is_aligned(batch.data_ptr())
    fixed = aligned_input(view)
    if is_aligned(view.data_ptr()):  # only if the allocator placed batch at 256k - 420
        assert fixed is view
    else:
        assert fixed is not view and torch.equal(fixed, view)
        assert fixed.untyped_storage().data_ptr() != batch.untyped_storage().data_ptr()
    if base_aligned:
        assert aligned_input(batch) is batch  # no copy for what TensorRT accepts


# --- forced profiles ----------------------------------------------------------------------------

SHARED_MIN = [  # like default_profiles: both profiles start at the same min shape
    Profile((1, 3, 32, 32), (1, 3, 512, 512), (8, 3, 1024, 1024)),
    Profile((1, 3, 32, 32), (1, 3, 2048, 2048), (1, 3, 4096, 4096)),
]


def test_forced_profile_is_used_even_where_another_is_nearer():
    shape = (1, 3, 32, 32)
    assert choose_profile(SHARED_MIN, shape, None) == 0  # the executor's own choice
    assert choose_profile(SHARED_MIN, shape, 1) == 1  # the gate checks profile 1 at its min
    assert choose_profile(SHARED_MIN, (1, 3, 3000, 3000), None) == 1


def test_forced_profile_must_exist_and_hold_the_shape():
    with pytest.raises(
        FCNError, match=r"profile=2 does not exist: this engine has profiles 0\.\.1"
    ):
        choose_profile(SHARED_MIN, (1, 3, 64, 64), 2)
    with pytest.raises(FCNError, match=r"1x3x2000x2000 .* outside profile 0 .*profile=None"):
        choose_profile(SHARED_MIN, (1, 3, 2000, 2000), 0)
    with pytest.raises(FCNError, match="outside every optimization profile"):
        choose_profile(SHARED_MIN, (2, 3, 2000, 2000), None)


def test_gate_checks_every_profile_at_its_own_sizes_forced():
    from fcn_deploy.engine import gate_jobs, gate_shapes

    jobs = gate_jobs(SHARED_MIN)
    for index, profile in enumerate(SHARED_MIN):
        mine = [shape for i, shape in jobs if i == index]
        assert mine == gate_shapes(profile) and len(mine) == 4
        assert mine[:3] == [profile.min, profile.opt, profile.max]
        assert all(choose_profile(SHARED_MIN, s, index) == index for s in mine)
    # the shared min shape is run once per profile, and left to itself would go to profile 0 twice
    assert [i for i, s in jobs if s == (1, 3, 32, 32)] == [0, 1]
    assert choose_profile(SHARED_MIN, (1, 3, 32, 32), None) == 0


def test_a_cpu_reference_gates_every_profile_within_a_pixel_budget():
    """Without ONNX Runtime's CUDA provider the reference runs on the CPU: a full FCN-8s at
    4096x4096 took minutes per gate size there."""
    from fcn_deploy.engine.gate import CPU_GATE_PIXELS, gate_jobs

    jobs = gate_jobs(SHARED_MIN, CPU_GATE_PIXELS)
    assert all(n * h * w <= CPU_GATE_PIXELS for _, (n, _, h, w) in jobs)
    assert all(choose_profile(SHARED_MIN, s, index) == index for index, s in jobs)
    assert (0, (8, 3, 362, 362)) in jobs and (1, (1, 3, 1024, 1024)) in jobs  # the two max shapes
    assert {i for i, _ in jobs} == {0, 1} and (0, (1, 3, 32, 32)) in jobs  # mins untouched
    assert gate_jobs(SHARED_MIN) == gate_jobs(SHARED_MIN, 1 << 40)  # a GPU reference: as before
    static = Profile((1, 3, 2048, 2048), (1, 3, 2048, 2048), (1, 3, 2048, 2048))
    assert gate_jobs([static], CPU_GATE_PIXELS) == [(0, (1, 3, 2048, 2048))]  # nothing smaller


# --- timing cache fallback ----------------------------------------------------------------------


class _Config:
    """Records what the build config would be given; ``create`` behaves as TensorRT's does for a
    blob it cannot read (None, or an exception) or one from another GPU (attach refuses it)."""

    def __init__(self, on_blob: str) -> None:
        self.on_blob = on_blob
        self.attached: list[bytes] = []

    def create(self, blob: bytes) -> bytes | None:
        if blob and self.on_blob == "none":
            return None
        if blob and self.on_blob == "raise":
            raise RuntimeError("Magic tag does not match")
        return b"cache:" + blob

    def attach(self, cache: bytes) -> bool:
        if cache != b"cache:" and self.on_blob == "mismatch":
            return False
        self.attached.append(cache)
        return True


@pytest.mark.parametrize(
    "on_blob, reason",
    [("none", "could not read it"), ("raise", "Magic tag"), ("mismatch", "another GPU")],
)
def test_unusable_timing_cache_falls_back_to_a_fresh_one_with_a_warning(on_blob, reason):
    from fcn_deploy.engine.plan import attach_timing_cache

    config = _Config(on_blob)
    cache, warning = attach_timing_cache(b"old", config.create, config.attach)
    assert cache == b"cache:" and config.attached == [b"cache:"]  # fresh, and nothing else
    assert warning is not None and reason in warning and "starting a new one" in warning


def test_usable_or_absent_timing_cache_needs_no_warning():
    from fcn_deploy.engine.plan import attach_timing_cache

    config = _Config("ok")
    assert attach_timing_cache(b"old", config.create, config.attach) == (b"cache:old", None)
    assert attach_timing_cache(None, config.create, config.attach) == (b"cache:", None)
    broken = _Config("ok")
    with pytest.raises(FCNError, match="could not create an empty timing cache"):
        attach_timing_cache(None, lambda blob: None, broken.attach)


def test_a_refused_profile_switch_says_what_to_do():
    from fcn_deploy.engine.profiles import profile_switch_message

    msg = profile_switch_message(1, 2, RuntimeError("Error in set optimization profile async."))
    assert "profile 1 of 2 (Error in set optimization profile async.)" in msg
    assert "rebuild it with fcn-export --engine" in msg and "\n" not in msg
    assert "another execution context" not in msg  # no such rule in the 10.13/11.x headers
    assert "()" not in profile_switch_message(0, 1, None)


def test_a_batch_no_profile_holds_at_its_size_runs_in_chunks_of_the_largest_that_does():
    from fcn_deploy.engine.profiles import largest_batch
    from fcn_deploy.meta import SizeBounds

    profiles = default_profiles(SizeBounds((1, 1), (4096, 4096), 1, 8))
    assert largest_batch(profiles, (2, 3, 1500, 1500)) == 1  # only the batch-1 profile
    assert largest_batch(profiles, (2, 3, 512, 512)) == 8
    assert largest_batch(profiles, (1, 3, 5000, 5000)) == 0
    assert largest_batch(profiles, (1, 4, 512, 512)) == 0  # channels are fixed


# --- engines whose profiles do not nest -----------------------------------------------------------

LANDSCAPE = Profile((1, 3, 64, 128), (1, 3, 360, 640), (4, 3, 720, 1280))
PORTRAIT = Profile((1, 3, 128, 64), (1, 3, 640, 360), (4, 3, 1280, 720))


class StubExecutor:
    """`EngineExecutor`'s interface without TensorRT, for the runner's own logic: the profile is
    chosen as the real executor chooses it (`choose_profile`, an FCNError for a shape no profile
    holds) and the answer is a per-pixel 1×1 convolution; every call's profile and shape is kept.
    What it cannot show is TensorRT itself running those shapes (tests/test_trt_engine.py)."""

    def __init__(self, profiles: list[Profile], num_classes: int = 21) -> None:
        self.profiles = profiles
        self.device = torch.device("cpu")
        self.input_dtype = torch.float32
        self.weight = torch.randn(num_classes, 3, generator=torch.Generator().manual_seed(0))
        self.calls: list[tuple[int, tuple[int, ...]]] = []

    def run(self, x: torch.Tensor, profile: int | None = None) -> torch.Tensor:
        chosen = choose_profile(self.profiles, tuple(x.shape), profile)
        self.calls.append((chosen, tuple(x.shape)))
        return torch.einsum("nchw,kc->nkhw", x, self.weight)

    def close(self) -> None:
        pass


@pytest.fixture
def crossed(tmp_path):
    """A TensorRT runner over landscape and portrait profiles (docs/gpu.md's example)."""
    from test_engine_logic import _meta

    from fcn_deploy.runtime.trt_runner import TensorRTRunner

    meta = _meta(tmp_path)
    assert meta.profiles == [LANDSCAPE, PORTRAIT]
    executor = StubExecutor(meta.profiles)
    return TensorRTRunner.from_executor(executor, meta), executor


def test_a_size_no_profile_holds_is_named_with_its_real_batch():
    from fcn_deploy.engine.profiles import batch_chunk

    with pytest.raises(FCNError, match=r"input shape 3x3x1000x1000 \(NxCxHxW\) is outside every"):
        batch_chunk([LANDSCAPE, PORTRAIT], (3, 3, 1000, 1000))  # was reported as batch 0
    assert batch_chunk([LANDSCAPE, PORTRAIT], (6, 3, 700, 1200)) == 4  # two calls: 4 + 2
    assert batch_chunk([LANDSCAPE, PORTRAIT], (2, 3, 1200, 700)) == 2


def test_the_runner_lists_each_profiles_sizes_not_the_box_around_them(crossed):
    from fcn_deploy._sizes import largest_tile, padded_size

    runner, executor = crossed
    assert runner.bounds.max_hw == (1280, 1280)  # the box: holds no 1000x1000 image
    ranges = runner.size_ranges
    assert [r.max_hw for r in ranges] == [(720, 1280), (1280, 720)]
    assert [r.min_hw for r in ranges] == [(64, 128), (128, 64)]
    assert padded_size(ranges, 1000, 1000) is None
    assert padded_size(ranges, 1200, 700) == (1200, 700)
    assert padded_size(ranges, 700, 30) == (700, 64)  # the fewest pixels added: portrait
    assert largest_tile(ranges, (1024, 1024)) == (720, 1024)  # one profile holds it whole
    assert runner.infer(torch.zeros(3, 3, 1200, 700)).shape == (3, 21, 1200, 700)
    assert executor.calls == [(1, (3, 3, 1200, 700))]
    with pytest.raises(FCNError, match=r"input shape 2x3x1000x1000 .*\(profile 0: 1\.\.4 x 3"):
        runner.infer(torch.zeros(2, 3, 1000, 1000))


def test_the_segmenter_tiles_and_pads_within_one_profile(crossed):
    """2000×3000 used to fail with tiles of 1024×1024 (inside the box, outside both profiles), and
    1000×1000 was refused although tiling was on."""
    import numpy as np

    from fcn_deploy.api import Segmenter

    runner, executor = crossed
    seg = Segmenter(runner, tile=True)
    assert seg.tile_size == (720, 1024) and seg.batch_size == 4
    rng = np.random.default_rng(0)
    for h, w in [(2000, 3000), (1000, 1000)]:
        executor.calls.clear()
        assert seg.predict(rng.integers(0, 256, (h, w, 3), np.uint8)).shape == (h, w)
        assert len(executor.calls) > 1 and {p for p, _ in executor.calls} == {0}
    whole = [((1200, 700), 1, (1200, 700)), ((700, 1200), 0, (700, 1200))]
    padded = [((30, 700), 0, (64, 700)), ((700, 30), 1, (700, 64)), ((5, 5), 0, (64, 128))]
    for (h, w), profile, ran in whole + padded:  # padded up to a profile's minimum, then cropped
        executor.calls.clear()
        assert seg.predict(rng.integers(0, 256, (h, w, 3), np.uint8)).shape == (h, w)
        assert executor.calls == [(profile, (1, 3, *ran))]
    untiled = Segmenter(runner)
    with pytest.raises(FCNError, match=r"1000x1000 .* \(up to 720x1280 or 1280x720\); pass tile="):
        untiled.predict(np.zeros((1000, 1000, 3), np.uint8))
    with pytest.raises(FCNError, match=r"tile size 1000x1000 .* \(64x128\.\.720x1280 or 128x64"):
        Segmenter(runner, tile=True, tile_size=1000)


def test_the_server_advertises_and_checks_what_a_profile_holds(crossed):
    from fcn_deploy.api import Segmenter
    from fcn_deploy.serve.protocol import ServedModel
    from fcn_deploy.serve.server import check_images, served_sizes

    runner, _ = crossed
    seg = Segmenter(runner, batch_size=4)
    sizes = served_sizes(seg, max_batch=8)
    assert check_images((1, 1000, 1000, 3), sizes) == (
        "an image of 1000x1000 (HxW) is larger than this model accepts (up to 720x1280 or "
        "1280x720); resize it, or serve a model exported with a larger --max-size (an engine: "
        "built with profiles holding it)"
    )
    for hw in [(1200, 700), (700, 1200), (1, 1)]:
        assert check_images((2, *hw, 3), sizes) is None
    model = ServedModel(seg.info, runner.bounds, runner.name, "cuda:0", sizes=sizes)
    params = model.to_parameters()
    assert params["fcn_deploy.max_sizes"] == "[[720, 1280], [1280, 720]]"
    back = ServedModel.from_parameters(params)
    assert [r.max_hw for r in back.ranges] == [(720, 1280), (1280, 720)]
    older = {k: v for k, v in params.items() if not k.endswith("max_sizes")}
    assert [r.max_hw for r in ServedModel.from_parameters(older).ranges] == [(1280, 1280)]


# --- cancelling a build ---------------------------------------------------------------------------


def test_ctrl_c_during_a_build_on_the_worker_stops_it_then_interrupts():
    """The build (here a stand-in that polls the flag, as TensorRT polls step_complete) runs on a
    worker; the main thread, waiting in short steps, runs the SIGINT handler at once, and the
    KeyboardInterrupt comes once the build has stopped, not before."""
    import os
    import signal
    import threading
    import time

    from fcn_deploy.engine.cancel import run_cancellable

    cancelled = threading.Event()
    seen: list[str] = []

    def build() -> str:
        deadline = time.monotonic() + 30
        while not cancelled.is_set():
            assert time.monotonic() < deadline, "never cancelled"
            time.sleep(0.01)
        seen.append("stopped")
        return "stopped early"

    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_cancellable(build, cancelled)
    assert seen == ["stopped"] and time.monotonic() - start < 10
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_build_without_signals_returns_its_result_or_raises_its_error():
    import threading

    from fcn_deploy.engine.cancel import run_cancellable

    cancelled = threading.Event()
    assert run_cancellable(lambda: threading.current_thread().name, cancelled) == "tensorrt-build"

    def fails() -> None:
        raise FCNError("TensorRT failed to build")

    with pytest.raises(FCNError, match="failed to build"):
        run_cancellable(fails, cancelled)
    assert not cancelled.is_set()
    # from a thread other than the main one no handler can be set: the build just runs
    result: list[object] = []
    other = threading.Thread(target=lambda: result.append(run_cancellable(lambda: 7, cancelled)))
    other.start()
    other.join()
    assert result == [7]


def test_tensorrt_objects_are_made_on_the_gpu_asked_for(two_gpus_current_1):
    """The Builder/Runtime made first (for TensorRT's own CUDA message) used to be created on
    the current GPU before switching: running on cuda:0 opened a context on cuda:1 here."""
    from fcn_deploy._device import requested_cuda_index

    assert (
        requested_cuda_index("cuda:0") == 0 and requested_cuda_index(torch.device("cuda", 1)) == 1
    )
    for stay in (None, "cuda", "cpu", "cuda:2", "gpu0"):  # current, not GPU, or not there
        assert requested_cuda_index(stay) is None
