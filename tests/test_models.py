"""The nets against the reference definition: shapes, names, init, offsets, convolutionalization."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from reference_fcn import REFERENCE_ARGS, ReferenceFCN, TorchvisionVGG16

from fcn_deploy.checkpoint import read_state_dict
from fcn_deploy.models import (
    FCN,
    FCN8s,
    FCN8sAtOnce,
    FCN16s,
    FCN32s,
    bilinear_kernel,
    convolutionalize,
    create_model,
)
from fcn_deploy.models import fcn as fcn_module

VARIANTS = ["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"]


def _randomize_all(model: torch.nn.Module, seed: int) -> None:
    """Every weight random (upsampling too), so equality with the reference tests every layer."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_independent_reference(variant: str) -> None:
    ref = ReferenceFCN(**REFERENCE_ARGS[variant], n_class=5, width=0.0625).eval()
    _randomize_all(ref, seed=1)
    ours = create_model(variant, num_classes=5, width=0.0625).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    for n, h, w in [(1, 1, 1), (2, 37, 53), (1, 3, 117), (1, 120, 96)]:
        x = torch.randn(n, 3, h, w) * 40
        with torch.no_grad():
            expected, got = ref(x), ours(x)
        assert got.shape == (n, 5, h, w)
        rel = (got - expected).abs().max() / expected.abs().max()
        assert rel <= 1e-5, (variant, (n, h, w), rel.item())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 3, 517), (1, 333, 500), (3, 17, 25)])
def test_output_size_equals_input_size(
    make_model, variant: str, shape: tuple[int, int, int]
) -> None:
    model = make_model(variant, width=0.03125, num_classes=21)
    n, h, w = shape
    with torch.no_grad():
        assert model(torch.randn(n, 3, h, w)).shape == (n, 21, h, w)


def test_reference_shape_check_at_500() -> None:
    """The reference net's sizes at 500×500, each from the layer arithmetic.

    conv1_1 (3×3, pad 100): 500 + 200 − 2 = 698; ceil-mode 2×2 pools: 349, 175, pool3 88, pool4 44,
    pool5 22; fc6 (7×7, no pad): 22 − 6 = 16; transposed convs give (n − 1)·s + k: upscore2 (k4 s2)
    34, upscore_pool4 (k4 s2) 70, upscore8 (k16 s8) 568, which the crop at 31 cuts back to 500.
    """
    model = FCN8s(width=0.03125).eval()
    seen = {}
    hooks = [
        getattr(model, name).register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, o.shape[-1])
        )
        for name in (
            "conv1_1",
            "fc6",
            "upscore2",
            "upscore_pool4",
            "upscore8",
            "score_pool3",
            "score_pool4",
        )
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, 500, 500))
    for hook in hooks:
        hook.remove()
    assert seen == {
        "conv1_1": 698,
        "score_pool3": 88,
        "score_pool4": 44,
        "fc6": 16,
        "upscore2": 34,
        "upscore_pool4": 70,
        "upscore8": 568,
    }


def _coord_offset(layers: list[tuple[str, int, int, int]]) -> float:
    """Caffe's coord_map composed over ``layers``: b in y_map = a·y_input + b."""
    b = 0.0
    for kind, k, s, pad in layers:
        if kind == "conv":  # conv and pool: a /= s  # noqa: SIM108 (one comment per branch)
            b = b / s + (pad - (k - 1) / 2) / s
        else:  # deconv: a *= s
            b = b * s + (k - 1) / 2 - pad
    return b


def test_crop_offsets_follow_from_caffe_coordinate_mapping() -> None:
    trunk = [("conv", 3, 1, 100)] + [("conv", 2, 2, 0)] * 5 + [("conv", 7, 1, 0)]
    assert _coord_offset([*trunk, ("deconv", 64, 32, 0)]) == fcn_module.CROP_32S
    up2 = [*trunk, ("deconv", 4, 2, 0)]
    assert _coord_offset([*up2, ("deconv", 32, 16, 0)]) == fcn_module.CROP_16S
    up4 = [*up2, ("deconv", 4, 2, 0)]
    assert _coord_offset([*up4, ("deconv", 16, 8, 0)]) == fcn_module.CROP_8S
    pool4 = [("conv", 3, 1, 100)] + [("conv", 2, 2, 0)] * 4
    pool3 = [("conv", 3, 1, 100)] + [("conv", 2, 2, 0)] * 3
    # same scale (1/16, 1/8): a skip is cropped at the difference of the two shifts
    assert _coord_offset(pool4) - _coord_offset(up2) == fcn_module.CROP_POOL4
    assert _coord_offset(pool3) - _coord_offset(up4) == fcn_module.CROP_POOL3


