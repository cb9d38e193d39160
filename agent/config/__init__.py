"""The config file: pydantic models, ``${ENV}`` expansion, and errors a person can fix.

Names are loaded on first use: importing ``agent.config.bridge`` (the central
bridge) must not pull in the gateway's loader, which needs the drivers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.config.bridge import BridgeConfig, load_bridge_config, parse_bridge_config
    from agent.config.document import ConfigError
    from agent.config.load import load_config, parse_config
    from agent.config.models import AgentConfig

_WHERE = {
    "AgentConfig": "agent.config.models",
    "BridgeConfig": "agent.config.bridge",
    "ConfigError": "agent.config.document",
    "load_bridge_config": "agent.config.bridge",
    "load_config": "agent.config.load",
    "parse_bridge_config": "agent.config.bridge",
    "parse_config": "agent.config.load",
}

__all__ = [
    "AgentConfig",
    "BridgeConfig",
    "ConfigError",
    "load_bridge_config",
    "load_config",
    "parse_bridge_config",
    "parse_config",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'agent.config' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
