"""A faithful local KIS Open API simulator (REST + WebSocket), pure Python, no Ray."""

from engine.sim.config import SimulatorConfig
from engine.sim.server import SimulatorHandle, run_simulator, serve_simulator

__all__ = ["SimulatorConfig", "SimulatorHandle", "run_simulator", "serve_simulator"]
