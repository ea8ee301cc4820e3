"""CI runs reduced versions of each experiment: the same runner, bundled data, small networks, few epochs."""

from __future__ import annotations

import pytest

from lightning_bnn.experiments.paper import main, write_section


@pytest.fixture(scope="module")
def quick_store(tmp_path_factory):
    """(uri, doc) after the reduced classification experiment (four runs, digits, 2 epochs)."""
    root = tmp_path_factory.mktemp("experiments")
    uri, doc = f"sqlite:///{root}/mlflow.db", root / "experiments.md"
    assert main(["classification", "--quick", "--tracking-uri", uri, "--doc", str(doc)]) == 0
    return uri, doc


def test_classification_runs_all_baselines_the_same_way(quick_store):
    from mlflow import MlflowClient

    uri, doc = quick_store
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("paper-classification-digits")
    runs = client.search_runs([experiment.experiment_id])
    by_type = {r.data.tags["layer_type"]: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert set(by_type) == {"bayes", "deterministic", "mc_dropout"}
    assert len([r for r in runs if "mlflow.parentRunId" not in r.data.tags]) == 4
    # same metrics (validation, test, OOD) and the same model artifacts for every variant
    keys = {
        layer_type: {k for k in r.data.metrics if k.startswith(("val/", "test/"))} for layer_type, r in by_type.items()
    }
    assert keys["bayes"] == keys["deterministic"] == keys["mc_dropout"]
    assert {"test/ece", "test/nll", "test/brier", "test/mi", "test/ood_auroc_entropy_noise"} <= keys["bayes"]
    for run in by_type.values():
        assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} >= {"model/weights.safetensors"}
        assert run.data.metrics["wall_time_s"] > 0
    assert by_type["deterministic"].data.metrics["test/mi"] == pytest.approx(0.0, abs=1e-6)
    assert by_type["mc_dropout"].data.metrics["test/mi"] > 0
    text = doc.read_text()
    assert "<!-- experiments:classification-quick:start -->" in text
    for label in ("BBB, Gaussian prior", "BBB, scale-mixture prior", "deterministic (SGD)", "MC dropout"):
        assert f"| {label} |" in text


def test_pruning_the_best_bbb_run(quick_store):
    uri, doc = quick_store
    assert main(["pruning", "--quick", "--tracking-uri", uri, "--doc", str(doc)]) == 0
    block = doc.read_text().split("<!-- experiments:pruning-quick:start -->")[1].split("<!-- experiments:")[0]
    rows = [line for line in block.splitlines() if line.startswith("| ") and "%" in line.split("|")[1]]
    assert [r.split("|")[1].strip() for r in rows] == ["0%", "50%", "75%", "95%", "98%"]
    assert rows[0].split("|")[-2].strip() == "1.24"  # the paper's figure beside ours
    # the best BBB run of each prior is pruned: one column each
    assert block.count("test error % (bbb_") == 2


def test_regression_curve(tmp_path):
    from mlflow import MlflowClient

    uri, doc = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "experiments.md"
    assert main(["regression", "--quick", "--tracking-uri", uri, "--doc", str(doc)]) == 0
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("paper-regression").experiment_id])
    assert {r.data.tags["layer_type"] for r in runs} == {"bayes", "deterministic"}
    for run in runs:
        assert "evaluation/regression_curve.html" in {
            a.path for a in client.list_artifacts(run.info.run_id, "evaluation")
        }
        assert {"test/rmse", "test/nll", "test/picp95", "test/width95"} <= set(run.data.metrics)
    text = doc.read_text()
    assert "| BBB |" in text and "| deterministic |" in text


def test_write_section_replaces_only_its_block(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\nProse stays.\n")
    write_section(doc, "a", "first")
    write_section(doc, "b", "other")
    write_section(doc, "a", "second")
    text = doc.read_text()
    assert text.count("<!-- experiments:a:start -->") == 1
    assert "second" in text and "first" not in text and "other" in text and "Prose stays." in text


@pytest.mark.parametrize("base", ["fashion_mnist.yaml", "mnist.yaml"])
@pytest.mark.parametrize(
    "variant", ["bbb_gaussian.yaml", "bbb_scale_mixture.yaml", "deterministic.yaml", "mc_dropout.yaml"]
)
def test_experiment_configs_compose(base, variant, capsys):
    """Every base + variant parses into a valid config (nothing is loaded or downloaded)."""
    import yaml

    from lightning_bnn.cli.app import main as cli_main
    from lightning_bnn.experiments.paper import EXPERIMENT_CONFIGS

    args = ["fit", "--config", str(EXPERIMENT_CONFIGS / base), "--config", str(EXPERIMENT_CONFIGS / variant)]
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*args, "--print_config"])
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    expected = yaml.safe_load((EXPERIMENT_CONFIGS / variant).read_text())["model"]
    assert config["model"]["layer_type"] == expected["layer_type"]
    if "prior" in expected:
        assert config["model"]["prior"]["name"] == expected["prior"]["name"]
