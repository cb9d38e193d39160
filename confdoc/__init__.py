"""Config diagnostics: YAML documents read with limits, every value with its line.

Configs (the gateway's, the bridge's) and meter profiles are YAML documents
edited by hand, and an error must name the file, the line, the field and the
fix. That machinery is neither Modbus knowledge nor the agent's: it lives here,
on its own (PyYAML and pydantic only), so ``drivers`` (profiles) and ``agent``
(configs, the bridge) both build on it and neither has to import the other.
"""
