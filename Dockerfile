# The one image every modelmesh component runs: controller, mesh sidecar, adapters, ONNX runtime.
# Build: docker build -t modelmesh/modelmesh:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN bash scripts/setup-build.sh && cargo build --release --locked -p modelmesh

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/modelmesh /usr/local/bin/modelmesh
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/modelmesh"]