def test_bilinear_kernel_values() -> None:
    k = bilinear_kernel(3, 4)
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.allclose(k[1, 1], torch.outer(taps, taps))
    assert k[0, 1].abs().sum() == 0 and k[2, 0].abs().sum() == 0  # channel diagonal only
    k3 = bilinear_kernel(1, 3)[0, 0]  # odd size: centre tap 1
    assert torch.allclose(k3[1], torch.tensor([0.5, 1.0, 0.5]))
    # a ×2 bilinear upsampling reproduces a linear ramp exactly away from the borders
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8).contiguous()
    up = F.conv_transpose2d(ramp, bilinear_kernel(1, 4), stride=2)[0, 0, 4, 2:-2]
    assert torch.allclose(up.diff(), torch.full_like(up.diff(), 0.5))


@pytest.mark.parametrize("cls", [FCN32s, FCN16s, FCN8s, FCN8sAtOnce])
def test_init_score_zero_upsampling_bilinear_frozen(cls: type[FCN]) -> None:
    model = cls(width=0.0625)
    for layer in model.score_layers():
        assert layer.weight.abs().sum() == 0 and layer.bias.abs().sum() == 0
    ups = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert ups and all(m.bias is None and not m.weight.requires_grad for m in ups)
    for m in ups:
        assert torch.equal(m.weight, bilinear_kernel(m.in_channels, m.kernel_size[0]))
    learnable = cls(width=0.0625, learn_upsampling=True)
    assert all(
        m.weight.requires_grad
        for m in learnable.modules()
        if isinstance(m, torch.nn.ConvTranspose2d)
    )


def test_state_dict_keys_are_caffe_layer_names() -> None:
    convs = [
        f"conv{b}_{i}"
        for b, n in zip(range(1, 6), (2, 2, 3, 3, 3), strict=True)
        for i in range(1, n + 1)
    ]
    common = {f"{c}.{p}" for c in [*convs, "fc6", "fc7", "score_fr"] for p in ("weight", "bias")}
    skips = lambda *names: {f"{n}.{p}" for n in names for p in ("weight", "bias")}  # noqa: E731
    assert set(FCN32s().state_dict()) == common | {"upscore.weight"}
    assert set(FCN16s(width=0.0625).state_dict()) == common | skips("score_pool4") | {
        "upscore2.weight",
        "upscore16.weight",
    }
    eight = (
        common
        | skips("score_pool4", "score_pool3")
        | {"upscore2.weight", "upscore_pool4.weight", "upscore8.weight"}
    )
    assert (
        set(FCN8s(width=0.0625).state_dict())
        == eight
        == set(FCN8sAtOnce(width=0.0625).state_dict())
    )


def test_full_size_parameter_count() -> None:
    """The paper's FCN-VGG16 has 134M parameters."""
    model = FCN8s()
    assert sum(p.numel() for p in model.parameters()) == 134_489_759
    assert model.fc6.weight.shape == (4096, 512, 7, 7) and model.fc7.weight.shape == (
        4096,
        4096,
        1,
        1,
    )


def test_width_scales_channels() -> None:
    model = FCN8s(width=0.125)
    assert (
        model.conv1_1.out_channels == 8
        and model.conv5_3.out_channels == 64
        and model.fc7.out_channels == 512
    )
    assert model.score_fr.out_channels == 21


def _random_torchvision_vgg16(width: float, seed: int = 0) -> TorchvisionVGG16:
    torch.manual_seed(seed)
    return TorchvisionVGG16(width=width).eval()


