# syntax=docker/dockerfile:1
# azure-costs-proxy in a small non-root image (distroless: no shell, no package manager).
#
#   docker build -t azure-costs-proxy .
#   docker run --rm -p 127.0.0.1:8080:8080 \
#     -e AZURE_COSTS_CLIENT_ID -e AZURE_COSTS_CLIENT_SECRET \
#     -e AZURE_COSTS_PROXY_LISTEN=0.0.0.0:8080 -e AZURE_COSTS_PROXY_ALLOW_REMOTE=true \
#     azure-costs-proxy
#
# Inside a container the proxy must listen on 0.0.0.0 to be reachable through a published port,
# and a non-loopback address needs allow_remote: see README.md "Container". As a sidecar in a
# Kubernetes pod it keeps 127.0.0.1 (deploy/kubernetes/). deploy/container/check-runtime.py
# checks this file's final stage without a container runtime.

FROM rust:1.89-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The dist profile (fat LTO, one codegen unit): the shipped binary, as benchmarked.
RUN cargo build --profile dist --locked \
    && cp target/dist/azure-costs-proxy /azure-costs-proxy

# glibc and libgcc only: everything else (TLS roots included) is inside the binary.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /azure-costs-proxy /usr/local/bin/azure-costs-proxy
# distroless' "nonroot" user, by number so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# 8080: the data plane (BI tools). 9090: /healthz, /readyz, /metrics.
EXPOSE 8080 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/azure-costs-proxy", "healthcheck", "--timeout", "4s"]
ENTRYPOINT ["/usr/local/bin/azure-costs-proxy"]
CMD ["run"]
