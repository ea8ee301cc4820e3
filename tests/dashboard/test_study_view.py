"""The sweep view of an Optuna study: trials table, Optuna's figures, and the Compare page (AppTest)."""

from __future__ import annotations

import pytest

from dashboard import charts, runs
from tests.dashboard.test_pages import app, no_exceptions, open_page
from tests.dashboard.test_pages import charts as page_charts


def test_sweep_list_names_the_study(study_store):
    sweeps = runs.list_sweeps(study_store["uri"])
    row = sweeps.iloc[0]
    assert (row["study"], row["storage"], row["metric"]) == ("prior", study_store["storage"], "val/nll")


def test_study_trials_link_each_trial_to_its_run(study_store):
    study = runs.load_study(study_store["storage"], study_store["study"])
    trials = runs.study_trials(study)
    assert list(trials["number"]) == list(range(8))
    assert list(trials["state"]) == ["COMPLETE"] * 7 + ["PRUNED"]
    assert dict(zip(trials["number"], trials["run_id"])) == study_store["runs"]
    assert {"prior.pi", "prior.sigma1", "value", "duration_s"} <= set(trials.columns)


def test_missing_study_is_a_store_error(study_store):
    with pytest.raises(runs.StoreError, match="holds no study 'nope'"):
        runs.load_study(study_store["storage"], "nope")


def test_optuna_figures(study_store):
    study = runs.load_study(study_store["storage"], study_store["study"])
    history = charts.optimisation_history(study, "val/nll")
    assert {t.name for t in history.data} >= {"val/nll", "Best Value"}
    assert len(history.data[0].x) == 7  # the complete trials
    importances = charts.param_importances(study, "val/nll")
    assert set(importances.data[0].y) == {"prior.pi", "prior.sigma1"}
    parallel = charts.parallel_coordinates(study, "val/nll")
    assert list(parallel.layout.xaxis.ticktext) == ["val/nll", "prior.pi", "prior.sigma1"]
    assert sum(t.mode == "lines" for t in parallel.data) == 7  # one line per complete trial
    contour = charts.two_fields(study, "val/nll", ["prior.pi", "prior.sigma1"])
    assert any(t.type == "contour" for t in contour.data)
    single = charts.two_fields(study, "val/nll", ["prior.pi"])
    assert single.data[0].type == "scatter" and len(single.data[0].x) == 7


def test_compare_page_shows_the_study(monkeypatch, study_store):
    at = app(monkeypatch, study_store["uri"])
    open_page(at, "compare")
    no_exceptions(at)
    titles = [f["layout"]["title"]["text"] for f in page_charts(at)]
    assert "val/nll by trial (best so far)" in titles
    assert "Importance of each field for val/nll" in titles
    assert "val/nll across the fields" in titles
    assert "val/nll: prior.pi x prior.sigma1" in titles
    table = at.dataframe(key="study_trials").value
    assert len(table) == 8 and set(table["run_id"]) == set(study_store["runs"].values())
    # one field: a slice plot instead of the contour
    at.multiselect(key="study_pair").set_value(["prior.sigma1"]).run()
    no_exceptions(at)
    assert "val/nll by prior.sigma1" in [f["layout"]["title"]["text"] for f in page_charts(at)]
