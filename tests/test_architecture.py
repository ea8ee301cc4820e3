"""The seams of the package: its layers, the typed contract, and old model files.

Issue 12's targets, checked on the source itself: ``lightning_bnn.nn`` imports neither
Lightning nor MLflow; no module branches on the task outside the likelihoods and the data
modules; the preprocessing dict is read only by ``Preprocessing.from_dict``; pages stay thin;
model files written before the typed contract still load and predict the same numbers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from bnn_testing import REPO, modules_after_import
from safetensors.torch import load_file

from lightning_bnn.data.preprocessing import (
    ImagePreprocessing,
    NoPreprocessing,
    Preprocessing,
    PreprocessingError,
    TabularPreprocessing,
)
from lightning_bnn.tracking.serialization import load_model_dir

PACKAGE = REPO / "lightning_bnn"
FIXTURES = Path(__file__).parent / "fixtures" / "models_v1"


def sources(*folders: Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    files = [p for folder in folders for p in folder.rglob("*.py") if "__pycache__" not in p.parts]
    return [p for p in files if not any(str(p.relative_to(REPO)).startswith(e) for e in exclude)]


def test_nn_imports_neither_lightning_nor_mlflow():
    imports = (
        "import pkgutil, importlib, lightning_bnn.nn as nn\n"
        "for m in pkgutil.iter_modules(nn.__path__): importlib.import_module('lightning_bnn.nn.' + m.name)"
    )
    assert modules_after_import(imports, ("lightning", "pytorch_lightning", "mlflow")) == []


def _task_comparisons(path: Path) -> list[str]:
    """Comparisons that mention a task (``task == ...``, ``x.task is Task.regression``, ``Task.classification``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            if {"task", "Task"} & names:
                found.append(f"{path.name}:{node.lineno}")
    return found


def test_no_branch_on_the_task_outside_the_likelihoods_and_data_modules():
    allowed = ("lightning_bnn/nn/likelihoods.py", "lightning_bnn/data/")
    files = sources(PACKAGE, REPO / "dashboard", exclude=allowed)
    assert len(files) > 30
    assert [hit for path in files for hit in _task_comparisons(path)] == []


def test_the_task_check_finds_a_branch(tmp_path):
    # the check above must be able to fail: a branch written the usual ways is found
    probe = tmp_path / "probe.py"
    probe.write_text("if module.hparams.task == 'classification':\n    pass\nx = a if t is Task.regression else b\n")
    assert _task_comparisons(probe) == ["probe.py:1", "probe.py:3"]


def test_the_preprocessing_dict_is_read_only_by_from_dict():
    reads = []
    for path in sources(PACKAGE, REPO / "dashboard", exclude=("lightning_bnn/data/preprocessing.py",)):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            touches = "hparams.preprocessing" in line or "preprocessing.get(" in line or "preprocessing[" in line
            if touches and "from_dict(" not in line:
                reads.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert reads == []


def test_pages_are_thin():
    pages = [p for p in (REPO / "dashboard" / "views").glob("*.py") if not p.name.startswith("_")]
    assert {p.name for p in pages} >= {"predict.py", "runs.py", "run_detail.py", "compare.py"}
    assert {p.name: len(p.read_text().splitlines()) for p in pages if len(p.read_text().splitlines()) > 120} == {}


# -- the typed preprocessing -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "preprocessing",
    [
        NoPreprocessing(),
        ImagePreprocessing(channels=1, height=8, width=8, class_names=("a", "b")),
        ImagePreprocessing(height=28, width=28, scale=255 / 126, ink="dark", margin=0.1),
        TabularPreprocessing(("a", "b"), (1.0, 2.0), (3.0, 0.0), ("y",), 5.0, 2.0, train_range=(0.0, 1.0)),
        TabularPreprocessing(("a",), class_names=("no", "yes"), target_names=("label",)),
    ],
)
def test_preprocessing_round_trips_through_its_dict(preprocessing):
    record = preprocessing.to_dict()
    assert record["format_version"] == 1 and record["kind"] == preprocessing.kind
    assert Preprocessing.from_dict(record) == preprocessing


