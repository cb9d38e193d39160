"""energy-agent: Modbus energy meters to live energy, CO2 and carbon intensity."""

__version__ = "0.1.0"
