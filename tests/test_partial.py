"""The partial-vs-full experiment (issue 15): its variants are what their labels say, and its table."""

from __future__ import annotations

import pytest

from lightning_bnn.experiments.calibration import COLUMNS
from lightning_bnn.experiments.partial import MODELS, main
from lightning_bnn.nn.convert import bayesian_layer_names
from lightning_bnn.tracking.store import load_model

#: the Bayesian layers of ResidualCNN when all of its convs and linears are converted
FULL = {
    "stem.0",
    *(f"blocks.{b}.conv{c}" for b in range(3) for c in (1, 2)),
    "blocks.1.shortcut.0",
    "blocks.2.shortcut.0",
    "head",
}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("partial")
    uri, doc = f"sqlite:///{root}/mlflow.db", root / "experiments.md"
    doc.write_text("# Experiments\n\nprose\n")
    assert main(["--quick", "--seeds", "0", "--tracking-uri", uri, "--doc", str(doc)]) == 0
    return uri, doc.read_text()


def _runs(uri: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("partial-digits")
    return {r.info.run_name: r.info.run_id for r in client.search_runs([experiment.experiment_id])}


def test_each_variant_makes_exactly_its_layers_bayesian(quick):
    uri, _ = quick
    runs = _runs(uri)
    assert set(runs) == {f"{model}-seed0" for model in MODELS}
    nets = {model: load_model(runs[f"{model}-seed0"], uri).net for model in MODELS}
    names = {model: {n.removeprefix("module.") for n in bayesian_layer_names(net)} for model, net in nets.items()}
    assert names == {"deterministic": set(), "last_layer": {"head"}, "full": FULL}


def test_quick_partial_table(quick):
    uri, text = quick
    block = text.split("<!-- experiments:partial-quick:start -->")[1].split("<!-- experiments:")[0]
    header = next(line for line in block.splitlines() if line.startswith("| model | test error"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["model", *(c[0] for c in COLUMNS), "runs"]
    rows = {line.split("|")[1].strip(): line for line in block.splitlines() if line.count(" ± ") == len(COLUMNS)}
    assert set(rows) == {label for label, _, _ in MODELS.values()}
    assert "| target |" not in block  # no targets for this experiment
    # the point estimate's samples agree: its mutual information is 0 up to rounding; the posteriors' is not
    # (measured on the quick runs, seeds 0 and 1: 2.8e-8 for the point estimate, 0.0024-0.0028 for the last
    # layer, 0.031-0.034 for the full network)
    from mlflow import MlflowClient

    mi = {run.split("-seed")[0]: MlflowClient(uri).get_run(i).data.metrics["test/mi"] for run, i in _runs(uri).items()}
    assert mi["deterministic"] < 1e-5 < 1e-3 < min(mi["last_layer"], mi["full"])
