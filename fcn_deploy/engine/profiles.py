"""Optimization profiles: the shape ranges a dynamic engine is built for, as plain data.

A TensorRT engine only accepts shapes inside one of its profiles (``min ≤ shape ≤ max`` per dim)
and is fastest near the profile's ``opt``. Parsing, validating, defaulting and choosing profiles
needs no TensorRT, so it lives here and is tested everywhere; the builder only copies
``Profile.min/opt/max`` into ``IOptimizationProfile.set_shape``.

Shapes are NCHW (``1x3x512x512``) for tensor-mode models. Image-mode models take NHWC uint8
(``1x512x512x3``); profiles are still written and stored NCHW, and `Profile.for_io` gives the
layout the network input actually has.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from ..errors import FCNError
from ..meta import SizeBounds

__all__ = [
    "Profile",
    "Shape",
    "batch_chunk",
    "choose_profile",
    "covering_profiles",
    "default_profiles",
    "format_shape",
    "largest_batch",
    "parse_shape",
    "profile_switch_message",
    "profiles_from_strings",
    "select_profile",
    "validate_profiles",
]

Shape = tuple[int, int, int, int]  # N, C, H, W

# The size an FCN is usually served at (PASCAL VOC images are at most 500×500): the default opt.
TYPICAL_HW = 512
BATCH_MAX_HW = 1024  # largest H and W of the default batched profile
DEFAULT_MAX_BATCH = 8
_SHAPE_RE = re.compile(r"^\s*(\d+)\s*[x×,]\s*(\d+)\s*[x×,]\s*(\d+)\s*[x×,]\s*(\d+)\s*$")


def parse_shape(text: str) -> Shape:
    """``"1x3x512x512"`` → ``(1, 3, 512, 512)``; one FCNError line for anything else."""
    m = _SHAPE_RE.match(text)
    if not m:
        raise FCNError(
            f"bad shape {text!r}: write NxCxHxW with positive integers, e.g. 1x3x512x512"
        )
    n, c, h, w = (int(g) for g in m.groups())
    if c != 3:
        raise FCNError(f"bad shape {text!r}: the channel dim must be 3 (NxCxHxW, e.g. 1x3x{h}x{w})")
    if min(n, h, w) < 1:
        raise FCNError(f"bad shape {text!r}: batch, height and width must be at least 1")
    return (n, c, h, w)


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


@dataclass(frozen=True)
class Profile:
    """One optimization profile: NCHW ``min ≤ opt ≤ max`` in every dim."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        for name, shape in (("min", self.min), ("opt", self.opt), ("max", self.max)):
            if len(shape) != 4 or shape[1] != 3:
                raise FCNError(
                    f"profile {name} shape {format_shape(shape)} must be NxCxHxW with C = 3"
                )
        for dim, label in ((0, "batch"), (2, "height"), (3, "width")):
            lo, mid, hi = self.min[dim], self.opt[dim], self.max[dim]
            if not lo <= mid <= hi:
                raise FCNError(
                    f"profile {self}: {label} must satisfy min ≤ opt ≤ max, got {lo}, {mid}, {hi}; "
                    "reorder the --min-shape/--opt-shape/--max-shape values"
                )

    def fits(self, shape: Sequence[int]) -> bool:
        """Whether an NCHW shape lies inside this profile."""
        return (
            all(lo <= d <= hi for d, lo, hi in zip(shape, self.min, self.max, strict=False))
            and len(shape) == 4
        )

    def distance(self, shape: Sequence[int]) -> float:
        """How far a fitting shape is from ``opt`` (relative, summed over dims): smaller is
        faster."""
        return sum(abs(d - o) / max(o, 1) for d, o in zip(shape, self.opt, strict=False))

    def size_bounds(self) -> SizeBounds:
        """The batches and H×W this profile holds, as the runtime's `SizeBounds`."""
        (n0, _, h0, w0), (n1, _, h1, w1) = self.min, self.max
        return SizeBounds(min_hw=(h0, w0), max_hw=(h1, w1), min_batch=n0, max_batch=n1)

    def range_text(self) -> str:
        """``1..8 x 3 x 64..1024 x 64..2048`` (NxCxHxW), for messages."""
        return " x ".join(
            str(lo) if lo == hi else f"{lo}..{hi}"
            for lo, hi in zip(self.min, self.max, strict=True)
        )

    def for_io(self, io: str) -> tuple[Shape, Shape, Shape]:
        """min/opt/max in the network input's layout: NCHW (tensor) or NHWC (image)."""
        if io == "image":
            return tuple((s[0], s[2], s[3], s[1]) for s in (self.min, self.opt, self.max))  # type: ignore[return-value]
        return (self.min, self.opt, self.max)

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        return cls(*(tuple(int(v) for v in d[k]) for k in ("min", "opt", "max")))  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{format_shape(self.min)} / {format_shape(self.opt)} / {format_shape(self.max)}"


