"""MLflow, and only here: every write to a run goes through this package.

The store (:mod:`.store`), the run recorder callback (:mod:`.recorder`), the artifact layout
(:mod:`.artifacts`), the plotly figures written beside the JSON documents (:mod:`.figures`),
the OOD callback (:mod:`.ood_callback`), pruning a run into a child run (:mod:`.pruning`), what
the paper's experiments write to their runs (:mod:`.experiment_runs`), model files
(:mod:`.serialization`: safetensors + JSON, never a pickle), the pyfunc model
(:mod:`.pyfunc_model`, logged as an MLflow 3 LoggedModel of its run), the model registry and
``models:/`` URIs (:mod:`.registry`), loading a run back into a model, and runs' heartbeats and the
stalled-run judgement (:mod:`.heartbeat`, no torch: the dashboard's first screen uses it).
"""
