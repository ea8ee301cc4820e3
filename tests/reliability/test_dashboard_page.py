"""Must hold 5 at the page level: hostile uploads on the Predict page give messages, and the rest keeps working.

The real app (``dashboard/streamlit_app.py``) runs under Streamlit's AppTest against the
session's real digits run. Bombs, a huge claimed size and a text bomb are uploaded
together with one good digit. Each bad file gets its own error, the good one is still
predicted, no exception escapes, and the store is exactly as before.
"""

from __future__ import annotations

from mlflow import MlflowClient
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import APP
from tests.reliability.hostile_images import good_png, jpeg_claiming, png, ztxt_bomb


def snapshot(uri: str) -> list[tuple]:
    """Runs, statuses, end times, metric and param counts, and artifact listings of a store."""
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return sorted(
        (
            r.info.run_id,
            r.info.status,
            r.info.end_time,
            len(r.data.metrics),
            len(r.data.params),
            tuple(sorted(a.path for a in client.list_artifacts(r.info.run_id))),
        )
        for r in runs
    )


def test_predict_page_survives_hostile_uploads(monkeypatch, digits_run):
    uri, run_id = digits_run
    before = snapshot(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["selected_runs"] = [run_id]
    at.run()
    at.switch_page("views/predict.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.file_uploader(key="image_upload").set_value(
        [
            ("bomb.png", png(20_000, 20_000), "image/png"),
            ("claims.jpg", jpeg_claiming(65_535, 65_535), "image/jpeg"),
            ("text_bomb.png", ztxt_bomb(), "image/png"),
            ("digit.png", good_png(), "image/png"),
        ]
    )
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [str(e.value) for e in at.error]
    assert any(e.startswith("bomb.png:") and "too large" in e for e in errors), errors
    assert any(e.startswith("claims.jpg:") and "too large" in e for e in errors), errors
    assert any(e.startswith("text_bomb.png:") for e in errors), errors
    assert not any(e.startswith("digit.png") for e in errors)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Predicted class"] in [str(i) for i in range(10)]  # the good upload is still predicted
    assert snapshot(uri) == before
