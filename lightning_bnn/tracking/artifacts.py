"""The fixed artifact layout of a lightning_bnn MLflow run (read by the dashboard and ``load_model``).

Paths are relative to the run's artifact root::

    config.yaml                          resolved LightningCLI config (YAML)
    model/weights.safetensors            final weights (safetensors, no pickle)
    model/model.json                     {"format", "format_version", "class", "hparams"}
    checkpoints/best.ckpt                best Lightning checkpoint by val/nll
    checkpoints/last.ckpt                runs ended KILLED (Ctrl-C, SIGTERM): the last checkpoint, to resume from
    pyfunc/                              runs recorded before LoggedModels: the MLflow pyfunc model (MLmodel,
                                         model from code); newer runs log it as a LoggedModel named ``pyfunc``
    posterior/summary.json               per-layer histograms of mu, sigma and log10 SNR (schema below)
    posterior/posterior.html             the same as a plotly chart
    evaluation/reliability.json          classification: reliability diagram on the test set
    evaluation/reliability.html
    evaluation/risk_coverage.json        classification: accuracy when the most uncertain test inputs are refused
    evaluation/risk_coverage.html
    evaluation/predictive_band.json      regression: predictive mean and 95% band on the test inputs
    evaluation/predictive_band.html
    data/train_sample.csv                regression: up to 2,000 training points (for the dashboard's fan chart)
    evaluation/ood_entropy.json          classification: OOD entropy histograms and AUROCs (schema in evaluation.ood)
    evaluation/ood_entropy.html
    pruning/table.json                   child runs of ``prune``: fraction, weights_left, test error (MLflow table)
    pruning/table.md                     the same table as markdown
    pruning/snr.json                     child runs of ``prune``: SNR density and CDF in dB (evaluation.prune)
    pruning/snr.html

JSON schemas:

* ``posterior/summary.json``: ``{"layers": [{"name": str, "kind": str, "num_weights": int,
  "mu": HIST, "sigma": HIST, "log10_snr": HIST}], "all": {"log10_snr": HIST}}`` with
  ``HIST = {"edges": [float] (n+1), "counts": [int] (n)}`` and SNR = |mu| / sigma.
* ``evaluation/reliability.json``: ``{"num_bins": 15, "ece": float, "bins": [{"lower": float,
  "upper": float, "confidence": float|null, "accuracy": float|null, "count": int}]}``.
* ``evaluation/predictive_band.json``: ``{"feature": str, "x": [float], "target": [float],
  "mean": [float], "lower": [float], "upper": [float], "train_range": [float, float] | null}``,
  sorted by x (for multi-feature data x is the first feature).
"""

CONFIG = "config.yaml"
MODEL_DIR = "model"
WEIGHTS = "model/weights.safetensors"
MODEL_CONFIG = "model/model.json"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "checkpoints/best.ckpt"
LAST_CHECKPOINT = "checkpoints/last.ckpt"
#: name of the run's pyfunc LoggedModel (``runs:/<run_id>/pyfunc``), and the folder of older runs
PYFUNC_MODEL = "pyfunc"
POSTERIOR_SUMMARY = "posterior/summary.json"
POSTERIOR_CHART = "posterior/posterior.html"
RELIABILITY = "evaluation/reliability.json"
RELIABILITY_CHART = "evaluation/reliability.html"
RISK_COVERAGE = "evaluation/risk_coverage.json"
RISK_COVERAGE_CHART = "evaluation/risk_coverage.html"
PREDICTIVE_BAND = "evaluation/predictive_band.json"
PREDICTIVE_BAND_CHART = "evaluation/predictive_band.html"
TRAIN_SAMPLE = "data/train_sample.csv"
OOD_HISTOGRAM = "evaluation/ood_entropy.json"
OOD_HISTOGRAM_CHART = "evaluation/ood_entropy.html"
PRUNING_TABLE = "pruning/table.json"
PRUNING_TABLE_MD = "pruning/table.md"
PRUNING_SNR = "pruning/snr.json"
PRUNING_SNR_CHART = "pruning/snr.html"
