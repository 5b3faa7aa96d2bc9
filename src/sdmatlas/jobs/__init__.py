"""On-demand prediction jobs: an area of a registered model, predicted and published as
an ephemeral release (docs/ondemand.md)."""
