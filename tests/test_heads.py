"""SAOL / GAP-FC / mask heads: Eq. 2 recomputed by hand, normalisation, stability, resizing, gradients."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from saol_core.heads import GAPFCHead, MaskHead, SAOLHead, resize

torch.set_num_threads(1)
CH = [4, 6, 8]          # tap channels, shallow -> deep
SIZES = [8, 4, 2]       # tap resolutions (a stride-2 pyramid)
K = 5


def taps(batch=3, scale=1.0, sizes=SIZES, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(batch, c, s, s, generator=g) for c, s in zip(CH, sizes)]


def randomize_attention(head, std=0.5):
    """Replace the zero-initialised attention logit conv so that A is not uniform."""
    with torch.no_grad():
        head.attention[-1].weight.normal_(0, std, generator=torch.Generator().manual_seed(1))


def capture(module, store, key):
    return module.register_forward_hook(lambda m, i, o: store.__setitem__(key, o.detach().double()))


@pytest.mark.parametrize("separable", [False, True])
def test_eq2_matches_float64_loops(separable):
    torch.manual_seed(0)
    head = SAOLHead(CH, K, mid_channels=7, separable=separable)
    randomize_attention(head)
    got = {}
    capture(head.attention[-1], got, "s")     # attention logits (B,1,Ho,Wo)
    capture(head.classifier, got, "z")        # class logits (B,K,Ho,Wo)
    out = head(taps())
    s, z = got["s"].numpy(), got["z"].numpy()
    B, _, H, W = s.shape
    y_hat = np.zeros((B, K))
    for b in range(B):
        norm_a = sum(math.exp(s[b, 0, i, j]) for i in range(H) for j in range(W))
        for k in range(K):
            for i in range(H):
                for j in range(W):
                    a = math.exp(s[b, 0, i, j]) / norm_a
                    y = math.exp(z[b, k, i, j]) / sum(math.exp(z[b, c, i, j]) for c in range(K))
                    y_hat[b, k] += a * y
    np.testing.assert_allclose(out.saol_log_probs.double().exp().detach().numpy(), y_hat, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.saol_log_probs.detach().numpy(), np.log(y_hat), atol=1e-5)
    # the returned log A and log Y are the log-softmaxes of the same conv outputs
    np.testing.assert_allclose(out.log_attention.double().detach().numpy(),
                               s[:, 0] - np.log(np.exp(s[:, 0]).sum((1, 2), keepdims=True)), atol=1e-5)
    np.testing.assert_allclose(out.spatial_log_probs.double().detach().numpy(),
                               z - np.log(np.exp(z).sum(1, keepdims=True)), atol=1e-5)


def test_distributions_sum_to_one_and_init_attention_uniform():
    head = SAOLHead(CH, K, mid_channels=7)
    out = head(taps())
    a, y, p = out.log_attention.exp(), out.spatial_log_probs.exp(), out.saol_log_probs.exp()
    # zero-initialised attention logit conv: A is exactly uniform, so y_hat = spatial mean of Y
    torch.testing.assert_close(a, torch.full_like(a, 1 / a[0].numel()))
    torch.testing.assert_close(p, y.mean((2, 3)))
    randomize_attention(head)
    out = head(taps())
    a, y, p = out.log_attention.exp(), out.spatial_log_probs.exp(), out.saol_log_probs.exp()
    assert a.std() > 0.01
    torch.testing.assert_close(a.sum((1, 2)), torch.ones(3))
    torch.testing.assert_close(y.sum(1), torch.ones(3, 2, 2))
    torch.testing.assert_close(p.sum(1), torch.ones(3))


def test_one_hot_attention_picks_that_position():
    """Huge attention logits: A becomes one-hot, log A holds ~ -1e4 entries, y_hat = Y at the argmax."""
    head = SAOLHead(CH, K, mid_channels=7)
    randomize_attention(head, std=1e4)
    out = head(taps())
    a = out.log_attention.exp().flatten(1)
    assert torch.isfinite(out.log_attention).all() and out.log_attention.min() < -100
    pos = a.argmax(1)
    assert (a.max(1).values > 1 - 1e-6).all()
    y_at = out.spatial_log_probs.flatten(2)[torch.arange(3), :, pos]
    torch.testing.assert_close(out.saol_log_probs, y_at)


@pytest.mark.parametrize("train", [True, False])
def test_extreme_inputs_are_finite(train):
    head = SAOLHead(CH, K, mid_channels=7, separable=True).train(train)
    randomize_attention(head)
    for scale in (1e4, 1e-4):
        out = head(taps(scale=scale))
        for t in out:
            assert t.dtype == torch.float32 and torch.isfinite(t).all()
        torch.testing.assert_close(out.saol_log_probs.exp().sum(1), torch.ones(3))


def test_bf16_autocast_is_float32_finite_and_close():
    torch.manual_seed(0)
    head = SAOLHead(CH, K, mid_channels=7)
    randomize_attention(head)
    ref = head(taps())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = head(taps())
        huge = head(taps(scale=1e4))
    for out in (low, huge):
        for t in out:
            assert t.dtype == torch.float32 and torch.isfinite(t).all()
        torch.testing.assert_close(out.saol_log_probs.exp().sum(1), torch.ones(3))
    # bf16 convs (8 mantissa bits): probabilities agree to a few 1e-2
    torch.testing.assert_close(low.saol_log_probs.exp(), ref.saol_log_probs.exp(), atol=3e-2, rtol=0)


def adaptive_pool_ref(x, out):
    """Adaptive average pooling by hand: bin i covers [floor(i*n/out), ceil((i+1)*n/out))."""
    n = x.shape[-1]
    bins = [(math.floor(i * n / out), math.ceil((i + 1) * n / out)) for i in range(out)]
    return np.array([[[[x[b, c, h0:h1, w0:w1].mean() for (w0, w1) in bins] for (h0, h1) in bins]
                      for c in range(x.shape[1])] for b in range(x.shape[0])])


def bilinear_ref(x, out):
    """Half-pixel bilinear enlargement (align_corners=False) by hand."""
    n = x.shape[-1]
    m = np.zeros((out, n))
    for o in range(out):
        src = max((o + 0.5) * n / out - 0.5, 0.0)
        i0 = int(src)
        i1 = min(i0 + 1, n - 1)
        m[o, i0] += 1 - (src - i0)
        m[o, i1] += src - i0
    return np.einsum("hi,bcij,wj->bchw", m, x, m)


def test_resize_pool_bilinear_identity():
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    xn = x.numpy()
    assert resize(x, (6, 6)) is x
    np.testing.assert_allclose(resize(x, (3, 3)).numpy(), xn.reshape(2, 3, 3, 2, 3, 2).mean((3, 5)))
    np.testing.assert_allclose(resize(x, (4, 4)).numpy(), adaptive_pool_ref(xn, 4))   # overlapping bins
    np.testing.assert_allclose(resize(x, (14, 14)).numpy(), bilinear_ref(xn, 14))
    np.testing.assert_allclose(resize(x, (9, 9)).numpy(), bilinear_ref(xn, 9))


def test_14x14_output_resizes_each_tap():
    """ImageNet-like pyramid 28/14/7 with a 14x14 head: pooled, identity, bilinear-enlarged taps."""
    head = SAOLHead(CH, K, mid_channels=7, output_size=14)
    xs = taps(batch=2, sizes=[28, 14, 7])
    seen = {}
    for l, b in enumerate(head.branches):
        b.register_forward_pre_hook(lambda m, i, l=l: seen.__setitem__(l, i[0]))
    head.attention.register_forward_pre_hook(lambda m, i: seen.__setitem__("att", i[0]))
    out = head(xs)
    assert out.log_attention.shape == (2, 14, 14) and out.spatial_log_probs.shape == (2, K, 14, 14)
    torch.testing.assert_close(seen[0], F.avg_pool2d(xs[0], 2))
    assert seen[1] is xs[1]
    np.testing.assert_allclose(seen[2].numpy(), bilinear_ref(xs[2].double().numpy(), 14), atol=1e-6)
    assert seen["att"] is seen[2]    # the attention branch reads the same resized X^L


def test_gap_and_mask_heads_numeric():
    x = taps()[-1]
    gap = GAPFCHead(8, K)
    w, b = gap.fc.weight.double(), gap.fc.bias.double()
    ref = torch.stack([w @ x[i].double().sum((1, 2)) / 4 + b for i in range(3)])
    torch.testing.assert_close(gap(x).double(), ref)
    mask = MaskHead(8, 7, output_size=1, separable=True)
    torch.testing.assert_close(mask(x), mask.layers(x.mean((2, 3), keepdim=True))[:, 0])
    assert MaskHead(8, 7)(x).shape == (3, 2, 2)


def assert_all_grads(module, zero_ok=()):
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert (p.grad.abs().sum() == 0) == name.startswith(zero_ok), name


@pytest.mark.parametrize("separable", [False, True])
def test_gradients_reach_every_parameter(separable):
    torch.manual_seed(0)
    saol = SAOLHead(CH, K, mid_channels=7, separable=separable)
    mask = MaskHead(8, 7, output_size=2, separable=separable)
    gap = GAPFCHead(8, K)
    heads = nn.ModuleDict({"saol": saol, "mask": mask, "gap": gap})
    labels = torch.tensor([0, 3, 4])
    opt = torch.optim.SGD(heads.parameters(), lr=0.5)

    def step():
        opt.zero_grad()
        xs = taps()
        loss = (F.nll_loss(saol(xs).saol_log_probs, labels) + F.cross_entropy(gap(xs[-1]), labels)
                + F.binary_cross_entropy_with_logits(mask(xs[-1]), torch.rand(3, 2, 2)))
        loss.backward()

    step()
    # zero-init attention logit conv: only the 3x3 block feeding it waits one step (documented)
    assert_all_grads(heads, zero_ok=("saol.attention.0.",))
    assert saol.attention[1].weight.grad.abs().sum() > 0
    opt.step()
    step()
    assert_all_grads(heads)
