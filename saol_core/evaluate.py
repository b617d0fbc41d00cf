"""Top-1 / top-5 accuracy of both heads, accumulated on the device (one host sync per evaluation)."""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import Tensor

HEADS = {"saol": "saol_log_probs", "gap": "gap_logits"}


def topk_correct(scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> Tensor:
    """Number of samples whose label is among the top-k scores, for each k.

    scores (B,K), labels (B,) -> (len(ks),) float counts; k is capped at K.
    """
    kmax = min(max(ks), scores.shape[1])
    top = scores.topk(kmax, dim=1).indices                       # (B,kmax)
    hit = (top == labels[:, None]).float().cumsum(1)             # (B,kmax): hit within the first j+1
    return torch.stack([hit[:, min(k, kmax) - 1].sum() for k in ks])


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device | str = "cpu",
             max_batches: int | None = None, autocast_dtype: torch.dtype | None = None,
             epoch: int = 0) -> dict[str, float]:
    """Accuracy (%) of each present head over ``loader`` (summed over ranks under torch.distributed).

    Returns ``{"saol_top1", "saol_top5", "gap_top1", "gap_top5"}`` minus the absent heads' keys.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    counts: dict[str, Tensor] = {}
    seen = torch.zeros((), device=device)
    amp = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype
           else contextlib.nullcontext())
    for i, (images, labels, _) in enumerate(loader.epoch(epoch)):
        if max_batches is not None and i >= max_batches:
            break
        with amp:
            out = model(images)
        for head, field in HEADS.items():
            scores = getattr(out, field)
            if scores is not None:
                c = topk_correct(scores.float(), labels)
                counts[head] = counts[head] + c if head in counts else c
        seen += labels.numel()
    model.train(was_training)
    if not counts:
        raise ValueError("the model has no classification head to evaluate")
    names = sorted(counts)
    stacked = torch.cat([counts[h] for h in names] + [seen[None]])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stacked)
    values = stacked.tolist()
    total = values[-1]
    if total == 0:
        raise ValueError("the evaluation loader yielded no images")
    result = {}
    for j, head in enumerate(names):
        result[f"{head}_top1"] = 100.0 * values[2 * j] / total
        result[f"{head}_top5"] = 100.0 * values[2 * j + 1] / total
    return result
