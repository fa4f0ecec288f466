"""Evaluation: class probabilities for uint8 images (with optional test-time augmentation), and
loss / accuracy / confusion matrix sharded over the ranks of a DDP run and reduced as sums."""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from mnist_hpc.training import data as datamod
from mnist_hpc.training import distributed as distmod

TTA_SHIFTS = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]  # the image and its 1-px shifted views
# On a CPU, data.eval_batch_size is cut into chunks of at most this many images: activations that
# stay in cache. 10,000 test images through configs/fast.yaml's net on 2 cores: 0.67 s in chunks of
# 500, 1.52 s in batches of 5000 (same process, load 0.8). Each image's output does not depend on
# its batch (eval mode), so only the speed changes.
CPU_EVAL_CHUNK = 512


@torch.no_grad()
def predict_probs(
    model, x_u8, mean, std, batch_size, *, autocast=None, tta=False, channels_last=False
) -> torch.Tensor:
    """Softmax probabilities (N, classes) for uint8 images (N, H, W) or (N, C, H, W); ``tta`` averages the
    probabilities of 1-px shifted views. ``autocast``: a context factory (``Precision.autocast``)."""
    model.eval()
    out: list[torch.Tensor] = []
    shifts = TTA_SHIFTS if tta else TTA_SHIFTS[:1]
    if x_u8.device.type == "cpu":
        batch_size = min(batch_size, CPU_EVAL_CHUNK)
    for i in range(0, len(x_u8), batch_size):
        xb = datamod.normalize(x_u8[i : i + batch_size], mean, std)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        views: list[torch.Tensor] = []  # the probabilities of each shifted view
        for dy, dx in shifts:
            view = xb if (dy, dx) == (0, 0) else torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            with autocast() if autocast else nullcontext():
                logits = model(view)
            views.append(logits.float().softmax(1))
        out.append(sum(views[1:], views[0]) / len(shifts))
    return torch.cat(out) if out else torch.zeros(0, 0, device=x_u8.device)


def nll(probs, y) -> torch.Tensor:
    """Mean negative log-likelihood of the labels under ``probs``."""
    return F.nll_loss(probs.clamp_min(1e-12).log(), y)


def evaluate(
    model,
    x_u8,
    y,
    mean,
    std,
    batch_size,
    *,
    denv=None,
    autocast=None,
    tta=False,
    channels_last=False,
    num_classes: int,
) -> dict:
    """Loss, accuracy and confusion matrix over all ranks (each evaluates its shard), plus this
    rank's shard and predictions (``local_x``, ``local_y``, ``local_pred``, ``local_probs``) for
    the misclassified grid."""
    denv = denv or distmod.DistEnv("single")
    idx = torch.arange(len(x_u8), device=x_u8.device).tensor_split(denv.world_size)[denv.rank]
    xs, ys = x_u8[idx], y[idx]
    probs = predict_probs(
        model, xs, mean, std, batch_size, autocast=autocast, tta=tta, channels_last=channels_last
    )
    pred = probs.argmax(1)
    loss_sum = (
        F.nll_loss(probs.clamp_min(1e-12).log(), ys, reduction="sum")
        if len(ys)
        else torch.zeros((), device=y.device)
    )
    cm = torch.bincount(ys * num_classes + pred, minlength=num_classes * num_classes).double()
    stats = torch.cat([loss_sum.double().reshape(1), cm])
    distmod.all_sum(denv, stats)
    n = len(x_u8)
    cm = stats[1:].reshape(num_classes, num_classes).long()
    return {
        "loss": stats[0].item() / n,
        "accuracy": cm.diag().sum().item() / n,
        "confusion": cm.tolist(),
        "local_x": xs,
        "local_y": ys,
        "local_pred": pred,
        "local_probs": probs,
    }
