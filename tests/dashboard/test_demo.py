"""The demo runs' commands and progress polling (the training itself is exercised by the empty-store AppTest)."""

from __future__ import annotations

import sys
from pathlib import Path

from dashboard import demo


def test_demo_commands_are_short_cli_fits_into_the_store(tracking_uri):
    assert [d.name for d in demo.DEMOS] == ["toy-regression", "digits"]
    for d in demo.DEMOS:
        command = demo.demo_command(d, tracking_uri)
        assert command[:4] == [sys.executable, "-m", "lightning_bnn", "fit"]
        assert Path(command[command.index("--config") + 1]).is_file()
        assert command[command.index("--mlflow.tracking_uri") + 1] == tracking_uri
        assert command[command.index("--mlflow.run_name") + 1] == f"demo-{d.name}"
        assert int(command[command.index("--trainer.max_epochs") + 1]) == d.epochs <= 60
    # checkpoints land beside the store's mlruns/ folder, not in the current directory
    assert demo.working_dir(tracking_uri) == Path(tracking_uri[len("sqlite:///") :]).parent.parent
    assert demo.working_dir("http://127.0.0.1:5000") == demo.REPO


def test_epochs_done_counts_recorded_epochs(tracking_uri):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.create_run(client.create_experiment("digits"), run_name="demo-digits").info.run_id
    for epoch in range(3):
        client.log_metric(run, demo.EPOCH_METRIC, 0.5, step=epoch)
    assert demo.epochs_done(tracking_uri, ["demo-digits", "demo-toy-regression"]) == {
        "demo-digits": 3,
        "demo-toy-regression": 0,
    }
