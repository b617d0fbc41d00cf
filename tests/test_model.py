"""SAOLModel / build_model: head wiring recomputed by hand, taps, config errors, compile, channels_last."""
import pytest
import torch
import torch.nn.functional as F

import saol_core.model as model_module
from saol_core.config import ConfigError, ModelConfig
from saol_core.model import ModelOutput, build_model

torch.set_num_threads(1)
K = 10


def make(seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(ModelConfig(**{"backbone": "resnet20", **kw}), K)


def images(batch=2, scale=1.0):
    return scale * torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("mask_head", [False, True])
@pytest.mark.parametrize("heads", ["gap", "saol", "saol+gap"])
def test_heads_option_none_pattern_and_wiring(heads, mask_head):
    m = make(heads=heads, mask_head=mask_head).eval()
    x = images()
    with torch.no_grad():
        out = m(x)
        stages = m.backbone(x)
    has_saol, has_gap = "saol" in heads, "gap" in heads
    assert (m.saol is not None, m.gap is not None, m.mask is not None) == (has_saol, has_gap, mask_head)
    assert (out.saol_log_probs is not None, out.log_attention is not None, out.spatial_log_probs is not None,
            out.attention is not None) == (has_saol,) * 4
    assert (out.gap_logits is not None, out.mask_logits is not None) == (has_gap, mask_head)
    torch.testing.assert_close(out.features, stages[-1])
    if has_gap:   # GAP-FC of the last tap, by hand
        torch.testing.assert_close(out.gap_logits, stages[-1].mean((2, 3)) @ m.gap.fc.weight.T + m.gap.fc.bias)
    if has_saol:
        with torch.no_grad():
            ref = m.saol(stages)
        torch.testing.assert_close(out.saol_log_probs, ref.saol_log_probs)
        torch.testing.assert_close(out.attention, out.log_attention.exp())
        torch.testing.assert_close(out.attention.sum((1, 2)), torch.ones(2))
        assert out.log_attention.shape == (2, 8, 8)     # default: the last tap's resolution
    if mask_head:
        with torch.no_grad():
            torch.testing.assert_close(out.mask_logits, m.mask.layers(stages[-1])[:, 0])


def test_spatial_only_is_log_y_of_the_full_forward_and_skips_the_other_heads():
    m = make(mask_head=True, taps=[1, 2]).eval()
    calls = []
    for name in ("attention", "classifier"):
        getattr(m.saol, name).register_forward_hook(lambda *a, name=name: calls.append(name))
    for head in (m.gap, m.mask):
        head.register_forward_hook(lambda *a, name=type(head).__name__: calls.append(name))
    x = images(3)
    with torch.no_grad():
        full = m(x)
        calls.clear()
        only = m(x, spatial_only=True)
    assert calls == ["classifier"]
    torch.testing.assert_close(only.spatial_log_probs, full.spatial_log_probs, rtol=0, atol=0)
    assert (only.saol_log_probs, only.gap_logits, only.log_attention, only.mask_logits) == (None,) * 4
    with pytest.raises(ValueError, match="needs a SAOL head"):
        make(heads="gap")(x, spatial_only=True)


def test_taps_select_branches():
    channels = [16, 32, 64]
    for taps, expect in ((None, [0, 1, 2]), ([2], [2]), ([1, 2], [1, 2]), ([2, 0], [0, 2])):
        m = make(heads="saol", taps=taps, head_channels=8).eval()
        assert m.taps == expect
        assert [b[0].in_channels for b in m.saol.branches] == [channels[t] for t in expect]
        assert m.saol.classifier.in_channels == 8 * len(expect)
        n_convs = sum(isinstance(x, torch.nn.Conv2d) for x in m.saol.modules())
        assert n_convs == len(expect) + 3      # branch convs + attention 3x3 and 1x1 + classifier
        seen = []
        for b in m.saol.branches:
            b.register_forward_pre_hook(lambda mod, i: seen.append(i[0]))
        with torch.no_grad():
            stages = m.backbone(images())
            m(images())
        for got, t in zip(seen, expect):       # each branch reads its stage, pooled to 8x8
            torch.testing.assert_close(got, F.adaptive_avg_pool2d(stages[t], 8))


@pytest.mark.parametrize("taps", [[3], [0, 0, 2], [0, 1], [], [-1]])
def test_bad_taps_raise_config_error(taps):
    with pytest.raises(ConfigError, match=r"\[0, 1, 2\]"):
        make(taps=taps)


def test_bad_names_and_values_raise_config_error():
    with pytest.raises(ConfigError, match="resnet110"):          # lists the registered names
        make(backbone="resnet_does_not_exist")
    with pytest.raises(ConfigError, match="saol\\+gap"):
        make(heads="both")
    with pytest.raises(ConfigError, match="num_classes"):
        build_model(ModelConfig(backbone="resnet20"), 1)
    with pytest.raises(ConfigError, match="output_size"):
        make(output_size=0)


def test_build_model_passes_backbone_options(monkeypatch):
    seen = {}
    real = model_module.build_backbone

    def spy(name, **kw):
        seen.update(kw, name=name)
        return real(name, **{**kw, "pretrained": None})

    monkeypatch.setattr(model_module, "build_backbone", spy)
    cfg = ModelConfig(backbone="pyramidnet20_48", output_stride=2, shakedrop=0.25, pretrained="w.pt")
    m = build_model(cfg, K)
    assert seen == {"name": "pyramidnet20_48", "output_stride": 2, "shakedrop": 0.25, "pretrained": "w.pt"}
    assert m.backbone.stage_strides[-1] == 2
    assert m.eval()(images()).log_attention.shape == (2, 16, 16)


def test_output_size_resizes_attention_and_mask():
    m = make(output_size=4, mask_head=True).eval()
    seen = {}
    m.saol.attention.register_forward_pre_hook(lambda mod, i: seen.__setitem__("att", i[0]))
    m.mask.layers.register_forward_pre_hook(lambda mod, i: seen.__setitem__("mask", i[0]))
    with torch.no_grad():
        out = m(images())
    assert out.log_attention.shape == out.mask_logits.shape == (2, 4, 4)
    assert out.spatial_log_probs.shape == (2, K, 4, 4)
    torch.testing.assert_close(seen["att"], F.avg_pool2d(out.features, 2))
    torch.testing.assert_close(seen["mask"], F.avg_pool2d(out.features, 2))


def test_imagenet_output_stride_16_gives_14x14():
    with torch.device("meta"):
        m = build_model(ModelConfig(backbone="resnet50", output_stride=16, separable=True), 1000)
    assert m.backbone.stage_strides[-1] == 16
    out = m.eval()(torch.zeros(1, 3, 224, 224, device="meta"))
    assert out.log_attention.shape == (1, 14, 14) and out.features.shape == (1, 2048, 14, 14)


def test_channels_last_and_bf16_autocast():
    m = make(mask_head=True).eval()
    x = images()
    with torch.no_grad():
        ref = m(x)
        cl = m.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = m(x)
            huge = m(images(scale=1e4))
    for a, b in zip((cl.saol_log_probs, cl.gap_logits, cl.mask_logits),
                    (ref.saol_log_probs, ref.gap_logits, ref.mask_logits)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for out in (low, huge):
        for t in (out.saol_log_probs, out.gap_logits, out.log_attention, out.spatial_log_probs, out.mask_logits):
            assert t.dtype == torch.float32 and torch.isfinite(t).all()
        torch.testing.assert_close(out.saol_log_probs.exp().sum(1), torch.ones(2))
    torch.testing.assert_close(low.saol_log_probs.exp(), ref.saol_log_probs.exp(), atol=5e-2, rtol=0)


def loss_of(out: ModelOutput, labels):
    return (F.nll_loss(out.saol_log_probs, labels) + F.cross_entropy(out.gap_logits, labels)
            + F.binary_cross_entropy_with_logits(out.mask_logits, torch.full_like(out.mask_logits, 0.3)))


def test_gradients_reach_every_model_parameter():
    m = make(mask_head=True, separable=True)
    labels = torch.arange(2)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for step in range(2):      # step 0: the zero-initialised attention logit conv blocks attention.0
        opt.zero_grad()
        loss_of(m(images()), labels).backward()
        for name, p in m.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            zero = p.grad.abs().sum() == 0
            assert zero == (step == 0 and name.startswith("saol.attention.0.")), name
        opt.step()


def test_torch_compile_fullgraph_matches_eager():
    m = make(mask_head=True)
    x, labels = images(), torch.arange(2)
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    loss_of(m(x), labels).backward()
    ref = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    m.load_state_dict(state)       # same BN running stats before the compiled step
    out = compiled(x)
    assert isinstance(out, ModelOutput)
    loss_of(out, labels).backward()
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], atol=1e-5, rtol=1e-4, msg=n)


