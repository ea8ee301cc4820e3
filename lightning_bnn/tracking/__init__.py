"""MLflow, and only here: every write to a run goes through this package.

The store (:mod:`.store`), the run recorder callback (:mod:`.recorder`), the artifact layout
(:mod:`.artifacts`), the plotly figures written beside the JSON documents (:mod:`.figures`),
the OOD callback (:mod:`.ood_callback`), pruning a run into a child run (:mod:`.pruning`), what
the paper's experiments write to their runs (:mod:`.experiment_runs`), model files
(:mod:`.serialization`: safetensors + JSON, never a pickle), the pyfunc model
(:mod:`.pyfunc_model`, logged as an MLflow 3 LoggedModel of its run), the model registry and
``models:/`` URIs (:mod:`.registry`) and loading a run back into a model.
"""
