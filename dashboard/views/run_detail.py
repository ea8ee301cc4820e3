"""Run detail: params, tags, curves, the posterior (mu, sigma, signal-to-noise) and the logged evaluation."""

import streamlit as st

from dashboard import charts, runs
from dashboard.views import _shared as shared
from lightning_bnn.tracking import artifacts

uri, table, run_id = shared.run_page("Run detail", key="detail_run")

try:
    info = shared.run_info(uri, run_id)
except runs.StoreError as err:
    st.error(f"Tracking store unavailable: {err}")
    st.stop()

cols = st.columns(4)
cols[0].metric("Status", info["status"])
cols[1].metric("Dataset", str(info.get("dataset") or "?"))
cols[2].metric("Prior", str(info.get("prior") or "?"))
duration = info.get("duration_s")
cols[3].metric("Duration", f"{duration:.1f} s" if duration is not None else "running")
st.caption(f"run id `{run_id}` · experiment {info['experiment']} · artifacts {info['artifact_uri']}")

curves, posterior, evaluation, params, tags = st.tabs(["Curves", "Posterior", "Evaluation", "Params", "Tags"])

with curves:
    metrics = info["metrics"]
    keys = [k for k in metrics["metric"] if k != "epoch"]
    if not keys:
        st.info("This run logged no metrics yet.")
    else:
        default = next((k for k in ("val/acc", "val/rmse", "val/nll") if k in keys), keys[0])
        metric = st.selectbox("Metric", keys, index=keys.index(default), key="detail_metric")
        history = shared.metric_history(uri, (run_id,), metric)
        st.plotly_chart(charts.learning_curves(history, metric, "epoch"), key="detail_curve")
        st.dataframe(metrics, hide_index=True, key="detail_metrics")

with posterior:
    try:
        summary = shared.json_artifact(uri, run_id, artifacts.POSTERIOR_SUMMARY)
        st.plotly_chart(charts.posterior_histograms(summary), key="posterior_hist")
        st.plotly_chart(charts.snr_density(summary), key="snr")
        st.caption(
            "Signal-to-noise |μ|/σ per weight: weights with a low ratio can be pruned with little loss "
            "(Blundell et al. 2015, section 5.1)."
        )
    except runs.ArtifactMissing as err:
        st.warning(f"Posterior summary not logged for this run: {err}.")
    except (KeyError, TypeError, ValueError) as err:
        st.error(f"The posterior summary of this run is malformed: {err}")

with evaluation:
    for i, (path, chart, kind) in enumerate(charts.EVALUATION_CHARTS.get(info.get("task"), [])):
        try:
            st.plotly_chart(chart(shared.json_artifact(uri, run_id, path)), key=f"evaluation_chart_{i}")
        except runs.ArtifactMissing as err:
            st.warning(f"{kind} not logged for this run: {err}.")
        except (KeyError, TypeError, ValueError) as err:
            st.error(f"The {kind.lower()} of this run is malformed: {err}")

with params:
    st.dataframe(info["params"], hide_index=True, key="detail_params")

with tags:
    st.dataframe(info["tags"], hide_index=True, key="detail_tags")
