"""SAOL training losses (paper Sec. 3.2-3.3, Eq. 7): L = w_sl L_SL + w_ss1 L_SS1 + w_ss2 L_SS2 + w_sd L_SD.

Conventions (``saol_core.cutmix``): the box region of image b holds the pixels of image ``perm[b]``;
``lam`` is the fraction of the ORIGINAL image, so it weights ``labels`` and ``1 - lam`` weights
``labels[perm]``. Every loss is computed in float32 (safe under bf16 autocast), stays on the device
(no ``.item()``, no data-dependent Python branches) and is a 0-dim tensor.

- L_SL  = lam CE(y_SAOL, y) + (1 - lam) CE(y_SAOL, y[perm]); SAOL outputs log y_hat, so this is an
  NLL on it (no second softmax).
- L_SS1 = BCE-with-logits(mask_logits, box_mask), mean over batch and output cells; the target is the
  fraction of each output cell covered by the pasted box (soft target, ``cutmix.box_mask``).
- L_SS2 = sum_b sum_ij w_ij KL(Y_A,bij || Y'_bij) / (B sum_ij w_ij), w = box_mask: a coverage-weighted
  mean over the cells inside the box. When the box is aligned to the cell grid, w is 1 inside and 0
  outside and this is the plain average over the inside cells; partially covered cells count in
  proportion to their coverage; an empty box gives 0. Y_A (teacher) = spatial log-probs of the clean
  batch indexed by perm, detached; Y' = those of the mixed batch (the only gradient path).
  ``ss2_kl="student_teacher"`` uses KL(Y' || Y_A) instead, the literal order of the paper's Eq. 5
  (docs/method.md §7 discusses both readings).
- L_SD  = KL(y_SAOL || y_GAP) + sd_beta * mixed CE(y_GAP), y_SAOL detached (teacher). With
  ``gap_loss="ce"`` (Table 6 ablation) the GAP head gets the plain mixed CE instead (key ``ce_gap``).
- A GAP-only model (no SAOL output) is trained with mixed CE on its logits (key ``ce_gap``, weight
  ``w_sl``: it is that model's supervised classification term; ``w_sd`` and ``gap_loss`` do not apply).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LossConfig
from .cutmix import CutMixBatch, box_cells, box_mask


def mixed_ce(scores: Tensor, labels: Tensor, mix: CutMixBatch, *, log_probs: bool = False) -> Tensor:
    """lam CE(scores, labels) + (1 - lam) CE(scores, labels[perm]); plain CE when not mixed.

    scores: (B,K) logits, or log-probabilities when ``log_probs`` (SAOL's log y_hat: NLL, no softmax).
    labels: (B,) int64.
    """
    logp = scores.float() if log_probs else F.log_softmax(scores.float(), dim=1)
    loss = F.nll_loss(logp, labels)
    if mix.applied:  # lam = 1 (an empty box) adds 0 x the second term: the same number, one graph for all boxes
        loss = mix.lam_t[0] * loss + mix.lam_t[1] * F.nll_loss(logp, labels.index_select(0, mix.perm))
    return loss


def ss1_loss(mask_logits: Tensor, mix: CutMixBatch) -> Tensor:
    """BCE between the mask head's (B,Ho,Wo) logits and the soft box mask (mix must be applied)."""
    target = box_mask(mix.box_t, mix.images.shape[-2:], mask_logits.shape[-2:], mask_logits.device)
    return F.binary_cross_entropy_with_logits(mask_logits.float(), target.expand(mask_logits.shape))


def ss2_loss(spatial_log_probs: Tensor, teacher_log_probs: Tensor, mix: CutMixBatch,
             direction: str = "teacher_student") -> Tensor:
    """Coverage-weighted mean over the box's output cells of KL(teacher || student) (``direction``
    "teacher_student") or KL(student || teacher) ("student_teacher"); both inputs (B,K,Ho,Wo) log-probs."""
    out_hw = spatial_log_probs.shape[-2:]
    weight = box_mask(mix.box_t, mix.images.shape[-2:], out_hw, spatial_log_probs.device)
    student, teacher = spatial_log_probs.float(), teacher_log_probs.detach().float()
    if direction == "teacher_student":
        kl = F.kl_div(student, teacher, reduction="none", log_target=True).sum(dim=1)  # (B,Ho,Wo)
    elif direction == "student_teacher":
        kl = (student.exp() * (student - teacher)).sum(dim=1)
    else:
        raise ValueError(f"direction={direction!r}; choose 'teacher_student' or 'student_teacher'")
    total = (kl.shape[0] * box_cells(mix.box_t, mix.images.shape[-2:], out_hw)).float()  # sum of the weights
    # an empty box: 0 / 1 = 0 (no host branch on the box: the same graph for every box)
    return (kl * weight).sum() / torch.where(total > 0, total, torch.ones_like(total))


def sd_loss(saol_log_probs: Tensor, gap_logits: Tensor, labels: Tensor, mix: CutMixBatch,
            beta: float) -> Tensor:
    """KL(y_SAOL || y_GAP) (batch mean, y_SAOL detached) + beta * mixed CE of the GAP logits."""
    gap_logp = F.log_softmax(gap_logits.float(), dim=1)
    kl = F.kl_div(gap_logp, saol_log_probs.detach().float(), reduction="batchmean", log_target=True)
    return kl + beta * mixed_ce(gap_logp, labels, mix, log_probs=True)


def compute_losses(out, labels: Tensor, mix: CutMixBatch, cfg: LossConfig,
                   teacher_spatial_log_probs: Tensor | None = None) -> dict[str, Tensor]:
    """All active loss terms of one step.

    out: a ``ModelOutput`` (fields saol_log_probs, gap_logits, spatial_log_probs, mask_logits).
    teacher_spatial_log_probs: (B,K,Ho,Wo) clean-batch log Y already indexed by ``mix.perm``
    (``ss2_teacher``); needed only when the batch is mixed and ``w_ss2 > 0``.
    Returns {"total": weighted sum (Eq. 7), and each computed term UNWEIGHTED under its key
    "sl" | "ce_gap" | "sd" | "ss1" | "ss2"}, all 0-dim float32 on the device. Terms with weight 0 are
    not computed; SS1/SS2 only exist for mixed batches.
    """
    has_saol, has_gap = out.saol_log_probs is not None, out.gap_logits is not None
    if not (has_saol or has_gap):
        raise ValueError("compute_losses needs saol_log_probs or gap_logits in the model output")
    terms: dict[str, Tensor] = {}
    weights: dict[str, float] = {}

    def add(key: str, weight: float, make) -> None:
        if weight != 0:
            terms[key], weights[key] = make(), weight

    if has_saol:
        add("sl", cfg.w_sl, lambda: mixed_ce(out.saol_log_probs, labels, mix, log_probs=True))
    if has_gap and not has_saol:
        add("ce_gap", cfg.w_sl, lambda: mixed_ce(out.gap_logits, labels, mix))
    elif has_gap and cfg.gap_loss == "sd":
        add("sd", cfg.w_sd, lambda: sd_loss(out.saol_log_probs, out.gap_logits, labels, mix, cfg.sd_beta))
    elif has_gap:
        add("ce_gap", cfg.w_sd, lambda: mixed_ce(out.gap_logits, labels, mix))
    if mix.applied and cfg.w_ss1 != 0:
        if out.mask_logits is None:
            raise ValueError("loss.w_ss1 > 0 needs the mask head (model.mask_head=true)")
        add("ss1", cfg.w_ss1, lambda: ss1_loss(out.mask_logits, mix))
    if mix.applied and cfg.w_ss2 != 0:
        if out.spatial_log_probs is None or teacher_spatial_log_probs is None:
            raise ValueError("loss.w_ss2 > 0 needs spatial_log_probs and the teacher from ss2_teacher()")
        add("ss2", cfg.w_ss2, lambda: ss2_loss(out.spatial_log_probs, teacher_spatial_log_probs, mix, cfg.ss2_kl))

    total = sum((weights[k] * t for k, t in terms.items()), labels.new_zeros((), dtype=torch.float32))
    return {"total": total, **terms}


@torch.no_grad()
def ss2_teacher(model: nn.Module, images: Tensor, mix: CutMixBatch, bn_mode: str,
                w_ss2: float = 1.0) -> Tensor | None:
    """SS2's teacher: (B,K,Ho,Wo) spatial log-probs of the CLEAN batch ``images``, indexed by mix.perm.

    Costs about one extra forward pass per mixed step: the backbone and SAOL's class branches only
    (``model(images, spatial_only=True)``: no attention branch, GAP-FC or mask head, no backward, no
    stored activations). Returns None (no work) when the batch is not mixed or ``w_ss2 == 0``. Call it
    under the autocast chosen for the teacher (``saol_core.step``: ``loss.ss2_teacher_amp``).

    The whole model runs in eval mode (dropout/ShakeDrop off: a deterministic target that consumes no
    random numbers); only BatchNorm follows ``bn_mode`` (``LossConfig.ss2_teacher_bn``):
    - "eval": running statistics.
    - "train": statistics of this clean batch, WITHOUT updating running_mean/var/num_batches_tracked:
      each BN that the student runs in train mode (not a frozen backbone's, ``model.backbone_bn``) runs in
      train mode with ``track_running_stats=False`` for this call, which makes ``F.batch_norm`` normalize
      by batch stats and receive no buffers to update.
    Every module's training flag and ``track_running_stats`` are restored afterwards. (Under
    torch.compile the flipped flags give the teacher its own compiled graph.)
    """
    if bn_mode not in ("train", "eval"):
        raise ValueError(f"bn_mode={bn_mode!r} is not valid; choose one of ['train', 'eval']")
    if not mix.applied or w_ss2 == 0:
        return None
    modes = [(m, m.training) for m in model.modules()]
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    tracking = [m.track_running_stats for m in norms]
    model.eval()
    try:
        if bn_mode == "train":
            for m in norms:
                m.training, m.track_running_stats = True, False
        out = model(images, spatial_only=True)
    finally:
        for m, flag in zip(norms, tracking):
            m.track_running_stats = flag
        for m, flag in modes:
            m.training = flag
    return out.spatial_log_probs.index_select(0, mix.perm)
