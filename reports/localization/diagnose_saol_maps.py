"""Which factor of SAOL's class map A ⊙ Y_k localizes? Box metrics of A alone, Y_k alone and A ⊙ Y_k
(ground-truth class k) of a trained run, with the evaluator of saol_core.wsol (wsolevaluation protocol).

    PYTHONPATH=. python reports/localization/diagnose_saol_maps.py runs/wsol/wsol_digits [EVAL_SIZE]

Prints a markdown table (GT-known Loc at the best threshold = MaxBoxAcc, MaxBoxAccV2, best threshold).
"""
import sys

import pandas as pd
import torch

from saol_core.data import build_data
from saol_core.localize import markdown
from saol_core.train import load_run
from saol_core.wsol import normalize_maps
from saol_core.wsol_metrics import BoxEvaluator, resize_boxes

run_dir = sys.argv[1]
eval_size = int(sys.argv[2]) if len(sys.argv) > 2 else 224
model, cfg = load_run(run_dir, "last")
data = build_data(cfg.data, seed=cfg.seed, batch_size=cfg.train.batch_size, device="cpu", eval_batch_size=64)
evaluators = {name: BoxEvaluator() for name in ("A", "Y_k", "A ⊙ Y_k")}
for images, labels, indices in data.test.epoch(0):
    with torch.no_grad():
        out = model(images)
    ho, wo = out.log_attention.shape[-2:]
    log_y = out.spatial_log_probs.gather(1, labels.view(-1, 1, 1, 1).expand(-1, 1, ho, wo))[:, 0]
    maps = {"A": out.log_attention.exp(), "Y_k": log_y.exp(), "A ⊙ Y_k": (out.log_attention + log_y).exp()}
    correct = (out.saol_log_probs.argmax(1) == labels).numpy()
    gt = [resize_boxes(data.test_boxes[i], tuple(images.shape[-2:]), (eval_size, eval_size)) for i in indices.tolist()]
    for name, m in maps.items():
        evaluators[name].accumulate(normalize_maps(m, (eval_size, eval_size)).numpy(), gt, correct)
rows = []
for name, ev in evaluators.items():
    r = ev.compute()
    rows.append({"SAOL map (GT class)": name, "MaxBoxAcc": r["max_box_acc"], "MaxBoxAccV2": r["max_box_acc_v2"],
                 "best threshold": r["best_threshold"], "images": r["num_images"]})
print(f"{run_dir} ({cfg.model.backbone}, maps {ho}x{wo}, evaluated at {eval_size})\n")
print(markdown(pd.DataFrame(rows), {"images": 0}))
