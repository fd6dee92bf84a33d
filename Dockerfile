# syntax=docker/dockerfile:1
# outbox-relay: one static-ish binary on a slim Debian base (ca-certificates for https receivers).
#   docker build -t outbox-relay .
#   docker run --rm -e DATABASE_URL=postgres://... outbox-relay migrate
#   docker run --rm -e DATABASE_URL=postgres://... -e OUTBOX_ADMIN_TOKEN=... -p 9464:9464 outbox-relay

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin outbox-relay \
    && cp target/release/outbox-relay /usr/local/bin/outbox-relay

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home relay
COPY --from=build /usr/local/bin/outbox-relay /usr/local/bin/outbox-relay
COPY examples /usr/share/outbox-relay/examples
USER relay
# /metrics, /healthz, /readyz and /api. Listening beyond loopback requires OUTBOX_ADMIN_TOKEN.
EXPOSE 9464
ENTRYPOINT ["outbox-relay"]
CMD ["run", "--listen", "0.0.0.0:9464"]
