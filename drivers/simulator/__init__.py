"""Simulated meters served over real Modbus, for tests, demos and commissioning practice."""
