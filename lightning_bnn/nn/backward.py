"""Shared pieces of the fused nodes' hand-written backward passes (:mod:`.posterior`, :mod:`.mixture_kl`)."""

from __future__ import annotations

import torch


def rho_gradient(
    rho: torch.Tensor,
    sigma: torch.Tensor,
    d_sigma: torch.Tensor | None,
    g_var: torch.Tensor | None,
    g_sigma: torch.Tensor | None,
    needed: bool,
) -> torch.Tensor | None:
    """dL/drho = sigmoid(rho) dL/dsigma for the fused nodes' backward (softplus' derivative is the sigmoid).

    ``d_sigma`` is the KL's part of dL/dsigma (with the sigma^2 output's part already in it), or
    None when the KL has no gradient: then the sigma^2 output contributes 2 sigma g_var. The sigma
    output's gradient ``g_sigma`` is added last. None when rho needs no gradient or nothing flows.
    """
    if d_sigma is None and g_var is not None:
        d_sigma = torch.mul(sigma, g_var).mul_(2.0)
    if g_sigma is not None:
        d_sigma = g_sigma if d_sigma is None else d_sigma.add_(g_sigma)
    if not needed or d_sigma is None:
        return None
    return torch.sigmoid(rho).mul_(d_sigma)
