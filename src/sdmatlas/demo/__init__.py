"""The demo: a synthetic world on a real coastline, virtual species and survey data.

What is real: the land/sea mask (global-land-mask, 30 arc-second, derived from
GLOBE). What is simulated: elevation, climate, land cover, every species and
every survey. See the README's "What is real and what is simulated".
"""

from pathlib import Path

#: The demo's territories: real country outlines (Natural Earth 1:50m through the
#: world-atlas npm package), three simulated protected areas and the demo region
#: itself; built by ``scripts/make_demo_territories.py``.
TERRITORIES = Path(__file__).with_name("territories.geojson")
#: The committed demo model's card (beside it, its ONNX and TorchScript files): package
#: data, so the demo runs from an installed wheel or the Docker image too.
DEMO_CARD = Path(__file__).parent / "model" / "demo-sdm.card.yaml"
#: The demo habitat classifier (scripts/train_demo_habitats.py), over DEMO_CARD's species.
DEMO_HABITATS = Path(__file__).parent / "habitats_model" / "demo-habitats.card.yaml"
#: The period the demo's release is registered under (ISO 8601, a WMS TIME value): its
#: simulated climate stands for the present.
DEMO_PERIOD = "2020"
