"""The central bridge: MQTT (shared subscription) to InfluxDB, acknowledged after the write.

Imports only the payload contract, the config models and its two clients (paho,
influxdb-client): no Modbus drivers, no numba, so it installs and starts lean on
a central server.
"""
