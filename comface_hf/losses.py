"""ComFace losses (Sec. 3.2): inter-personal InfoNCE (Eq. 1) and intra-personal regression.

Under several processes the InfoNCE negatives come from the global batch, as in SimCLR and MoCo v3: every process
gathers the projections of all processes with a gather that carries gradients, uses its local views as anchors
against all views of all processes, and averages over its local anchors. DDP then averages the gradients over
processes, which gives exactly the gradient of Eq. 1 over the global batch of 2 * N * world_size views.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class _AllGatherWithGradient(torch.autograd.Function):
    """all_gather whose backward sends every process the gradient of its own slice, summed over processes.

    Each process computes the same global loss term from the gathered tensor, so the gradient that reaches one
    process's input is the sum of what every process's loss sends back to that slice (all_reduce, SUM).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world_size = dist.get_world_size()
        ctx.rank = dist.get_rank()
        ctx.batch_size = tensor.shape[0]
        gathered = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(gathered, tensor.contiguous())
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.batch_size
        return grad[start : start + ctx.batch_size]


def gather_with_gradient(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate `tensor` [N, D] from all processes -> ([N * world_size, D], offset of this process's rows).

    Returns the input and offset 0 when torch.distributed is not initialised or has one process.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor, 0
    return _AllGatherWithGradient.apply(tensor), dist.get_rank() * tensor.shape[0]


def inter_personal_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, gather: bool = True
) -> torch.Tensor:
    r"""Eq. 1: SimCLR InfoNCE over 2N views.

    Args:
        z1: `[N, D]` projections g(f(x~_i)) of the first view of each image.
        z2: `[N, D]` projections of the second view (x~_{i+N}); row i of z1 and z2 form the positive pair.
        temperature: tau.
        gather: under several processes, use the views of all processes as negatives (global batch).

    Returns:
        Scalar loss, mean over this process's 2N anchors; with one process exactly
        -1/(2N) sum_j log exp(z_j . z_j^p / tau) / sum_{k != j} exp(z_j . z_k / tau).
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be [N, D] with the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}.")
    # Similarities in float32 even under mixed precision: exp(1/tau) with tau=0.1 is large for fp16.
    z1 = F.normalize(z1.float(), dim=1)
    z2 = F.normalize(z2.float(), dim=1)
    local = torch.cat([z1, z2], dim=0)  # [2N, D]: views 1..N then N+1..2N
    n = z1.shape[0]
    if gather:
        g1, offset = gather_with_gradient(z1)
        g2, _ = gather_with_gradient(z2)
    else:
        g1, g2, offset = z1, z2, 0
    candidates = torch.cat([g1, g2], dim=0)  # [2M, D], M = N * world_size
    m = g1.shape[0]
    logits = local @ candidates.t() / temperature  # [2N, 2M]
    rows = torch.arange(2 * n, device=logits.device)
    # Global column of each anchor itself (excluded, the 1_{k != j} of Eq. 1) and of its positive.
    own_column = torch.cat([offset + rows[:n], m + offset + rows[:n]])
    positive_column = torch.cat([m + offset + rows[:n], offset + rows[:n]])
    logits = logits.masked_fill(F.one_hot(own_column, 2 * m).bool(), float("-inf"))
    return F.cross_entropy(logits, positive_column)


def intra_personal_loss(
    d: torch.Tensor, alpha_x: torch.Tensor, alpha_y: torch.Tensor, absolute: bool = True
) -> torch.Tensor:
    r"""L_intra = 1/N sum_i (d_i - |alpha_y_i - alpha_x_i|)^2 (signed target when `absolute=False`, Table 7 (d)).

    Args:
        d: `[N]` or `[N, 1]` predicted distances l(ReLU(f(y) - f(x))).
        alpha_x, alpha_y: `[N]` edit intensities of x and y.
    """
    d = d.reshape(-1).float()
    alpha_x = alpha_x.reshape(-1).to(d)
    alpha_y = alpha_y.reshape(-1).to(d)
    if not (d.shape == alpha_x.shape == alpha_y.shape):
        raise ValueError(
            f"d, alpha_x and alpha_y must have one value per pair, got {d.numel()}, {alpha_x.numel()}, {alpha_y.numel()}."
        )
    target = alpha_y - alpha_x
    if absolute:
        target = target.abs()
    return F.mse_loss(d, target)


__all__ = ["gather_with_gradient", "inter_personal_loss", "intra_personal_loss"]
