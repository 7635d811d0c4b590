# syntax=docker/dockerfile:1
# lvsd in a container. It programs the HOST's IPVS table, so it needs the host's network
# namespace and CAP_NET_ADMIN, and the host kernel must have ip_vs loaded (a container cannot
# load modules: run `modprobe ip_vs` on the host, or install systemd/modules-load.d/lvsd.conf
# as /etc/modules-load.d/lvsd.conf there).
#
#   docker build -t lvsd .
#   docker run -d --name lvsd --init --network host --cap-add NET_ADMIN \
#       -v /etc/lvsd:/etc/lvsd:ro -v /var/lib/lvsd:/var/lib/lvsd lvsd
#
# --init reaps the orphans of exec health checks; logs are JSON lines (`docker logs lvsd`);
# `docker kill -s HUP lvsd` reloads the config.

# BASE_IMAGE: any Debian-like image with python3 (3.11+) and its venv module. Where no registry
# is reachable, packaging/build-image.sh makes one from Debian packages with mmdebstrap, builds
# the wheels on the host and passes PIP_OPTIONS="--no-index --find-links /src/wheels".
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE} AS build
ARG PIP_OPTIONS=""
COPY . /src
RUN python3 -m venv /opt/lvsd \
    && /opt/lvsd/bin/pip install --no-cache-dir ${PIP_OPTIONS} '/src[fast]'

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/lvsd/bin:$PATH
COPY --from=build /opt/lvsd /opt/lvsd
COPY config/lvsd.toml /etc/lvsd/lvsd.toml
# The API (/healthz, /metrics, /status) listens on 127.0.0.1:9163 by default; with host
# networking that is the host's loopback. Set LVSD_HEALTHZ_URL if the config moves it.
EXPOSE 9163
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('LVSD_HEALTHZ_URL', 'http://127.0.0.1:9163/healthz'), timeout=4)"]
ENTRYPOINT ["lvsd"]
CMD ["run", "--config", "/etc/lvsd/lvsd.toml"]
