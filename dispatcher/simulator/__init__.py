"""A faithful fake of the WhatsApp Business On-Premises API, for ``make run``, tests and benches.

``Simulator`` (sans-IO core, ``core.py``) holds every behaviour; ``serve``
(``server.py``) puts it on a socket; ``InProcessTransport`` (``transport.py``)
hands it to an actor with no socket; ``cli.main`` runs it standalone.
"""

from dispatcher.simulator.config import SimNumber
from dispatcher.simulator.core import Simulator
from dispatcher.simulator.exchange import SimRequest, SimResponse
from dispatcher.simulator.server import serve
from dispatcher.simulator.state import NumberCounters, Received
from dispatcher.simulator.transport import InProcessTransport
from dispatcher.simulator.webhooks import Poster

__all__ = [
    "InProcessTransport",
    "NumberCounters",
    "Poster",
    "Received",
    "SimNumber",
    "SimRequest",
    "SimResponse",
    "Simulator",
    "serve",
]
