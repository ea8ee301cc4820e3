"""Sweeps on Optuna: spec errors, sampled values reaching the fit, pruning, workers sharing a study, resume.

The whole-path tests use a real Optuna SQLite storage, a real MLflow store and tiny digits
fits (1-2 epochs of 4 batches) in subprocesses, as a sweep runs them.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from bnn_testing import CONFIGS, REPO, cli_env
from mlflow import MlflowClient
from optuna.trial import TrialState

from lightning_bnn.cli import sweep
from lightning_bnn.cli.sweep_spec import SweepError, load_spec, param_name

#: every trial: tiny and quick
FIT_ARGS = [
    "--",
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "4",
    "--trainer.enable_checkpointing",
    "false",
    "--test_after_fit",
    "false",
    "--model.num_samples_eval",
    "2",
]


def _write(tmp_path, **content):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def _spec(tmp_path, **content):
    """A tiny digits sweep file; ``content`` overrides its keys."""
    base = {
        "name": "tiny",
        "base": str(CONFIGS / "digits.yaml"),
        "experiment": "sweeps",
        "fixed": {"model.prior.name": "scale_mixture", "model.hidden_sizes": [16]},
        "sampler": "grid",
        "space": {"model.prior.pi": [0.25, 0.75]},
    }
    return _write(tmp_path, **(base | content))


def _argv(spec_path, uri, storage, *more, fit=FIT_ARGS):
    return ["--config", str(spec_path), "--mlflow.tracking_uri", uri, "--storage", storage, *more, *fit]


def _storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/mlruns/optuna.db"


def _children(client, parent_id):
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")


# -- sweep files ---------------------------------------------------------------------------------------
def test_shipped_prior_grid_is_the_papers():
    spec = load_spec(CONFIGS / "sweep_blundell_prior.yaml")
    assert spec.sampler == "grid" and spec.trials == len(spec.grid()) == 27
    choices = {p.key: p.choices for p in spec.space}
    assert sorted(choices["model.prior.pi"]) == [0.25, 0.5, 0.75]
    neg_log = lambda values: sorted(round(-math.log(v), 9) for v in values)  # noqa: E731
    assert neg_log(choices["model.prior.sigma1"]) == [0, 1, 2]
    assert neg_log(choices["model.prior.sigma2"]) == [6, 7, 8]
    assert spec.fixed["model.prior.name"] == "scale_mixture"
    assert spec.base == (CONFIGS / "digits.yaml").resolve()
    assert len(load_spec(CONFIGS / "sweep_num_samples.yaml").grid()) == 4


def test_shipped_tpe_study_searches_the_grids_ranges():
    spec = load_spec(CONFIGS / "sweep_prior_tpe.yaml")
    assert (spec.sampler, spec.trials, spec.pruner) == ("tpe", 27, "median")
    ranges = {p.name: (p.low, p.high, p.log) for p in spec.space}
    assert set(ranges) == {"prior.pi", "prior.sigma1", "prior.sigma2", "rho_init", "lr"}
    assert -math.log(ranges["prior.sigma1"][0]) == pytest.approx(2) and ranges["prior.sigma1"][2]
    assert [-math.log(v) for v in ranges["prior.sigma2"][:2]] == pytest.approx([8, 6])


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


GOOD = {"base": "digits.yaml", "space": {"model.lr": [0.1]}}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (GOOD | {"colour": 1}, r"unknown key\(s\) \['colour'\]"),
        (GOOD | {"sampler": "bayes"}, r"sampler must be one of \['grid', 'random', 'tpe'\], got 'bayes'"),
        (GOOD | {"sampler": {"name": "tpe", "n_startup": 3}}, r"sampler.n_startup is not an option of the tpe"),
        (GOOD | {"pruner": "patient"}, "pruner must be one of"),
        (GOOD | {"pruner": {"name": "median", "n_startup_trials": -1}}, "pruner median: .*n_startup_trials"),
        (
            {"base": "digits.yaml", "sampler": "tpe", "space": {"model.lr": {"type": "float", "low": 1, "high": 0.1}}},
            r"space.model.lr: low \(1\) must not be greater than high \(0.1\)",
        ),
        (
            {"base": "digits.yaml", "space": {"model.lr": {"type": "float", "low": 0.1, "hi": 1}}},
            r"space.model.lr: unknown key\(s\) \['hi'\]",
        ),
        (
            {"base": "digits.yaml", "space": {"model.lr": {"type": "float", "low": 0, "high": 1, "log": True}}},
            r"space.model.lr: log: true needs low > 0",
        ),
        (
            {"base": "digits.yaml", "space": {"model.lr": {"type": "decimal", "low": 0, "high": 1}}},
            r"space.model.lr.type must be one of",
        ),
        (
            {"base": "digits.yaml", "sampler": "grid", "space": {"model.lr": {"type": "float", "low": 0, "high": 1}}},
            r"space.model.lr: the grid sampler needs a list of values",
        ),
        ({"base": "digits.yaml", "space": {"model.lr": []}}, "space.model.lr must be a non-empty list"),
        ({"base": "nope.yaml", "space": {"model.lr": [1]}}, "base config 'nope.yaml' not found"),
        ({"base": "digits.yaml", "grid": {"model.lr": [1]}}, r"grid: is now space:"),
        (GOOD | {"fixed": {"model.lr": 2}}, "both fixed and in space"),
        (GOOD | {"direction": "lowest"}, "direction must be one of"),
        (GOOD | {"trials": 5}, r"trials \(5\) exceeds the grid's 1 points"),
        (GOOD | {"sampler": "random", "trials": 0}, "trials must be a positive integer"),
    ],
)
def test_bad_sweep_files_are_refused_by_name(tmp_path, content, message):
    (tmp_path / "digits.yaml").write_text((CONFIGS / "digits.yaml").read_text())
    with pytest.raises(SweepError, match=message):
        load_spec(_write(tmp_path, **content))


def test_sweep_command_reports_a_bad_file(tmp_path, capsys):
    assert sweep.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_an_unknown_config_field_is_named_before_the_study_exists(tmp_path, tracking_uri, capsys):
    """The fit parser reads one trial's command (--print_config, nothing trained) before any study is made."""
    spec_path = _spec(tmp_path, space={"model.prior.pie": [0.25, 0.75]})
    assert sweep.main(_argv(spec_path, tracking_uri, _storage(tmp_path))) == 2
    err = capsys.readouterr().err
    assert "model.prior.pie" in err and "refuses this sweep's fields" in err
    assert "tiny" not in optuna.get_all_study_names(_storage(tmp_path))  # refused before creating it


