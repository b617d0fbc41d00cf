"""Losses recomputed by hand (Python loops, float64) on small crafted tensors."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from saol_core.config import LossConfig
from saol_core.cutmix import CutMixBatch
from saol_core.losses import compute_losses, mixed_ce, ss2_teacher

B, K, H, W, HO, WO = 4, 5, 8, 8, 4, 4
PERM = torch.tensor([2, 0, 3, 1])
LABELS = torch.tensor([1, 4, 0, 2])


def make_mix(box=(2, 6, 0, 4), perm=PERM, hw=(H, W)):
    lam = 1 - (box[1] - box[0]) * (box[3] - box[2]) / (hw[0] * hw[1])
    return CutMixBatch(images=torch.zeros(len(perm), 3, *hw), perm=perm, box=box, lam=lam, applied=True)


NO_MIX = CutMixBatch(images=torch.zeros(B, 3, H, W), perm=None, box=None, lam=1.0, applied=False)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def log_softmax_ref(v):
    m = max(v)
    lse = m + math.log(sum(math.exp(x - m) for x in v))
    return [x - lse for x in v]


def mixed_ce_ref(logp_rows, labels, lam, perm):
    """Mean over b of -(lam log p_b[y_b] + (1 - lam) log p_b[y_perm(b)]) from given log-prob rows."""
    total = 0.0
    for b, row in enumerate(logp_rows):
        total -= lam * row[labels[b]] + (1 - lam) * row[labels[perm[b]]]
    return total / len(logp_rows)


def kl_ref(logp, logq):
    return sum(math.exp(a) * (a - c) for a, c in zip(logp, logq))


def outputs(seed=0, saol=True, gap=True, spatial=True, mask=True):
    return SimpleNamespace(
        saol_log_probs=F.log_softmax(rand(B, K, seed=seed), 1).float() if saol else None,
        gap_logits=rand(B, K, seed=seed + 1).float() if gap else None,
        spatial_log_probs=F.log_softmax(rand(B, K, HO, WO, seed=seed + 2), 1).float() if spatial else None,
        mask_logits=rand(B, HO, WO, seed=seed + 3).float() if mask else None,
        log_attention=None, features=None)


def teacher(seed=10):
    return F.log_softmax(rand(B, K, HO, WO, seed=seed), 1).float()


def test_mixed_ce_weights_original_labels_by_lam():
    logits = rand(B, K).float()
    rows = [log_softmax_ref(r) for r in logits.double().tolist()]
    mix = make_mix()
    assert mix.lam == pytest.approx(0.75)
    got = mixed_ce(logits, LABELS, mix)
    assert got.item() == pytest.approx(mixed_ce_ref(rows, LABELS.tolist(), 0.75, PERM.tolist()), abs=1e-5)
    plain = mixed_ce(logits, LABELS, NO_MIX)
    assert plain.item() == pytest.approx(-sum(r[y] for r, y in zip(rows, LABELS.tolist())) / B, abs=1e-5)


def test_sl_takes_log_probs_without_second_softmax():
    # deliberately unnormalised "log-probs": a hidden softmax would change the value
    log_p = torch.tensor([[-0.5, -1.0, -2.0, -3.0, -0.1]] * B)
    mix = make_mix()
    got = mixed_ce(log_p, LABELS, mix, log_probs=True)
    picks = log_p.tolist()
    want = -sum(0.75 * picks[b][LABELS[b]] + 0.25 * picks[b][LABELS[PERM[b]]] for b in range(B)) / B
    assert got.item() == pytest.approx(want, abs=1e-6)
    out = outputs()
    losses = compute_losses(out, LABELS, NO_MIX, LossConfig(w_sd=0.0))
    want = -sum(out.saol_log_probs[b, LABELS[b]].item() for b in range(B)) / B
    assert set(losses) == {"total", "sl"} and losses["sl"].item() == pytest.approx(want, abs=1e-6)


def test_ss1_is_bce_against_covered_fraction():
    out = outputs()
    mix = make_mix(box=(1, 5, 2, 4))  # 2x2-pixel cells: rows cover 1/2, 1, 1/2, 0; cols 0, 1, 0, 0
    rows, cols = [0.5, 1.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0]
    total = 0.0
    for b in range(B):
        for i in range(HO):
            for j in range(WO):
                z, t = out.mask_logits[b, i, j].item(), rows[i] * cols[j]
                s = 1 / (1 + math.exp(-z))
                total -= t * math.log(s) + (1 - t) * math.log(1 - s)
    losses = compute_losses(out, LABELS, mix, LossConfig(w_sl=0.0, w_sd=0.0, w_ss1=1.0))
    assert set(losses) == {"total", "ss1"}
    assert losses["ss1"].item() == pytest.approx(total / (B * HO * WO), abs=1e-6)


def ss2_ref(student, teach, weights, direction="teacher_student"):
    num = den = 0.0
    for b in range(B):
        for i in range(HO):
            for j in range(WO):
                w = weights[i][j]
                if w:
                    s, t = student[b, :, i, j].tolist(), teach[b, :, i, j].tolist()
                    num += w * (kl_ref(t, s) if direction == "teacher_student" else kl_ref(s, t))
                    den += w
    return num / den if den else 0.0


@pytest.mark.parametrize("direction", ["teacher_student", "student_teacher"])
def test_ss2_coverage_weighted_kl(direction):
    out, tea = outputs(), teacher()
    cfg = LossConfig(w_sl=0.0, w_sd=0.0, w_ss2=1.0, ss2_kl=direction)
    # rows 3..6 of 8 -> cells 1 (half), 2 (full); cols 1..7 -> cells 0 (half), 1, 2 (full), 3 (half)
    weights = [[r * c for c in [0.5, 1, 1, 0.5]] for r in [0, 0.5, 1, 0]]
    got = compute_losses(out, LABELS, make_mix(box=(3, 6, 1, 7)), cfg, tea)["ss2"]
    assert got.item() == pytest.approx(ss2_ref(out.spatial_log_probs, tea, weights, direction), abs=1e-6)


def test_ss2_cell_aligned_box_is_plain_average_over_inside_cells():
    out, tea = outputs(), teacher()
    cfg = LossConfig(w_sl=0.0, w_sd=0.0, w_ss2=1.0)
    got = compute_losses(out, LABELS, make_mix(box=(2, 6, 4, 8)), cfg, tea)["ss2"]  # cells 1-2 x 2-3
    kls = [kl_ref(tea[b, :, i, j].tolist(), out.spatial_log_probs[b, :, i, j].tolist())
           for b in range(B) for i in (1, 2) for j in (2, 3)]
    assert got.item() == pytest.approx(sum(kls) / len(kls), abs=1e-6)


def test_ss2_empty_box_is_zero():
    out, tea = outputs(), teacher()
    cfg = LossConfig(w_sl=0.0, w_sd=0.0, w_ss2=1.0)
    losses = compute_losses(out, LABELS, make_mix(box=(3, 3, 0, 8)), cfg, tea)
    assert losses["ss2"].item() == 0.0 and losses["total"].item() == 0.0


def test_sd_is_kl_plus_beta_ce():
    out, mix = outputs(), make_mix()
    cfg = LossConfig(w_sl=0.0, w_sd=1.0, sd_beta=0.3)
    got = compute_losses(out, LABELS, mix, cfg)["sd"]
    gap_rows = [log_softmax_ref(r) for r in out.gap_logits.double().tolist()]
    kl = sum(kl_ref(out.saol_log_probs[b].tolist(), gap_rows[b]) for b in range(B)) / B
    ce = mixed_ce_ref(gap_rows, LABELS.tolist(), mix.lam, PERM.tolist())
    assert got.item() == pytest.approx(kl + 0.3 * ce, abs=1e-5)


def test_total_is_weighted_sum_and_inactive_terms_are_absent():
    out, tea, mix = outputs(), teacher(), make_mix(box=(1, 5, 2, 7))
    cfg = LossConfig(w_sl=0.7, w_ss1=0.2, w_ss2=1.5, w_sd=0.4, sd_beta=0.5)
    losses = compute_losses(out, LABELS, mix, cfg, tea)
    assert set(losses) == {"total", "sl", "ss1", "ss2", "sd"}
    want = 0.7 * losses["sl"] + 0.2 * losses["ss1"] + 1.5 * losses["ss2"] + 0.4 * losses["sd"]
    assert losses["total"].item() == pytest.approx(want.item(), abs=1e-6)
    assert all(v.dim() == 0 and v.dtype == torch.float32 for v in losses.values())
    # no CutMix: no SS terms at all (the teacher is not even needed)
    assert set(compute_losses(out, LABELS, NO_MIX, cfg, None)) == {"total", "sl", "sd"}
    # zero weight: not computed
    only_ss1 = LossConfig(w_sd=0.0, w_ss1=1.0)
    assert set(compute_losses(out, LABELS, mix, only_ss1, tea)) == {"total", "sl", "ss1"}
    # Table 6 ablation: GAP head on plain mixed CE, weighted by w_sd
    ce = compute_losses(out, LABELS, mix, LossConfig(w_sl=0.0, w_sd=2.0, gap_loss="ce"))
    assert set(ce) == {"total", "ce_gap"}
    assert ce["ce_gap"].item() == pytest.approx(mixed_ce(out.gap_logits, LABELS, mix).item())
    assert ce["total"].item() == pytest.approx(2 * ce["ce_gap"].item())
    # GAP-only baseline: mixed CE on its logits (weight w_sl); SS1 still applies (Table 5)
    base = outputs(saol=False, spatial=False)
    g = compute_losses(base, LABELS, mix, LossConfig(w_sl=1.0, w_sd=0.0, w_ss1=0.5))
    assert set(g) == {"total", "ce_gap", "ss1"}
    assert g["total"].item() == pytest.approx(g["ce_gap"].item() + 0.5 * g["ss1"].item(), abs=1e-6)


def test_missing_inputs_are_reported():
    mix = make_mix()
    with pytest.raises(ValueError, match="mask head"):
        compute_losses(outputs(mask=False), LABELS, mix, LossConfig(w_ss1=1.0))
    with pytest.raises(ValueError, match="ss2_teacher"):
        compute_losses(outputs(), LABELS, mix, LossConfig(w_ss2=1.0), None)


def test_no_gradient_reaches_the_teachers():
    out, mix = outputs(), make_mix(box=(1, 5, 2, 7))
    leaves = {k: getattr(out, k).clone().requires_grad_(True)
              for k in ("saol_log_probs", "gap_logits", "spatial_log_probs")}
    tea = teacher().requires_grad_(True)
    for k, v in leaves.items():
        setattr(out, k, v)
    # SAOL only feeds L_SD here (w_sl = 0): as the KL teacher it must get no gradient
    cfg = LossConfig(w_sl=0.0, w_sd=1.0, w_ss2=1.0)
    compute_losses(out, LABELS, mix, cfg, tea)["total"].backward()
    assert tea.grad is None and leaves["saol_log_probs"].grad is None
    assert leaves["gap_logits"].grad.abs().sum() > 0
    grad = leaves["spatial_log_probs"].grad  # only cells overlapping the box (rows 0-2, cols 1-3)
    assert grad[:, :, 1:3, 1:4].abs().sum() > 0 and grad[:, :, 3].abs().sum() == 0
    assert grad[:, :, :, 0].abs().sum() == 0


def test_bf16_autocast_matches_float32():
    torch.manual_seed(0)
    lin = nn.Linear(6, K)
    feats = torch.randn(B, HO, WO, 6)
    mix, tea = make_mix(box=(1, 5, 2, 7)), teacher()
    cfg = LossConfig(w_ss1=1.0, w_ss2=1.0)

    def forward():
        z = lin(feats)  # (B,HO,WO,K); bf16 under autocast
        spatial = F.log_softmax(z.permute(0, 3, 1, 2), 1)
        return SimpleNamespace(saol_log_probs=F.log_softmax(z.mean((1, 2)), 1), gap_logits=z.amax((1, 2)),
                               spatial_log_probs=spatial, mask_logits=z[..., 0])

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = forward()
        assert out.gap_logits.dtype == torch.bfloat16
        low = compute_losses(out, LABELS, mix, cfg, tea.bfloat16())
    ref = compute_losses(SimpleNamespace(**{k: v.float() for k, v in vars(out).items()}),
                         LABELS, mix, cfg, tea.bfloat16().float())
    for k, v in low.items():
        assert v.dtype == torch.float32
        assert v.item() == pytest.approx(ref[k].item(), rel=1e-5)
    low["total"].backward()
    assert lin.weight.grad is not None


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Conv2d(4, K, 1)

    def trunk(self, x, bn):
        return self.head(self.drop(F.relu(bn(self.conv(x)))))

    def forward(self, x, spatial_only=False):
        self.spatial_only = spatial_only
        return SimpleNamespace(spatial_log_probs=F.log_softmax(self.trunk(x, self.bn), 1))


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_ss2_teacher_uses_clean_batch_and_keeps_bn_stats(bn_mode):
    torch.manual_seed(0)
    net = TinyNet().train()
    for _ in range(3):  # non-trivial running statistics
        net(torch.randn(B, 3, H, W) * 2 + 1)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x, mix = torch.randn(B, 3, H, W), make_mix()
    got = ss2_teacher(net, x, mix, bn_mode)
    assert not got.requires_grad and net.spatial_only  # asks the model for log Y alone
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k  # running_mean/var and num_batches_tracked untouched
    assert net.training and net.drop.training and net.bn.training and net.bn.track_running_stats
    # reference: dropout off; BN by hand with batch or running statistics
    bn = net.bn
    if bn_mode == "train":
        norm = lambda h: F.batch_norm(h, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)  # noqa: E731
    else:
        norm = lambda h: (h - bn.running_mean[:, None, None]) / torch.sqrt(  # noqa: E731
            bn.running_var[:, None, None] + bn.eps) * bn.weight[:, None, None] + bn.bias[:, None, None]
    with torch.no_grad():
        want = F.log_softmax(net.head(F.relu(norm(net.conv(x)))), 1)[PERM]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(ss2_teacher(net, x, mix, bn_mode, w_ss2=0.5), got)  # dropout is off
    assert ss2_teacher(net, x, NO_MIX, bn_mode) is None
    assert ss2_teacher(net, x, mix, bn_mode, w_ss2=0.0) is None
    with pytest.raises(ValueError, match="bn_mode"):
        ss2_teacher(net, x, mix, "batch")
