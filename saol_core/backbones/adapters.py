"""Adapters that tap library CNNs: ``tv:<torchvision classifier>`` and ``timm:<name>``.

Both keep only taps at stride >= 4, like the built-in ImageNet ResNets (layer1..layer4): the
stride-2 stem maps are too large to be worth a SAOL head branch.

``tv:`` finds the stages automatically. A weightless (meta-device) copy of the classifier is traced
with torchvision's feature-extraction tracer and run once on a 224x224 meta tensor (shapes only).
A node is a candidate when
  - it is a *cut* of the graph: nothing computed before it is used after it, so it alone carries
    the state (a residual block's output, not the first ReLU of a downsampling block, which the
    shortcut bypasses), and
  - it outputs a square NCHW map larger than 1x1 (drops global pooling, SE squeezes and the
    (B, H, W, C) internals of ConvNeXt / Swin).
Candidates are grouped by nominal stride 2^round(log2(224 / H)); per stride the tap is the last
candidate among those that end the shallowest module (``layer1``, ``features.3``, ...), i.e. the
last block output, not the expansion conv that opens the next stage's first block. The last tap
is what the classifier pools (resnet: layer4, densenet: the functional relu(norm5), mobilenet /
efficientnet / convnext: the last ``features`` block). Transformers (ViT, Swin) are not supported.
"""
from __future__ import annotations

import math

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from saol_core.config import ConfigError

from .base import Backbone

_PROBE_SIZE = 224
_MIN_STRIDE = 4


def _torchvision_model(name: str, **kwargs) -> nn.Module:
    """A torchvision classifier with random weights (``weights=None``: nothing is downloaded)."""
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise ConfigError(f"unknown torchvision classification model {name!r} in 'tv:{name}'; choose one of {names}")
    return torchvision.models.get_model(name, weights=None, **kwargs)


def _meta_model(name: str, **kwargs) -> nn.Module:
    """A weightless instance for shape probing: built on the meta device, or built on the CPU and moved
    there for the few models whose constructor reads tensor data (RegNet)."""
    try:
        with torch.device("meta"):
            return _torchvision_model(name, **kwargs)
    except NotImplementedError:
        return _torchvision_model(name, **kwargs).to("meta")


def _cut_nodes(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """Nodes that no earlier node's value flows past (graph cuts), in a topologically ordered graph."""
    nodes = [n for n in graph.nodes if n.op not in ("output", "get_attr")]
    index = {n: i for i, n in enumerate(nodes)}
    cuts, reach = set(), -1  # reach: latest consumer of any node before the current one
    for i, node in enumerate(nodes):
        if reach <= i:
            cuts.add(node)
        reach = max([reach] + [index[u] for u in node.users if u in index])
    return cuts


def _probe(model: nn.Module, names: list[str]) -> tuple[dict[str, Tensor], torch.fx.Graph]:
    """Run a meta-device ``model`` on a 224x224 meta input: ({node name: value}, the eval graph)."""
    extractor = create_feature_extractor(model.eval(), return_nodes=names, suppress_diff_warning=True)
    extractor.eval()
    return extractor(torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE, device="meta")), extractor.graph


def _stride(height: int) -> int:
    """Nominal (power-of-two) stride of a map of side ``height`` at the probe size; valid-padding nets
    (Inception, SqueezeNet, AlexNet) give maps a few pixels short of 224 / stride."""
    return 2 ** round(math.log2(_PROBE_SIZE / height))


def _levels(names: list[str]) -> dict[str, int]:
    """Depth of the shallowest module each node ends, e.g. 'layer1.2.relu_2' ends 'layer1' -> 1.
    ``names`` are in execution order, so a module's last node is its output."""
    last = {}
    for name in names:
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            last[".".join(parts[:depth])] = (name, depth)
    levels = {}
    for name, depth in last.values():
        levels[name] = min(levels.get(name, depth), depth)
    return levels


def find_stages(model: nn.Module) -> dict[str, Tensor]:
    """{node name (torchvision feature-extraction naming): meta value at 224x224} of the stage
    outputs of a meta-device ``model``, shallow -> deep."""
    train_names, eval_names = get_graph_node_names(model, suppress_diff_warning=True)
    names = [n for n in eval_names if n in set(train_names)]
    values, graph = _probe(model, names)
    (node_of,) = [n.args[0] for n in graph.nodes if n.op == "output"]  # {name: fx node}
    cuts, levels = _cut_nodes(graph), _levels(names)
    by_stride: dict[int, list[str]] = {}  # stride -> its NCHW cut nodes (dicts keep first-seen order)
    for name in names:
        value = values[name]
        # Square maps only: the probe is square, so (B, H, W, C) layouts (ConvNeXt/Swin internals) drop out.
        if (node_of[name] in cuts and isinstance(value, Tensor) and value.dim() == 4
                and value.shape[-1] == value.shape[-2] > 1 and _stride(value.shape[-1]) >= _MIN_STRIDE):
            by_stride.setdefault(_stride(value.shape[-1]), []).append(name)
    if not by_stride:
        raise ConfigError(f"found no NCHW stage outputs in {type(model).__name__}; tv: supports CNN classifiers")
    # Per stride, the last cut among those ending the shallowest module: a block output, not the
    # expansion conv that opens the next stage's first (shortcut-free) block.
    taps = []
    for group in by_stride.values():
        top = min(levels[n] for n in group)
        taps.append([n for n in group if levels[n] == top][-1])
    return {name: values[name] for name in taps}


