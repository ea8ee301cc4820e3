"""The maths of a Bayesian network, in torch only (no Lightning, no MLflow).

Priors as ``torch.distributions`` objects (:mod:`.priors`), the mean-field Gaussian
posterior and its KL (:mod:`.posterior`), Bayesian linear and convolutional layers with
their gradient estimators (:mod:`.layers`, fused kernels in :mod:`.fused`), networks built
from a config (:mod:`.models`), the conversion of a user's own network (:mod:`.convert`,
with its record and the trusted-modules rule in :mod:`.custom` and an example in
:mod:`.resnet`), likelihoods that own everything that depends on the task
(:mod:`.likelihoods`) and the pure reductions over Monte Carlo samples (:mod:`.predictive`).
"""
