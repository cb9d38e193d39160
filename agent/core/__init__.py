"""The numeric core: counters to interval energy, windows and demand.

Pure numbers: no I/O, no MQTT, no Modbus, no clock reads. Time comes in with
the readings (Unix milliseconds); everything else is arithmetic on arrays.
``kernel`` is the numba implementation (run as plain Python where numba cannot
run: ``jit``), ``reference`` the slow, obviously correct one it is tested against.
"""
