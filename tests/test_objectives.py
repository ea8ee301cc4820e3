"""KL weighting schedules and the ELBO's explicit scaling (Blundell et al. 2015, section 3.4)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from lightning_bnn.nn.layers import total_kl
from lightning_bnn.training.module import BNNModule
from lightning_bnn.training.objectives import KLWeighting, kl_weight


def _epoch(schedule: str, m: int, **kwargs) -> list[float]:
    return [kl_weight(schedule, i, m, **kwargs) for i in range(m)]


@pytest.mark.parametrize("m", [1, 2, 3, 7, 64, 1000, 10**5])
@pytest.mark.parametrize("schedule", ["uniform", "blundell"])
def test_schedule_sums_to_one_over_an_epoch(schedule, m):
    weights = _epoch(schedule, m)
    assert all(math.isfinite(w) and w >= 0 for w in weights)
    assert math.fsum(weights) == pytest.approx(1.0, rel=1e-12)


def test_uniform_is_one_over_m():
    assert _epoch("uniform", 4) == [0.25] * 4


@pytest.mark.parametrize("m", [1, 2, 5, 10, 40])
def test_blundell_matches_the_papers_formula(m):
    """pi_i = 2^(M-i) / (2^M - 1), i = 1..M, computed exactly with fractions."""
    exact = [Fraction(2 ** (m - i), 2**m - 1) for i in range(1, m + 1)]
    for got, want in zip(_epoch("blundell", m), exact, strict=True):
        assert got == pytest.approx(float(want), rel=1e-14)


def test_blundell_never_overflows_for_large_m():
    m = 10**5
    weights = _epoch("blundell", m)
    assert weights[0] == pytest.approx(0.5)  # 2^(M-1) / (2^M - 1) -> 1/2
    assert weights[1] == pytest.approx(0.25)
    assert all(a >= b for a, b in zip(weights, weights[1:], strict=False))  # decreasing
    assert weights[-1] == 0.0  # 2^-100000 underflows to 0, never inf or NaN
    # an index past the end (a last, partial batch counted twice) stays finite
    assert math.isfinite(kl_weight("blundell", m + 5, m))


def test_anneal_warms_up_then_sums_to_one():
    m, warmup = 10, 3
    sums = [math.fsum(_epoch("anneal", m, epoch=e, anneal_epochs=warmup)) for e in range(6)]
    assert sums[0] < sums[1] < sums[2] < 1.0  # epochs 0..N-1 warm up
    assert sums[0] < 1 / 3
    assert kl_weight("anneal", m - 1, m, epoch=warmup - 1, anneal_epochs=warmup) == pytest.approx(1 / m)
    for s in sums[warmup:]:  # warm after N epochs
        assert s == pytest.approx(1.0, rel=1e-12)
    weights = [kl_weight("anneal", i, m, epoch=0, anneal_epochs=warmup) for i in range(m)]
    assert weights == sorted(weights)  # linear warm-up, increasing within the epoch


@pytest.mark.parametrize("schedule", ["uniform", "blundell", "anneal"])
@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_world_size_divides_the_weight(schedule, world_size):
    m = 9
    total = math.fsum(_epoch(schedule, m, epoch=5, world_size=world_size))
    assert total == pytest.approx(1.0 / world_size, rel=1e-12)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="num_batches must be >= 1, got 0"):
        kl_weight("uniform", 0, 0)
    with pytest.raises(ValueError, match="'cosine' is not a valid KLWeighting"):
        kl_weight("cosine", 0, 1)
    assert {k.value for k in KLWeighting} == {"uniform", "blundell", "anneal"}


@pytest.mark.parametrize("prior", ["gaussian", "laplace"])
@pytest.mark.parametrize("estimator", ["local", "reparameterization", "flipout"])
@pytest.mark.parametrize(("task", "kl_scale"), [("classification", 1.0), ("regression", 0.1)])
def test_training_loss_is_nll_sum_plus_weighted_kl(task, kl_scale, estimator, prior):
    """loss_i = NLL summed over the minibatch (mean over S samples) + kl_scale * pi_i * KL."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        outputs = 3 if task == "classification" else 1
        module = BNNModule(
            input_shape=[4],
            num_outputs=outputs,
            task=task,
            hidden_sizes=[8],
            num_samples_train=5,
            kl_scale=kl_scale,
            estimator=estimator,
            prior={"name": prior},
            noise="fixed",
            noise_std=0.5,
        )
        x = torch.randn(6, 4)
        y = torch.randint(0, 3, (6,)) if task == "classification" else torch.randn(6, 1)
        state = torch.get_rng_state()
        loss = module.training_step((x, y), 0)  # no trainer: one batch per epoch, pi_1 = 1
        loss.backward()
        grads = {n: p.grad.clone() for n, p in module.named_parameters()}
        module.zero_grad()
        torch.set_rng_state(state)
        out = module.net(x, 5)  # the plain path, with the same noise
    if task == "classification":
        nll = torch.nn.functional.cross_entropy(out.reshape(-1, 3), y.repeat(5), reduction="sum") / 5
    else:
        nll = -torch.distributions.Normal(out, 0.5).log_prob(y.unsqueeze(0)).sum() / 5
    expected = nll + kl_scale * total_kl(module.net)
    torch.testing.assert_close(loss, expected)
    # the training step's gradients equal plain autograd through forward + total_kl
    expected.backward()
    for name, p in module.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-5, msg=name)


