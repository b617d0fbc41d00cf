"""What every backbone shares: the ``Backbone`` interface, the papers' weight init, the
``output_stride`` rule and loading weights by name."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from saol_core.config import ConfigError

# Leading key components stripped when matching checkpoint keys: DDP ("module."),
# torch.compile ("_orig_mod."), a whole SAOLModel ("backbone."), common wrappers.
_WRAPPER_PREFIXES = ("module", "_orig_mod", "backbone", "model", "encoder", "body")
# Dict keys under which training scripts nest the state dict.
_NESTING_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "backbone")


class Backbone(nn.Module):
    """A feature extractor with one output ("tap") per stage.

    ``forward``: (B, C_in, H, W) -> [X^1, ..., X^S], X^s of shape
    (B, stage_channels[s], ceil(H / stage_strides[s]), ceil(W / stage_strides[s])), shallow -> deep.
    The last tap is exactly what the net's own GAP-FC classifier would pool (after the final
    BN-ReLU for pre-activation nets).
    """

    stage_channels: list[int]
    stage_strides: list[int]

    def forward(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError


def init_weights(module: nn.Module) -> None:
    """He et al. init used by ResNet / WRN / DenseNet / PyramidNet reference code:
    conv ~ N(0, 2 / (k*k*C_out)) (kaiming normal, fan_out), BN weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def last_stage_stride(name: str, output_stride: int | None, native: int) -> int:
    """Stride of the last stage for a requested total ``output_stride``: 2 (native) or 1 (halved).

    Only "native" and "native / 2" exist: halving removes the last stage's stride (the contract
    of ``ModelConfig.output_stride``); anything else is a ConfigError.
    """
    if output_stride is None or output_stride == native:
        return 2
    if output_stride * 2 == native:
        return 1
    raise ConfigError(f"backbone {name!r}: output_stride={output_stride} is not supported; "
                      f"choose {native} (native) or {native // 2} (last stage without stride)")


def _unwrap(obj) -> dict[str, Tensor]:
    """Find the tensor dict inside a checkpoint (plain state dict or nested under a known key)."""
    while isinstance(obj, dict) and not any(isinstance(v, Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _NESTING_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise ConfigError(f"pretrained checkpoint is a {type(obj).__name__}, not a state dict")
    return {k: v for k, v in obj.items() if isinstance(v, Tensor)}


def _normalize(key: str) -> str:
    """Drop leading wrapper components: "module.backbone.conv1.weight" and "body.conv1.weight" -> "conv1.weight"."""
    head, _, rest = key.partition(".")
    while rest and head in _WRAPPER_PREFIXES:
        key = rest
        head, _, rest = key.partition(".")
    return key


def load_pretrained(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a local checkpoint (torchvision / timm / this project's naming) into ``model``, non-strictly
    (:func:`load_state`). Raises ConfigError when the file is absent."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pretrained weights file not found: {path} (pass a local torchvision/timm state dict, "
                          "or model.pretrained=imagenet for the library's own weights)")
    return load_state(model, _unwrap(torch.load(path, map_location="cpu", weights_only=True)), str(path))


def load_state(model: nn.Module, source: dict[str, Tensor], what: str) -> dict[str, list[str]]:
    """Load the tensors of ``source`` (named ``what`` in messages) into ``model``, non-strictly.

    Keys are matched after stripping wrapper prefixes on both sides (DDP's "module.", a SAOLModel's
    "backbone.", an adapter's "body.", ...); tensors whose shape differs (e.g. a stem conv
    rebuilt for other ``in_channels``) are skipped. Returns {"loaded", "missing", "unexpected",
    "mismatched"} key lists and warns when anything is missing or mismatched. Raises ConfigError
    when not a single key matches (wrong file or wrong backbone).
    """
    targets = model.state_dict()
    by_name = {_normalize(k): k for k in targets}
    matched: dict[str, Tensor] = {}
    unexpected, mismatched = [], []
    for key, value in source.items():
        target = by_name.get(_normalize(key))
        if target is None:
            unexpected.append(key)
        elif targets[target].shape != value.shape:
            mismatched.append(f"{target}: checkpoint {tuple(value.shape)} vs model {tuple(targets[target].shape)}")
        else:
            matched[target] = value
    if not matched:
        raise ConfigError(f"pretrained weights {what}: none of its {len(source)} tensors match the backbone "
                          f"(checkpoint keys e.g. {list(source)[:3]}, backbone keys e.g. {list(targets)[:3]})")
    model.load_state_dict(matched, strict=False)
    # Old checkpoints lack BN's step counter; it has no effect on the forward pass.
    missing = [k for k in targets if k not in matched and not k.endswith("num_batches_tracked")]
    if missing or mismatched:
        warnings.warn(f"pretrained weights {what}: loaded {len(matched)} tensors; {len(missing)} backbone "
                      f"tensors keep their init (e.g. {missing[:3]}); shape mismatches: {mismatched[:3]}",
                      stacklevel=2)
    return {"loaded": sorted(matched), "missing": missing, "unexpected": unexpected, "mismatched": mismatched}