def profiles_from_strings(
    mins: Sequence[str], opts: Sequence[str], maxs: Sequence[str]
) -> list[Profile]:
    """Profiles from repeated ``--min-shape/--opt-shape/--max-shape`` values (the i-th of each).

    An omitted ``--opt-shape`` list means "the shape inside [min, max] nearest to one 512×512
    image" for every profile (TensorRT tunes kernels for opt); min and max must be given the same
    number of times.
    """
    if len(mins) != len(maxs):
        raise FCNError(
            f"got {len(mins)} --min-shape and {len(maxs)} --max-shape values; give one of each per "
            "profile"
        )
    if opts and len(opts) != len(mins):
        raise FCNError(
            f"got {len(opts)} --opt-shape values for {len(mins)} profiles; give one per profile"
        )
    profiles = []
    for i, (lo_text, hi_text) in enumerate(zip(mins, maxs, strict=False)):
        lo, hi = parse_shape(lo_text), parse_shape(hi_text)
        opt = parse_shape(opts[i]) if opts else _clamp((1, 3, TYPICAL_HW, TYPICAL_HW), lo, hi)
        profiles.append(Profile(lo, opt, hi))
    return profiles


def _clamp(shape: Shape, lo: Shape, hi: Shape) -> Shape:
    return tuple(min(max(d, a), b) for d, a, b in zip(shape, lo, hi, strict=False))  # type: ignore[return-value]


def validate_profiles(profiles: Sequence[Profile], bounds: SizeBounds) -> None:
    """Every profile must lie inside the sizes the ONNX graph was exported and verified for."""
    if not profiles:
        raise FCNError(
            "no optimization profiles given; pass --min-shape/--max-shape or use the defaults"
        )
    for i, p in enumerate(profiles):
        for label, shape in (("min", p.min), ("max", p.max)):
            problem = bounds.violation(shape[0], shape[2], shape[3])
            if problem:
                raise FCNError(
                    f"profile {i} {label} shape {format_shape(shape)}: {problem}, the range the "
                    "ONNX model was exported for; choose smaller shapes or re-export with larger "
                    "bounds"
                )


def default_profiles(bounds: SizeBounds) -> list[Profile]:
    """Two profiles inside the export bounds: batches of ordinary images, and single large ones.

    A TensorRT context reserves activation memory for its largest shape, so one profile spanning
    batch 32 at 4096×4096 would not fit any GPU. Profile 0 serves batches (≤ 8) up to 1024×1024,
    tuned for one 512×512 image (PASCAL VOC images are ≤ 500×500); profile 1 takes one image up
    to the export maximum. When the bounds are small, the second profile would add nothing and
    is left out.
    """
    h0, w0 = bounds.min_hw
    h1, w1 = bounds.max_hw or (4096, 4096)
    n0 = bounds.min_batch
    n1 = max(n0, min(DEFAULT_MAX_BATCH, bounds.max_batch or DEFAULT_MAX_BATCH))
    bh, bw = max(h0, min(BATCH_MAX_HW, h1)), max(w0, min(BATCH_MAX_HW, w1))
    opt = (n0, 3, max(h0, min(TYPICAL_HW, bh)), max(w0, min(TYPICAL_HW, bw)))
    profiles = [Profile((n0, 3, h0, w0), opt, (n1, 3, bh, bw))]
    if (h1, w1) != (bh, bw):
        large_opt = (n0, 3, max(h0, min(2 * BATCH_MAX_HW, h1)), max(w0, min(2 * BATCH_MAX_HW, w1)))
        profiles.append(Profile((n0, 3, h0, w0), large_opt, (n0, 3, h1, w1)))
    return profiles


