"""The config file: pydantic models, ``${ENV}`` expansion, and errors a person can fix."""

from agent.config.load import (
    ConfigError,
    load_bridge_config,
    load_config,
    parse_bridge_config,
    parse_config,
)
from agent.config.models import AgentConfig, BridgeConfig

__all__ = [
    "AgentConfig",
    "BridgeConfig",
    "ConfigError",
    "load_bridge_config",
    "load_config",
    "parse_bridge_config",
    "parse_config",
]
