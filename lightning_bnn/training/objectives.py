r"""The ELBO and its KL weighting schedules (Blundell et al. 2015, section 3.4).

The loss of minibatch i of M is

.. math:: \mathcal{F}_i = \mathrm{NLL}_i + \lambda \, \pi_i \, \mathrm{KL}(q \,\|\, p)

with NLL_i summed over the minibatch (averaged over the Monte Carlo samples),
lambda the ``kl_scale`` (1.0 gives the true ELBO; below 1 is the "cold posterior"
knob) and pi_i a schedule whose weights sum to 1 over an epoch, so that one epoch
sums to the full negative ELBO, NLL(D) + KL:

* ``uniform``: pi_i = 1/M.
* ``blundell``: pi_i = 2^(M-i) / (2^M - 1), i = 1..M: the first minibatches carry
  most of the KL, later ones are dominated by the data.
* ``anneal``: pi_i = min(1, t / N) / M, a linear warm-up over N epochs, where t is
  the fractional epoch; it sums to 1 once warm.

Under data parallelism with W processes every rank sees M minibatches per epoch,
and the gradients are averaged over ranks. Dividing pi_i by W makes the averaged
loss equal to the global-minibatch ELBO divided by W, so the loss keeps the scale of
a one-process run and one epoch still sums to the whole ELBO (up to that factor).
"""

from __future__ import annotations

import math
from enum import StrEnum


class KLWeighting(StrEnum):
    """Named KL weighting schedules."""

    uniform = "uniform"
    blundell = "blundell"
    anneal = "anneal"


def kl_weight(
    schedule: KLWeighting | str,
    batch_index: int,
    num_batches: int,
    epoch: int = 0,
    anneal_epochs: int = 1,
    world_size: int = 1,
) -> float:
    """Weight pi_i of the KL term for minibatch ``batch_index`` (0-based) of ``num_batches``.

    Args:
        schedule: ``uniform``, ``blundell`` or ``anneal``.
        batch_index: 0-based index i - 1 of the minibatch within the epoch.
        num_batches: M, minibatches per epoch (per process).
        epoch: current epoch (0-based), used by ``anneal``.
        anneal_epochs: N, epochs of linear warm-up for ``anneal``.
        world_size: number of data-parallel processes W.

    Returns:
        pi_i / W.
    """
    schedule = KLWeighting(schedule)
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    if schedule is KLWeighting.uniform:
        weight = 1.0 / num_batches
    elif schedule is KLWeighting.blundell:
        # 2^(M-i) / (2^M - 1) = 2^(-i) / (1 - 2^(-M)), which never overflows.
        i = min(batch_index, num_batches - 1) + 1
        weight = math.ldexp(1.0, -i) / -math.expm1(-num_batches * math.log(2.0))
    else:
        progress = (epoch + (batch_index + 1) / num_batches) / max(anneal_epochs, 1)
        weight = min(1.0, progress) / num_batches
    return weight / world_size
