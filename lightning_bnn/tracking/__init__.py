"""MLflow, and only here.

The store (:mod:`.store`), the run recorder callback (:mod:`.recorder`), the artifact layout
(:mod:`.artifacts`), model files (:mod:`.serialization`: safetensors + JSON, never a pickle), the
pyfunc model (:mod:`.pyfunc_model`) and loading a run back into a model.
"""
