# lumberd container image: `make image` (docker build -t lumberd:<crate version> .).
# Runs as the numeric non-root user 10001 with a read-only root filesystem; the only
# writable path is the data volume /var/lib/lumberd (the file output's data dir and a
# dead-letter file, if configured). helm/test.sh checks this file against the chart.

# The toolchain the crate is built and tested with (its dependencies need >= 1.88).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Cargo.toml names the bench target, so benches/ is part of the manifest.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --locked --release \
 && mkdir -p /out/lumberd/data

# glibc, libgcc and CA certificates (for https:// Elasticsearch hosts), no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/lumberd /usr/local/bin/lumberd
COPY --from=build --chown=10001:10001 /out/lumberd /var/lib/lumberd
COPY config/lumberd.toml /etc/lumberd/lumberd.toml
ENV LUMBERD_OUTPUT_DATA_DIR=/var/lib/lumberd/data
USER 10001:10001
VOLUME ["/var/lib/lumberd"]
# Beats (Lumberjack v2), then admin HTTP (/metrics, /healthz, /readyz).
EXPOSE 5044 9600
ENTRYPOINT ["/usr/local/bin/lumberd"]
CMD ["serve", "--config", "/etc/lumberd/lumberd.toml"]
