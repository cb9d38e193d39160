# syntax=docker/dockerfile:1
# The central broker for compose.yaml: Debian's mosquitto, so that
# deploy/mosquitto/mosquitto.conf (written for Debian's layout: /run/mosquitto,
# /var/lib/mosquitto, /var/log/mosquitto, user mosquitto) runs unchanged, as it does
# in the tests on Debian.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends mosquitto=2.* \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o mosquitto -g mosquitto -m 0755 /run/mosquitto /var/lib/mosquitto \
       /var/log/mosquitto
EXPOSE 8883
VOLUME ["/var/lib/mosquitto", "/var/log/mosquitto"]
# mosquitto starts as root and switches to user mosquitto (its default `user`).
CMD ["/usr/sbin/mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"]
