# restic-manager server image (docs/install.md#docker). Not built here: the
# machine this was written on has no Docker engine.
#
#   docker build -t restic-manager .
#   docker run -d -p 8080:8080 -v restic-manager:/data \
#     -e RM_PUBLIC_URL=http://backup.example.net:8080 restic-manager

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p restic-manager \
    && install -m 0755 target/release/restic-manager /usr/local/bin/restic-manager

FROM debian:bookworm-slim
# restic for quickstart-style use and `admin` tasks in the container; the
# server itself never runs it. ca-certificates for notification channels.
RUN apt-get update \
    && apt-get install -y --no-install-recommends restic ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin restic-manager \
    && mkdir -p /data \
    && chown restic-manager:restic-manager /data \
    && chmod 0700 /data
COPY --from=build /usr/local/bin/restic-manager /usr/local/bin/restic-manager
# Flags as variables, so `docker run … restic-manager --public-url=…` adds
# to them and `docker exec … restic-manager admin …` finds the same data.
ENV RM_DATA_DIR=/data \
    RM_LISTEN=0.0.0.0:8080
VOLUME /data
EXPOSE 8080
USER restic-manager
ENTRYPOINT ["restic-manager", "server"]
