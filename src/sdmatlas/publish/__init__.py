"""Publishing: turn a complete prediction cube into a servable release."""