def _replace_stem(model: nn.Module, in_channels: int) -> None:
    """Swap the first 3-channel Conv2d (the stem) for one taking ``in_channels`` channels."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            parent = model.get_submodule(name.rpartition(".")[0])
            stem = nn.Conv2d(in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                             module.dilation, module.groups, module.bias is not None)
            nn.init.kaiming_normal_(stem.weight, mode="fan_out", nonlinearity="relu")
            if stem.bias is not None:
                nn.init.zeros_(stem.bias)
            setattr(parent, name.rpartition(".")[2], stem)
            return
    raise ConfigError(f"{type(model).__name__}: no 3-channel stem conv to adapt to in_channels={in_channels}")


class TorchvisionAdapter(Backbone):
    """Taps of a torchvision classifier (weights=None), found as described in the module docstring.

    ``output_stride`` = native / 2 uses ``replace_stride_with_dilation`` (ResNet / ResNeXt /
    Wide-ResNet families only). Parameter names are torchvision's, so torchvision checkpoints load.
    """

    def __init__(self, name: str, in_channels: int = 3, output_stride: int | None = None):
        super().__init__()
        stages = find_stages(_meta_model(name))
        self.stage_names = list(stages)
        native = _stride(stages[self.stage_names[-1]].shape[-1])
        kwargs = {}
        if output_stride not in (None, native):
            if output_stride * 2 != native:
                raise ConfigError(f"tv:{name}: output_stride={output_stride} is not supported; "
                                  f"choose {native} (native) or {native // 2}")
            kwargs["replace_stride_with_dilation"] = [False, False, True]
            try:
                stages, _ = _probe(_meta_model(name, **kwargs), self.stage_names)
            except (TypeError, NotImplementedError) as e:  # no such argument / basic blocks refuse dilation
                raise ConfigError(f"tv:{name} cannot change its output stride: only torchvision's bottleneck "
                                  f"ResNet / ResNeXt / Wide-ResNet models can ({e})") from None
        self.stage_channels = [stages[n].shape[1] for n in self.stage_names]
        self.stage_strides = [_stride(stages[n].shape[-1]) for n in self.stage_names]
        model = _torchvision_model(name, **kwargs)
        if in_channels != 3:
            _replace_stem(model, in_channels)
        self.body = create_feature_extractor(model, return_nodes=self.stage_names, suppress_diff_warning=True)

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.body(x).values())


class TimmAdapter(Backbone):
    """``timm.create_model(name, features_only=True)``, with timm's ImageNet weights (downloaded) when
    ``pretrained``; channels and strides come from timm's ``feature_info``. timm is optional: without
    it this raises ImportError."""

    def __init__(self, name: str, in_channels: int = 3, output_stride: int | None = None, pretrained: bool = False):
        super().__init__()
        try:
            import timm
        except ImportError:
            raise ImportError(f"backbone 'timm:{name}' needs the optional timm package, which is not installed: "
                              "pip install timm") from None
        kwargs = {"features_only": True, "pretrained": pretrained, "in_chans": in_channels}
        if output_stride is not None:
            kwargs["output_stride"] = output_stride
        try:
            self.body = timm.create_model(name, **kwargs)
        except RuntimeError as e:
            if "Unknown model" in str(e):
                raise ConfigError(f"unknown timm model {name!r} in 'timm:{name}' (see timm.list_models())") from None
            if pretrained:
                raise ConfigError(f"could not get timm's weights for {name!r} ({e}); offline, pass "
                                  "model.pretrained=<local weights file>") from None
            raise
        except OSError as e:
            raise ConfigError(f"could not download timm's weights for {name!r} ({e}); offline, pass "
                              "model.pretrained=<local weights file>") from None
        channels, strides = self.body.feature_info.channels(), self.body.feature_info.reduction()
        self.keep = [i for i, s in enumerate(strides) if s >= _MIN_STRIDE] or list(range(len(strides)))
        self.stage_channels = [channels[i] for i in self.keep]
        self.stage_strides = [strides[i] for i in self.keep]

    def forward(self, x: Tensor) -> list[Tensor]:
        features = self.body(x)
        return [features[i] for i in self.keep]
