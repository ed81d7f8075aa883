# Builds the sluice binary with libtorch from PyPI's torch 2.13.0 wheel (CPU use; the CUDA
# libraries of the wheel load on GPU nodes where present).
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV SLUICE_CACHE=/cache
RUN bash scripts/setup.sh && cargo build --release --locked --bin sluice \
 && cp /cache/target/release/sluice /usr/local/bin/sluice

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /cache/torch-venv /cache/torch-venv
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
ENTRYPOINT []
