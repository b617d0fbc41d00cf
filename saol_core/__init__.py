"""saol_core — a reproducible PyTorch study of SAOL (Kim et al., CVPR 2020).

Entry points: ``python -m saol_core.train`` (one run), ``python -m saol_core.study`` (a table's grid
through papermill), ``python -m saol_core.macs`` (params / GMACs), ``python -m saol_core.bench``
(throughput). The model, data and losses are importable from their modules.
"""
__version__ = "0.1.0"
