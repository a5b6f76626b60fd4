"""A real local provider server for tests, benchmarks and the demo.

    server.py    ProviderServer (uvicorn in a background thread) and the CLI
                 (`python -m enrichers.testing.server --help`)
    app.py       the ASGI app: simulated provider endpoints, faults, admin, received log
    knobs.py     Knobs: fault injection and each simulated provider's observation model
    world.py     the world file `enrich synth` writes, and how providers observe it
    entries.py   provider_entries(base_url): enrich.yaml entries that fit the server

`server` is not imported here, so that `python -m enrichers.testing.server` runs it fresh.
"""

from enrichers.testing.entries import NAMES, provider_entries
from enrichers.testing.knobs import Endpoint, Knobs, SimProfile
from enrichers.testing.world import LABELS, TOPICS, World, WorldError

__all__ = [
    "LABELS",
    "NAMES",
    "TOPICS",
    "Endpoint",
    "Knobs",
    "SimProfile",
    "World",
    "WorldError",
    "provider_entries",
]
