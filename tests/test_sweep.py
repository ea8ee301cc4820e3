"""Grid sweeps: parent/child MLflow runs, parallel trials, resuming (issue 8)."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from bnn_testing import CONFIGS

from lightning_bnn.cli import sweep
from lightning_bnn.cli.sweep import SweepError, load_spec, param_name


def test_shipped_prior_grid_is_the_papers():
    spec = load_spec(CONFIGS / "sweep_blundell_prior.yaml")
    trials = spec.trials()
    assert len(trials) == 27
    assert sorted(spec.grid["model.prior.pi"]) == [0.25, 0.5, 0.75]
    neg_log = lambda values: sorted(round(-math.log(v), 9) for v in values)  # noqa: E731
    assert neg_log(spec.grid["model.prior.sigma1"]) == [0, 1, 2]
    assert neg_log(spec.grid["model.prior.sigma2"]) == [6, 7, 8]
    assert spec.fixed["model.prior.name"] == "scale_mixture"
    assert spec.base == (CONFIGS / "digits.yaml").resolve()
    assert len(load_spec(CONFIGS / "sweep_num_samples.yaml").trials()) == 4


@pytest.mark.parametrize(
    ("key", "param"),
    [
        ("model.prior.pi", "prior.pi"),
        ("model.init_args.lr", "lr"),
        ("model.num_samples_train", "num_samples_train"),
        ("data.init_args.batch_size", "data.batch_size"),
        ("data.batch_size", "data.batch_size"),
        ("trainer.max_epochs", "trainer.max_epochs"),
        ("seed_everything", "seed"),
    ],
)
def test_param_names_follow_the_runs_params(key, param):
    assert param_name(key) == param


def _write(tmp_path, **content):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"base": "digits.yaml", "grid": {"model.lr": [1]}, "colour": 1}, r"unknown key\(s\) \['colour'\]"),
        ({"base": "digits.yaml", "grid": {"model.lr": [1]}, "method": "bayes"}, "method must be one of"),
        ({"base": "nope.yaml", "grid": {"model.lr": [1]}}, "base config 'nope.yaml' not found"),
        ({"base": "digits.yaml", "grid": {"model.lr": []}}, "grid.model.lr must be a non-empty list"),
        ({"base": "digits.yaml"}, "grid must map config keys"),
        ({"base": "digits.yaml", "grid": {"model.lr": [1]}, "fixed": {"model.lr": 2}}, "both fixed and swept"),
        ({"base": "digits.yaml", "grid": {"model.lr": [1]}, "mode": "lowest"}, "mode must be 'min' or 'max'"),
    ],
)
def test_bad_sweep_files_are_refused_by_name(tmp_path, content, message):
    (tmp_path / "digits.yaml").write_text((CONFIGS / "digits.yaml").read_text())
    with pytest.raises(SweepError, match=message):
        load_spec(_write(tmp_path, **content))


def test_sweep_command_reports_a_bad_file(tmp_path, capsys):
    assert sweep.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_runs_in_parallel_and_resumes(tmp_path, tracking_uri, capsys):
    """2 trials, 2 at a time; a rerun runs none; an interrupted trial (and only it) runs again."""
    from mlflow import MlflowClient

    from dashboard.runs import list_sweeps, sweep_trials

    spec_path = _write(
        tmp_path,
        name="tiny",
        base=str(CONFIGS / "digits.yaml"),
        experiment="sweeps",
        metric="val/acc",
        mode="max",
        fixed={"model.prior.name": "scale_mixture", "model.hidden_sizes": [16]},
        grid={"model.prior.pi": [0.25, 0.75]},
    )
    fit_args = ["--", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", "--test_after_fit", "false"]
    argv = ["--config", str(spec_path), "--jobs", "2", "--mlflow.tracking_uri", tracking_uri, *fit_args]
    assert sweep.main(argv) == 0, capsys.readouterr().err

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("sweeps").experiment_id
    parents = client.search_runs([experiment], filter_string="tags.`lightning_bnn.sweep` = 'true'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert json.loads(parent.data.tags["swept_fields"]) == ["prior.pi"]
    assert parent.data.metrics["sweep/trials_finished"] == 2
    children = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 2
    assert sorted(float(c.data.params["prior.pi"]) for c in children) == [0.25, 0.75]
    assert all(c.info.status == "FINISHED" and c.data.params["prior.name"] == "scale_mixture" for c in children)
    assert parent.data.tags["best_run_id"] in {c.info.run_id for c in children}

    # the dashboard's data layer finds the sweep and its trials by field
    sweeps = list_sweeps(tracking_uri)
    assert list(sweeps["run_id"]) == [parent.info.run_id]
    trials = sweep_trials(tracking_uri, parent.info.run_id, sweeps["swept_fields"][0])
    assert sorted(trials["prior.pi"]) == [0.25, 0.75]
    assert "val/acc" in trials.columns

    # rerun: nothing to do
    capsys.readouterr()
    assert sweep.main(argv) == 0
    assert "2 already finished, 0 to run" in capsys.readouterr().out
    # an interrupted trial (not FINISHED) is run again, the others are not
    broken = children[0]
    client.set_terminated(broken.info.run_id, status="KILLED")
    assert sweep.main(argv) == 0
    assert "1 already finished, 1 to run" in capsys.readouterr().out
    children = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 3 and sum(c.info.status == "FINISHED" for c in children) == 2
    assert len(client.search_runs([experiment], filter_string="tags.`lightning_bnn.sweep` = 'true'")) == 1
