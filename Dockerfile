# Production image: build with the Rust toolchain, run on a slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY config config
RUN cargo build --release --locked && strip target/release/registrar

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 registrar
COPY --from=build /src/target/release/registrar /usr/local/bin/registrar
USER registrar
ENV REGISTRAR_BIND=0.0.0.0:8080 REGISTRAR_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3 && grep -q \"200\" <&3"]
ENTRYPOINT ["/usr/local/bin/registrar"]
CMD ["serve"]
