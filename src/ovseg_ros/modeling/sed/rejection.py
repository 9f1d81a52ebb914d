"""Category early rejection: which classes go on to the next decoder stage."""

from __future__ import annotations

import torch


def topk_survivors(logits: torch.Tensor, topk: int) -> torch.Tensor:
    """logits [n, H, W] of one image -> [n] bool: the classes among the `topk` highest
    logits at one pixel at least (the published rule; all of them when topk >= n)."""
    classes = logits.shape[0]
    k = min(topk, classes)
    best = logits.reshape(classes, -1).topk(k, dim=0).indices.flatten()
    keep = torch.zeros(classes, dtype=torch.bool, device=logits.device)
    keep[best] = True
    return keep


def best_ranks(logits: torch.Tensor) -> torch.Tensor:
    """logits [B, n, H, W] -> [B, n]: each class's best rank over the pixels (0 = the
    highest logit at some pixel). A class is a top-k survivor exactly when it is < k.

    Sort-based (O(n log n) per pixel, no n x n comparison), static shapes: exportable.
    The ranks are counted in the logits' float type (exact for any vocabulary size): an
    integer fill and minimum would export as ConstantOfShape / ReduceMin on INT32, which
    TensorRT 8.6 does not import (both FLOAT only there).
    """
    batch, classes = logits.shape[:2]
    flat = logits.reshape(batch, classes, -1)
    order = flat.argsort(dim=1, descending=True)  # order[b, r, p]: the class at rank r
    rank_values = torch.arange(classes, device=logits.device, dtype=logits.dtype).view(1, classes, 1).expand(order.shape)
    ranks = torch.zeros_like(flat).scatter(1, order, rank_values)
    return ranks.amin(dim=2)


def static_selection(
    logits: torch.Tensor, n_keep: int, topk: int, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The static-shape rule: (slots [B, n_keep] positions into the n classes, in
    ascending order; in_topk [B, n_keep] bool, whether each kept class also passes the
    dynamic top-k rule).

    logits [B, n, H, W]; valid [B, n] marks the classes still in play (None: all): the
    others rank below every valid class and are chosen last.
    """
    if valid is not None:
        logits = logits.masked_fill(~valid[:, :, None, None], float("-inf"))
    ranks = best_ranks(logits)
    in_topk = ranks < topk
    if valid is not None:
        in_topk = in_topk & valid
    peak = logits.flatten(2).amax(dim=2)
    score = 0.5 * torch.sigmoid(peak) - ranks.to(logits.dtype)  # rank first, a higher peak breaks ties
    if valid is not None:
        score = score.masked_fill(~valid, float("-inf"))
    slots = score.topk(min(n_keep, logits.shape[1]), dim=1).indices.sort(dim=1).values
    return slots, in_topk.gather(1, slots)
