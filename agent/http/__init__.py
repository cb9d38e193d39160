"""The gateway's own HTTP: live page, /api/state, /events (SSE) and /metrics.

It renders the agent's status snapshot (:class:`agent.status.AgentStatus`),
never Modbus and never the runtime's parts: :mod:`agent.http.state` lays it out
as JSON, :mod:`agent.http.metrics` as gauges; see :mod:`agent.http.server`.
"""
