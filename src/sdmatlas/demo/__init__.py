"""The demo: a synthetic world on a real coastline, virtual species and survey data.

What is real: the land/sea mask (global-land-mask, 30 arc-second, derived from
GLOBE). What is simulated: elevation, climate, land cover, every species and
every survey. See the README's "What is real and what is simulated".
"""
