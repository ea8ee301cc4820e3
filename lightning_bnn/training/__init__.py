"""Training: the LightningModule (:mod:`.module`) and the ELBO's KL weighting schedules (:mod:`.objectives`)."""