def covering_profiles(profiles: Sequence[Profile], shapes: Sequence[Shape]) -> list[Profile]:
    """``profiles``, plus one more holding every shape in ``shapes`` that none of them holds.

    The defaults serve ordinary use; a benchmark sweep (batch 8 at 1024×2048, say) must run
    every shape it names. The extra profile spans those shapes, from the profiles' smallest batch
    up (so smaller batches at those sizes run too), and is tuned (opt) for the largest of them,
    the one that dominates the time.
    """
    missing = [s for s in shapes if not any(p.fits(s) for p in profiles)]
    if not missing:
        return list(profiles)
    lo = cast(Shape, tuple(min(s[d] for s in missing) for d in range(4)))
    lo = (min([lo[0], *(p.min[0] for p in profiles)]), *lo[1:])
    hi = cast(Shape, tuple(max(s[d] for s in missing) for d in range(4)))
    opt = max(missing, key=lambda s: s[0] * s[2] * s[3])
    return [*profiles, Profile(lo, opt, hi)]


def select_profile(profiles: Sequence[Profile], shape: Sequence[int]) -> int:
    """Index of the profile for an NCHW ``shape``: the fitting one whose ``opt`` is closest.

    Never guesses: a shape no profile holds gets one line naming every range it could be in.
    """
    fitting = [i for i, p in enumerate(profiles) if p.fits(shape)]
    if fitting:
        return min(fitting, key=lambda i: profiles[i].distance(shape))
    ranges = "; ".join(f"profile {i}: {p.range_text()}" for i, p in enumerate(profiles))
    raise FCNError(
        f"input shape {format_shape(shape)} (NxCxHxW) is outside every optimization profile of "
        f"this engine ({ranges}); resize or tile the input, or rebuild the engine with profiles "
        "covering it"
    )


def largest_batch(profiles: Sequence[Profile], shape: Sequence[int]) -> int:
    """The largest batch some profile holds at ``shape``'s C×H×W (0: none holds it at all).

    Profiles trade batch for size (the default ones hold batch > 1 only up to 1024²), so a batch
    no profile holds at its size runs in chunks of this many images.
    """
    _, c, h, w = shape
    return max((p.max[0] for p in profiles if p.fits((p.min[0], c, h, w))), default=0)


def batch_chunk(profiles: Sequence[Profile], shape: Sequence[int]) -> int:
    """How many images of an NCHW ``shape`` one engine call takes: all of them when a profile
    holds the batch, else the largest batch one holds at that C×H×W (`largest_batch`).

    FCNError, naming the shape as given (its real batch), when no profile holds that size at any
    batch: the caller must resize or tile the input.
    """
    n, c, h, w = shape
    chunk = min(n, largest_batch(profiles, shape)) or n
    select_profile(profiles, (chunk, c, h, w))  # raises for a size no profile holds
    return chunk


def choose_profile(profiles: Sequence[Profile], shape: Sequence[int], forced: int | None) -> int:
    """`select_profile`, or the ``forced`` profile when one is given and it holds ``shape``.

    The accuracy gate forces each profile in turn: profiles may overlap (the default two share
    their min shape), so letting the executor choose would check one profile twice and label
    the row with the other.
    """
    if forced is None:
        return select_profile(profiles, shape)
    if not 0 <= forced < len(profiles):
        raise FCNError(
            f"profile={forced} does not exist: this engine has profiles 0..{len(profiles) - 1}"
        )
    if not profiles[forced].fits(shape):
        raise FCNError(
            f"input shape {format_shape(shape)} (NxCxHxW) is outside profile {forced} "
            f"({profiles[forced].range_text()}); pass profile=None to let the engine choose"
        )
    return forced


def profile_switch_message(profile: int, count: int, error: Exception | None) -> str:
    """The one line for a refused ``set_optimization_profile_async``: what failed, what to do.

    The Python binding raises RuntimeError ("Error in set optimization profile async.") where
    the C++ call returns false (NVIDIA/TensorRT python/src/infer/pyCore.cpp,
    ``context_set_optimization_profile_async``, PY_ASSERT_RUNTIME_ERROR). The 10.13/11.x headers
    give one cause (``IExecutionContext::setOptimizationProfileAsync``: "false (e.g. input out of
    range)"), an index the engine does not have: it does not match its sidecar.
    """
    reason = f" ({str(error).strip()})" if error is not None and str(error).strip() else ""
    return (
        f"TensorRT could not set the execution context to optimization profile {profile} of "
        f"{count}{reason}; the engine does not match its sidecar: rebuild it with fcn-export "
        "--engine"
    )
