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