def test_dry_run_prints_every_grid_point(tmp_path, capsys):
    assert sweep.main(["--config", str(_spec(tmp_path)), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "--model.prior.pi 0.25" in lines[0] and "--model.prior.pi 0.75" in lines[1]


POP = """
import sys, warnings
import optuna
from lightning_bnn.cli.sweep_trial import open_storage
warnings.simplefilter("ignore")
storage = open_storage(sys.argv[1])
study = optuna.load_study(study_name="queue", storage=storage)
while True:
    trial = study.ask()
    if "fixed_params" not in storage.get_trial_system_attrs(trial._trial_id):  # the queue is empty
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        break
    study.tell(trial, trial.suggest_int("x", 0, 1000))
"""


def test_enqueued_points_are_popped_once_by_concurrent_workers(tmp_path):
    """Two processes pop 30 enqueued points from one SQLite storage: each point runs exactly once.

    Without BEGIN IMMEDIATE (:func:`open_storage`), two processes can pop the same trial:
    one then fails with UpdateFinishedTrialError when the other has already told it.
    """
    url = _storage(tmp_path)
    (tmp_path / "mlruns").mkdir()
    study = optuna.create_study(study_name="queue", storage=url)
    for x in range(30):
        study.enqueue_trial({"x": x})
    procs = [subprocess.Popen([sys.executable, "-c", POP, url], cwd=REPO, env=cli_env()) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    done = sorted(t.params["x"] for t in study.get_trials() if t.state == TrialState.COMPLETE)
    assert done == list(range(30))


# -- whole paths -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sampled_values_reach_the_fit_and_a_hopeless_trial_is_pruned(tmp_path, tracking_uri):
    """Random sampler, 2 trials of 2 epochs; a threshold pruner (val/nll > 0: always) stops each after epoch 0."""
    spec_path = _spec(
        tmp_path,
        sampler="random",
        trials=2,
        seed=3,
        pruner={"name": "threshold", "upper": 0.0},
        fixed={"model.prior.name": "scale_mixture"},
        space={
            "model.prior.pi": {"type": "float", "low": 0.1, "high": 0.9},
            "model.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "model.num_samples_train": {"type": "int", "low": 1, "high": 2},
            "model.hidden_sizes": {"type": "categorical", "choices": [[16], [8, 8]]},
        },
    )
    fit = [*FIT_ARGS, "--trainer.max_epochs", "2"]
    storage = _storage(tmp_path)
    assert sweep.main(_argv(spec_path, tracking_uri, storage, "--jobs", "2", "--no-check", fit=fit)) == 0

    study = optuna.load_study(study_name="tiny", storage=storage)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.PRUNED]
    client = MlflowClient(tracking_uri)
    for trial in trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        params = run.data.params
        # the sampled values are the fit's params
        assert float(params["prior.pi"]) == trial.params["prior.pi"]
        assert float(params["lr"]) == trial.params["lr"]
        assert int(params["num_samples_train"]) == trial.params["num_samples_train"]
        assert json.loads(params["hidden_sizes"]) == json.loads(trial.params["hidden_sizes"])
        assert params["prior.name"] == "scale_mixture"
        # pruned after the first epoch: not a failure, and tagged so
        assert run.info.status == "FINISHED"
        assert run.data.tags["lightning_bnn.pruned"] == "true"
        assert run.data.tags["lightning_bnn.optuna_trial"] == str(trial.number)
        assert run.data.tags["lightning_bnn.optuna_study"] == "tiny"
        assert list(trial.intermediate_values) == [0]
        assert len(client.get_metric_history(run.info.run_id, "val/nll")) == 1  # no second epoch
    parent = client.get_run(trials[0].user_attrs["mlflow_run_id"]).data.tags["mlflow.parentRunId"]
    parent = client.get_run(parent)
    assert parent.data.metrics["sweep/trials_pruned"] == 2
    assert parent.info.status == "FINISHED"
    assert json.loads(parent.data.tags["swept_fields"]) == ["prior.pi", "lr", "num_samples_train", "hidden_sizes"]
    # the parent beat while the worker ran (else a long sweep would show as stalled)
    assert parent.info.start_time <= int(parent.data.tags["lightning_bnn.heartbeat"]) <= parent.info.end_time


def _worker(spec_path, uri, storage, *more):
    cmd = [sys.executable, "-m", "lightning_bnn", "sweep", *_argv(spec_path, uri, storage, "--worker", *more)]
    return subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_workers_run_each_grid_point_exactly_once(tmp_path, tracking_uri):
    from dashboard.runs import list_sweeps, sweep_trials

    spec_path = _spec(tmp_path, space={"model.prior.pi": [0.25, 0.5, 0.75]})
    storage = _storage(tmp_path)
    workers = [_worker(spec_path, tracking_uri, storage, "--no-check") for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert sum("created study" in out for out in outputs) == 1  # one created it, the other joined

    study = optuna.load_study(study_name="tiny", storage=storage)
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert sorted(t.params["prior.pi"] for t in complete) == [0.25, 0.5, 0.75]
    assert all(t.state == TrialState.COMPLETE or t.user_attrs.get("lightning_bnn.surplus") for t in study.trials)
    client = MlflowClient(tracking_uri)
    parent_id = study.user_attrs["lightning_bnn.parent_run_id"]
    children = _children(client, parent_id)
    assert sorted(float(c.data.params["prior.pi"]) for c in children) == [0.25, 0.5, 0.75]  # no point twice
    assert {c.info.run_id for c in children} == {t.user_attrs["mlflow_run_id"] for t in complete}
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["best_run_id"] == study.best_trial.user_attrs["mlflow_run_id"]
    assert parent.data.tags["lightning_bnn.best_trial"] == str(study.best_trial.number)
    assert parent.data.metrics["best/val/nll"] == pytest.approx(study.best_value)

    # the dashboard's data layer finds the sweep, its study and its trials
    sweeps = list_sweeps(tracking_uri)
    assert list(sweeps["run_id"]) == [parent_id]
    assert sweeps["study"][0] == "tiny" and sweeps["storage"][0] == storage
    trials = sweep_trials(tracking_uri, parent_id, sweeps["swept_fields"][0])
    assert sorted(trials["prior.pi"]) == [0.25, 0.5, 0.75]


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(what)


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_repeating_finished_trials(tmp_path, tracking_uri, capsys):
    """SIGKILL the only worker after its first trial; a new worker retries the lost trial, not the finished one."""
    spec_path = _spec(tmp_path)
    storage = _storage(tmp_path)
    worker = _worker(spec_path, tracking_uri, storage, "--no-check", "--heartbeat", "1")

    def one_complete() -> bool:
        if worker.poll() is not None:
            raise AssertionError(worker.communicate()[0])
        if "tiny" not in optuna.get_all_study_names(storage):
            return False
        states = [t.state for t in optuna.load_study(study_name="tiny", storage=storage).trials]
        return states == [TrialState.COMPLETE, TrialState.RUNNING]

    _wait_for(one_complete, 300, "the first trial never finished")
    worker.send_signal(signal.SIGKILL)  # no clean-up: the running trial is left RUNNING, its fit gets SIGTERM
    worker.wait()

    assert sweep.main(_argv(spec_path, tracking_uri, storage, "--heartbeat", "1")) == 0
    out = capsys.readouterr().out
    study = optuna.load_study(study_name="tiny", storage=storage)
    states = [t.state for t in study.trials]
    # trial 0 finished before the kill; trial 1 went stale (no heartbeat), failed, and ran again as trial 2
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[2].system_attrs["failed_trial"] == 1
    assert sorted(t.params["prior.pi"] for t in study.trials if t.state == TrialState.COMPLETE) == [0.25, 0.75]
    assert "trial 0 " not in out and "trial 2 COMPLETE" in out
    client = MlflowClient(tracking_uri)
    children = _children(client, study.user_attrs["lightning_bnn.parent_run_id"])
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert sorted(float(c.data.params["prior.pi"]) for c in finished) == [0.25, 0.75]
    assert os.environ.get("LIGHTNING_BNN_OPTUNA_TRIAL") is None