def test_tabular_transform_and_inverse_by_hand():
    pre = TabularPreprocessing(("a", "b"), (1.0, 10.0), (2.0, 5.0), ("y",), 100.0, 4.0)
    x = pre.transform([[3.0, 0.0], [1.0, 20.0]])
    torch.testing.assert_close(x, torch.tensor([[1.0, -2.0], [0.0, 2.0]]))
    torch.testing.assert_close(pre.inverse_features(x.double()), torch.tensor([[3.0, 0.0], [1.0, 20.0]]).double())
    mean, std = pre.inverse(torch.tensor([[0.5]]), torch.tensor([[0.25]]))
    assert (float(mean), float(std)) == (102.0, 1.0)  # 0.5 * 4 + 100, 0.25 * 4
    with pytest.raises(PreprocessingError, match="rows must have 2 features"):
        pre.transform([[1.0, 2.0, 3.0]])


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"kind": "audio"}, "preprocessing kind 'audio' is unknown"),
        ({"kind": "image", "format_version": 9}, "format_version 9 is not supported"),
        ({"kind": "image", "height": 0}, "height must be a positive integer"),
        ({"kind": "tabular", "feature_names": ["a"], "colour": 1}, r"unknown field\(s\) \['colour'\]"),
        ({"kind": "tabular", "feature_names": ["a", "b"], "feature_mean": [0.0]}, "one value per feature"),
        ([1, 2], "must be a JSON object"),
        ({"format_version": 1, "height": 8}, "preprocessing kind None is unknown"),  # current records name a kind
    ],
)
def test_bad_preprocessing_records_name_the_problem(record, message):
    with pytest.raises(PreprocessingError, match=message):
        Preprocessing.from_dict(record)


def test_records_of_the_previous_format_without_a_kind_are_read_by_their_fields():
    assert Preprocessing.from_dict({"target_mean": 10.0, "target_std": 2.0}).inverse_target(torch.tensor(1.0)) == 12.0
    assert isinstance(Preprocessing.from_dict({"height": 8, "width": 8}), ImagePreprocessing)
    assert Preprocessing.from_dict({"class_names": ["a"]}) == NoPreprocessing(class_names=("a",))


# -- model files written before the typed contract -----------------------------------------------
def test_model_files_written_by_the_previous_format_still_load_and_predict_alike():
    """``tests/fixtures/models_v1`` was written by lightning_bnn at commit be82358 (dict preprocessing).

    The reference outputs were drawn there with ``torch.manual_seed(1)`` then
    ``sample_predictions(x, 5)``; a seeded generator draws the same numbers here, so the
    predictions must agree to float rounding (tolerance 1e-6).
    """
    reference = load_file(str(FIXTURES / "reference.safetensors"))
    image = load_model_dir(FIXTURES / "image_v1")
    assert isinstance(image.preprocessing, ImagePreprocessing) and image.preprocessing.height == 8
    probs = image.sample_predictions(reference["x_img"], 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(probs, reference["probs"], atol=1e-6, rtol=0)
    tabular = load_model_dir(FIXTURES / "tabular_v1")
    assert isinstance(tabular.preprocessing, TabularPreprocessing) and tabular.preprocessing.target_std == 3.0
    mean, std = tabular.sample_predictions(reference["x_tab"], 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(mean, reference["mean"], atol=1e-5, rtol=0)
    torch.testing.assert_close(std, reference["std"], atol=1e-6, rtol=0)
    assert tabular.output_names() == ["y"]


def test_the_runs_page_needs_no_torch():
    """The first screen lists MLflow runs: its modules must not wait for torch, Lightning or the model code."""
    imports = "import dashboard.runs, dashboard.charts, dashboard.demo, dashboard.views._shared"
    assert modules_after_import(imports, ("torch", "lightning", "lightning_bnn.training")) == []
