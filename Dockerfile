# modelgate container image.
#
#   docker build -t modelgate .
#   docker run -d --name modelgate -p 8080:8080 --read-only --tmpfs /tmp \
#       -v modelgate-keys:/var/lib/modelgate --stop-timeout 20 modelgate
#   docker logs modelgate            # first run: the bootstrap API key, shown once
#   curl -s -H "x-api-key: $KEY" localhost:8080/v2/models/digits
#
# The image ships the demo config (config/modelgate.toml) at /etc/modelgate/modelgate.toml
# and the bundled model at /etc/models/, so the config's relative paths
# (../models/digits.onnx) resolve unchanged. In the container the data plane listens on
# 0.0.0.0:8080; the admin listener (/healthz, /readyz) stays on 127.0.0.1:9090, i.e.
# reachable only from inside the container (e.g. a sidecar or `docker exec`). To serve
# your own routes, mount a config and pass it:
#   docker run ... -v $PWD/my.toml:/etc/modelgate/my.toml:ro modelgate serve --config /etc/modelgate/my.toml
#
# Read-only root: the files written are pid_file and upgrade_sock, which the shipped
# config puts in /tmp, and the API key store: the image points `[auth] key_store` at
# /var/lib/modelgate/keys.json, a volume owned by the modelgate user (with
# `bootstrap_key = true` the first run issues one key and prints it once to the log).
# So run with `--read-only --tmpfs /tmp` and keep the volume (`-v modelgate-keys:/var/lib/modelgate`)
# to keep the keys across containers. Manage keys with
#   docker exec <container> modelgate keys --config /etc/modelgate/modelgate.toml list
# Shutdown: SIGTERM is a graceful shutdown that waits `grace_period` (10s in the shipped
# config) before stopping, so give `docker stop` more time than that (e.g. `-t 20` or
# `--stop-timeout 20` on `docker run`).

# ---------------------------------------------------------------------------- build
FROM rust:1.95-bookworm AS builder

# cmake: Pingora builds zlib-ng (libz-ng-sys); the C compiler comes with the image.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
RUN cargo build --release --locked -p modelgate \
    && install -m 0755 target/release/modelgate /usr/local/bin/modelgate

# ---------------------------------------------------------------------------- runtime
FROM debian:bookworm-slim

RUN groupadd --system --gid 10001 modelgate \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin modelgate

COPY --from=builder /usr/local/bin/modelgate /usr/local/bin/modelgate
COPY config/modelgate.toml /etc/modelgate/modelgate.toml
COPY models/ /etc/models/

# Container variant of the shipped config: data plane on all interfaces (admin stays on
# loopback), key store on the writable volume. Fail the build if the listen line changed
# and the edit did not apply; then validate the result (parses the config, loads the model).
RUN sed -i \
        -e 's/"127\.0\.0\.1:8080"/"0.0.0.0:8080"/' \
        -e 's|^key_store = "[^"]*"|key_store = "/var/lib/modelgate/keys.json"|' \
        /etc/modelgate/modelgate.toml \
    && grep -q '^listen = "0\.0\.0\.0:8080"' /etc/modelgate/modelgate.toml \
    && chmod -R a+rX,go-w /etc/modelgate /etc/models \
    && install -d -o modelgate -g modelgate -m 0700 /var/lib/modelgate \
    && /usr/local/bin/modelgate check /etc/modelgate/modelgate.toml

VOLUME ["/var/lib/modelgate"]

USER modelgate:modelgate
EXPOSE 8080 9090
ENTRYPOINT ["modelgate"]
CMD ["serve", "--config", "/etc/modelgate/modelgate.toml"]
