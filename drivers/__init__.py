"""Modbus drivers: transport, request planning, decoding, and meter profiles as data.

Nothing here knows about MQTT, the core or the agent's config: `agent` uses
`drivers`, never the reverse.
"""
