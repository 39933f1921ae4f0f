"""Eq. 1 and L_intra against plain loops; the global-batch gather under two real processes."""

import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from comface_hf.losses import inter_personal_loss, intra_personal_loss


def eq1_loop(z1, z2, tau):
    """Eq. 1 written as in the paper: 2N views, j's positive is its other view, k != j in the denominator."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    total = 0.0
    for j in range(2 * n):
        p = j + n if j < n else j - n
        numerator = math.exp(float(z[j] @ z[p]) / tau)
        denominator = sum(math.exp(float(z[j] @ z[k]) / tau) for k in range(2 * n) if k != j)
        total += -math.log(numerator / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_inter_personal_loss_matches_eq1_loop(tau):
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    assert inter_personal_loss(z1, z2, tau).item() == pytest.approx(eq1_loop(z1, z2, tau), rel=1e-5)


def test_inter_personal_loss_is_low_for_matching_views_and_rejects_bad_shapes():
    z = torch.randn(8, 16)
    assert inter_personal_loss(z, z + 1e-3 * torch.randn_like(z), 0.1) < inter_personal_loss(z, torch.randn(8, 16), 0.1)
    with pytest.raises(ValueError, match="same shape"):
        inter_personal_loss(torch.randn(4, 8), torch.randn(5, 8))


def test_intra_personal_loss_absolute_and_signed():
    d = torch.tensor([1.0, -2.0, 0.5])
    ax, ay = torch.tensor([0.0, 1.0, -1.0]), torch.tensor([2.0, -1.0, -1.5])
    absolute = sum((d[i] - abs(ay[i] - ax[i])) ** 2 for i in range(3)) / 3
    signed = sum((d[i] - (ay[i] - ax[i])) ** 2 for i in range(3)) / 3
    assert intra_personal_loss(d, ax, ay).item() == pytest.approx(absolute.item())
    assert intra_personal_loss(d, ax, ay, absolute=False).item() == pytest.approx(signed.item())
    with pytest.raises(ValueError, match="one value per pair"):
        intra_personal_loss(d, ax[:2], ay)


def _worker(rank, world_size, init_file, z1, z2, queue):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    n = z1.shape[0] // world_size
    a = z1[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    b = z2[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    loss = inter_personal_loss(a, b, 0.1)
    loss.backward()
    # DDP averages gradients over processes; do the same by hand.
    grads = [a.grad / world_size, b.grad / world_size]
    losses = [torch.zeros(()) for _ in range(world_size)]
    dist.all_gather(losses, loss.detach())
    queue.put((rank, grads[0], grads[1], torch.stack(losses).mean().item()))
    dist.barrier()
    dist.destroy_process_group()


def test_gather_gives_global_batch_negatives_and_gradients():
    """Two gloo processes with N=4 each must give the loss and gradients of one process with N=8."""
    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 6), torch.randn(8, 6)
    full1, full2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    full_loss = inter_personal_loss(full1, full2, 0.1)
    full_loss.backward()

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        procs = [ctx.Process(target=_worker, args=(r, 2, os.path.join(tmp, "init"), z1, z2, queue)) for r in range(2)]
        for p in procs:
            p.start()
        results = sorted(queue.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    grad1 = torch.cat([r[1] for r in results])
    grad2 = torch.cat([r[2] for r in results])
    assert results[0][3] == pytest.approx(full_loss.item(), rel=1e-5)
    torch.testing.assert_close(grad1, full1.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad2, full2.grad, rtol=1e-4, atol=1e-6)