@pytest.mark.parametrize("width", [0.0625, 1.0])
def test_convolutionalize_gives_classifier_logits(width: float) -> None:
    vgg = _random_torchvision_vgg16(width)
    conv = convolutionalize(vgg.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits, scores = vgg(x), conv(x)
    assert scores.shape == (2, 1000, 1, 1)
    assert torch.allclose(
        scores[:, :, 0, 0], logits, rtol=1e-4, atol=1e-4 * logits.abs().max().item()
    )
    with torch.no_grad():
        assert conv(torch.randn(1, 3, 320, 416)).shape == (1, 1000, 4, 7)  # a spatial map of scores


def test_convolutionalize_from_file(tmp_path) -> None:
    vgg = _random_torchvision_vgg16(0.0625)
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(vgg.state_dict(), path)
    conv = convolutionalize(read_state_dict(path))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(conv(x)[:, :, 0, 0], vgg(x), atol=1e-5)
    assert conv.fc6.weight.shape[-2:] == (7, 7) and conv.fc8.weight.shape[-2:] == (1, 1)
    assert conv.info.preprocessing.color == "rgb"


def test_from_vgg16_copies_trunk_and_fc() -> None:
    vgg = _random_torchvision_vgg16(0.0625)
    model = FCN32s.from_vgg16(vgg.state_dict())
    assert torch.equal(model.conv3_2.weight, vgg.features[12].weight)
    assert torch.equal(model.fc6.weight.flatten(1), vgg.classifier[0].weight)
    assert torch.equal(model.fc7.weight.flatten(1), vgg.classifier[3].weight)
    assert model.score_fr.weight.abs().sum() == 0
    assert model.info.preprocessing.color == "rgb"  # torchvision weights keep their preprocessing


@pytest.mark.parametrize("source_cls,target_cls", [(FCN32s, FCN16s), (FCN16s, FCN8s)])
def test_staged_init_starts_where_the_last_stage_ended(source_cls, target_cls) -> None:
    """The new score layer is zero, so the new net outputs the old net's class scores.

    What changes is only the upsampling path: one ×32 (or ×16) bilinear step becomes ×2 then
    ×16 (or ×8). Two bilinear steps are not bit-equal to one (they round the corners), so the
    new net's output must equal the old net's *coarse scores* taken through the new bilinear
    path exactly, and the labels must agree with the old net's.
    """
    torch.manual_seed(0)
    source = source_cls(width=0.0625, num_classes=6).eval()
    with torch.no_grad():
        for p in source.score_layers():  # a "trained" previous stage
            p.weight.normal_(0, 0.1)
            p.bias.normal_(0, 0.1)
    target = target_cls.from_fcn(source).eval()
    new = [m for m in target.score_layers() if m not in source.score_layers()]
    new_layer = target.score_pool4 if target_cls is FCN16s else target.score_pool3
    assert new_layer.weight.abs().sum() == 0 and new_layer.bias.abs().sum() == 0 and new
    x = torch.randn(1, 3, 150, 190) * 50
    with torch.no_grad():
        old, out = source(x), target(x)
        _pool3, pool4, pool5 = target.trunk(x)
        coarse = target.score_fr(F.relu(target.fc7(F.relu(target.fc6(pool5)))))
        if target_cls is FCN16s:
            expected = target.upscore16(target.upscore2(coarse))[:, :, 27:177, 27:217]
        else:
            up = (
                target.upscore2(coarse)
                + source.score_pool4(pool4)[
                    :, :, 5 : 5 + 2 * coarse.shape[2] + 2, 5 : 5 + 2 * coarse.shape[3] + 2
                ]
            )
            expected = target.upscore8(target.upscore_pool4(up))[:, :, 31:181, 31:221]
    assert torch.allclose(out, expected, atol=1e-5)
    # labels differ only along class boundaries, where the two paths round corners differently
    # (measured 100% for 32s→16s and 97.8% for 16s→8s on this deliberately busy random map)
    assert (out.argmax(1) == old.argmax(1)).float().mean() >= 0.95
    assert target.info.class_names == source.info.class_names
    assert target.info.preprocessing == source.info.preprocessing


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="output_stride"):
        FCN(output_stride=4)
    with pytest.raises(ValueError, match="at_once"):
        FCN(output_stride=16, at_once=True)
    with pytest.raises(ValueError, match="unknown variant"):
        create_model("fcn4s")


def test_factories_take_weights_not_paths(tmp_path) -> None:
    """Model files never read paths: a path gets one line pointing at the loader."""
    path = tmp_path / "vgg16.pth"
    torch.save(_random_torchvision_vgg16(0.0625).state_dict(), path)
    for call in (convolutionalize, FCN32s.from_vgg16, FCN16s.from_fcn):
        with pytest.raises(TypeError, match=r"state dict or nn.Module.*read_state_dict"):
            call(str(path))
    # a module works as well as its state dict
    vgg = _random_torchvision_vgg16(0.0625)
    assert torch.equal(FCN32s.from_vgg16(vgg).fc6.weight, convolutionalize(vgg).fc6.weight)


def test_models_import_nothing_above_them() -> None:
    """The import graph points one way: ``fcn_deploy.models`` loads without the checkpoint layer."""
    code = (  # _gate: meta reads class files through it
        "import sys, fcn_deploy.models\n"
        "above = sorted(m for m in sys.modules if m.startswith('fcn_deploy.') and m.split('.')[1]"
        " not in ('models', 'meta', 'errors', '_gate'))\n"
        "print(','.join(above))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "fcn_deploy.checkpoint" not in result.stdout
    assert result.stdout.strip() == ""