class _CheckLoss:
    """Callback: before each backward, recompute the loss with an independently written pi_i.

    The noise is replayed from the RNG state saved at the start of the batch, so the plain path
    ``net(x, S)`` + ``total_kl`` draws what the training step drew (as in the test above).
    """

    def __init__(self, schedule: str, kl_scale: float, anneal_epochs: int) -> None:
        self.schedule, self.kl_scale, self.anneal_epochs = schedule, kl_scale, anneal_epochs
        self.checked: list[tuple[int, int, float]] = []

    def pi(self, epoch: int, i: int, m: int) -> float:
        """pi_i for minibatch i = 1..M (Blundell et al. 2015, eq. 9 for ``blundell``)."""
        if self.schedule == "uniform":
            return 1 / m
        if self.schedule == "blundell":
            return 2 ** (m - i) / (2**m - 1)
        return min(1.0, (epoch + i / m) / self.anneal_epochs) / m

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.batch, self.batch_idx, self.state = batch, batch_idx, torch.get_rng_state()

    def on_before_backward(self, trainer, module, loss):
        x, y = self.batch
        m = trainer.num_training_batches
        with torch.random.fork_rng(), torch.no_grad():
            torch.set_rng_state(self.state)
            out = module.net(x, module.hparams.num_samples_train)
            nll = (
                torch.nn.functional.cross_entropy(out.reshape(-1, 3), y.repeat(out.shape[0]), reduction="sum")
                / out.shape[0]
            )
            pi = self.pi(trainer.current_epoch, self.batch_idx + 1, m)
            expected = nll + self.kl_scale * pi * total_kl(module.net)
        torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-5)
        self.checked.append((trainer.current_epoch, self.batch_idx, pi))


@pytest.mark.parametrize("schedule", ["blundell", "anneal"])
def test_trainer_loss_uses_the_schedule_weight_of_each_of_m_batches(schedule):
    """In a real Trainer with M = 4 minibatches per epoch and 2 epochs, loss_i = NLL_i + lambda pi_i KL.

    Without a Trainer pi is always 1 (M = 1); here pi_i runs through 8/15..1/15 (blundell) and
    1/16..1/4 (anneal over 2 epochs), so a loss that ignores pi_i (or uses 1/M), uses the wrong i or
    M, or ignores the epoch fails. (``uniform`` is 1/M, the common factor of the other two.)
    """
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import DataLoader, TensorDataset

    check = type("CheckLoss", (_CheckLoss, Callback), {})(schedule, kl_scale=0.5, anneal_epochs=2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = BNNModule(
            input_shape=[4],
            num_outputs=3,
            task="classification",
            hidden_sizes=[8],
            num_samples_train=2,
            kl_scale=0.5,
            kl_weighting=schedule,
            anneal_epochs=2,
        )
        data = TensorDataset(torch.randn(12, 4), torch.randint(0, 3, (12,)))
        trainer = pl.Trainer(
            max_epochs=2,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[check],
        )
        trainer.fit(module, DataLoader(data, batch_size=3))
    assert [(e, i) for e, i, _ in check.checked] == [(e, i) for e in range(2) for i in range(4)]
    assert len({pi for _, _, pi in check.checked}) == (4 if schedule == "blundell" else 8)


def test_anneal_by_hand_with_its_defaults():
    """anneal: pi_i = min(1, (epoch + i / M) / N) / M with epoch 0 and N = 1 by default."""
    assert kl_weight("anneal", 0, 4) == pytest.approx((1 / 4) / 4)
    assert kl_weight("anneal", 1, 4, epoch=1, anneal_epochs=4) == pytest.approx(((1 + 2 / 4) / 4) / 4)
    # N = 0 means no warm-up (treated as 1 epoch), not a division by zero
    assert kl_weight("anneal", 0, 4, anneal_epochs=0) == pytest.approx((1 / 4) / 4)


def test_blundell_clamps_batches_past_the_last():
    """A batch index >= M (an epoch longer than Lightning announced) gets the last minibatch's weight."""
    last = 2 ** (4 - 4) / (2**4 - 1)
    assert kl_weight("blundell", 3, 4) == pytest.approx(last)
    assert kl_weight("blundell", 5, 4) == pytest.approx(last)


@pytest.mark.parametrize(("noise_std", "shown"), [(0.0, "0.0"), (-1.0, "-1.0"), (math.inf, "inf"), (math.nan, "nan")])
def test_gaussian_likelihood_refuses_a_noise_std_that_is_not_positive_and_finite(noise_std, shown):
    from lightning_bnn.nn.likelihoods import GaussianLikelihood

    with pytest.raises(ValueError) as info:
        GaussianLikelihood(1, noise="fixed", noise_std=noise_std)
    assert str(info.value) == f"noise_std must be a finite number > 0, got {shown}"
