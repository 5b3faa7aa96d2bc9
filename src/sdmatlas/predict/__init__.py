"""Prediction: run a plugged model over a territory into a Zarr cube, chunk by chunk."""
