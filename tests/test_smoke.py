from lightning_bnn import load_model


def test_digits_run_reloads(digits_run):
    uri, run_id = digits_run
    model = load_model(run_id, tracking_uri=uri)
    assert model.hparams.task == "classification"
