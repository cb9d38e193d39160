"""The gateway's own HTTP: live page, /api/state, /events (SSE) and /metrics.

It reads the runtime's state (never Modbus) through
:func:`agent.http.state.build_state`; see :mod:`agent.http.server`.
"""
