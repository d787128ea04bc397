"""SGE + residual add + ReLU as one custom ONNX op, ``ai.sgedeploy::SgeResidual``, for ONNX Runtime's CPU provider.

Each block that holds a ``SpatialGroupEnhance`` ends ``relu(sge(out) + identity)``. ``fuse_sge_residual(model)``
wraps those blocks so that the TorchScript exporter writes that tail as one node:

    SgeResidual(x, identity, gamma, beta) -> relu(x · sigmoid(γ_g · ĉ + β_g) + identity)
    attributes: groups (int), eps (float), block (int: 0 = plain NCHW; 8/16 = NCHWc, set by export/ort_sge/nchwc.py)

with the official numerics (Li, Hu, Yang, arXiv:1905.09646; implus/PytorchInsight). The kernel is C++ compiled
on the machine that runs it (export/ort_sge/kernels/); the graph needs it, so it is an ONNX Runtime-only artifact,
written beside the portable ``model.onnx``. Eager PyTorch still runs the block's own modules, so the wrapped model's
outputs, and what parity compares against, are unchanged.
"""

import copy

import torch
from torch import nn

from export.ort_sge.nchwc import FUSED_DOMAIN as DOMAIN
from export.ort_sge.nchwc import FUSED_OP as OP_TYPE
from models.layers.sge import SpatialGroupEnhance, spatial_group_enhance

DOMAIN_VERSION = 1


class _SgeResidual(torch.autograd.Function):
    """One ``SgeResidual`` node in the TorchScript exporter's graph; its forward is the layer's own maths."""

    @staticmethod
    def forward(ctx, out, identity, gamma, beta, groups: int, eps: float):
        gamma, beta = gamma.reshape(1, groups, 1, 1), beta.reshape(1, groups, 1, 1)
        return torch.relu(spatial_group_enhance(out, gamma, beta, groups=groups, eps=eps) + identity)

    @staticmethod
    def symbolic(g, out, identity, gamma, beta, groups: int, eps: float):
        node = g.op(f"{DOMAIN}::{OP_TYPE}", out, identity, gamma, beta, groups_i=groups, eps_f=eps, block_i=0)
        node.setType(out.type())
        return node


class SgeResidualBlock(nn.Module):
    """A ResNet block whose SGE, residual add and ReLU export as one ``SgeResidual`` node."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.onnx.is_in_onnx_export():
            return self.block(x)  # the block's own modules, hooks included
        out, identity = self.block.branches(x)
        sge = getattr(self.block, self.block.attn_name)
        return _SgeResidual.apply(out, identity, sge.weight.reshape(-1), sge.bias.reshape(-1), sge.groups, sge.eps)


def fuse_sge_residual(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` with every SGE block wrapped by ``SgeResidualBlock``, and how many were wrapped."""
    model = copy.deepcopy(model)
    wrapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            attn_name = getattr(child, "attn_name", None)
            if attn_name and isinstance(getattr(child, attn_name), SpatialGroupEnhance) and hasattr(child, "branches"):
                setattr(parent, name, SgeResidualBlock(child))
                wrapped += 1
    return model, wrapped
