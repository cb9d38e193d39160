"""The config file: pydantic models, ``${ENV}`` expansion, and errors a person can fix."""

from agent.config.load import ConfigError, load_config, parse_config
from agent.config.models import AgentConfig

__all__ = ["AgentConfig", "ConfigError", "load_config", "parse_config"]