def test_frozen_backbone_bn_keeps_pretrained_statistics_and_trains_the_rest():
    """backbone_bn=frozen: a training step leaves every backbone BN's running statistics as they were
    (and normalizes by them: the same features as in eval mode), while the heads' BN statistics move and
    the backbone BN's affine weights still learn; the SS2 teacher does not flip the frozen layers."""
    from saol_core.cutmix import cutmix
    from saol_core.losses import ss2_teacher
    m = make(backbone_bn="frozen", mask_head=True).train()
    bns = lambda mod: [b for b in mod.modules() if isinstance(b, torch.nn.BatchNorm2d)]  # noqa: E731
    assert all(not b.training for b in bns(m.backbone)) and all(b.training for b in bns(m.saol))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = images(batch=8)
    with torch.no_grad():
        train_features = m.backbone(x)[-1]
        m.eval()
        assert torch.equal(train_features, m.backbone(x)[-1])
        m.train()
    ss2_teacher(m, x, cutmix(x, 1.0, 1.0, torch.Generator().manual_seed(0)), "train")
    assert all(not b.training for b in bns(m.backbone)) and all(b.training for b in bns(m.saol))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    out = m(x)
    (out.saol_log_probs.sum() + out.gap_logits.sum()).backward()
    opt.step()
    after = m.state_dict()
    stats = [k for k in after if k.endswith(("running_mean", "running_var"))]
    assert all(torch.equal(after[k], before[k]) for k in stats if k.startswith("backbone."))
    assert any(not torch.equal(after[k], before[k]) for k in stats if k.startswith("saol."))
    affine = [k for k in after if k.startswith("backbone.") and k.endswith(".weight") and "bn" in k.lower()]
    assert affine and any(not torch.equal(after[k], before[k]) for k in affine)
    with pytest.raises(ConfigError, match="backbone_bn"):
        make(backbone_bn="eval")
