# Builds the sluice binary with libtorch from PyPI's torch 2.13.0 wheel. The default image scores
# on CPUs; `--build-arg SLUICE_CUDA=true` also installs the CUDA libraries libtorch_cuda.so needs
# (scripts/setup.sh --cuda), for GPU executors (docker compose --profile gpu builds it).
FROM rust:1.95-bookworm AS build
ARG SLUICE_CUDA=false
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV SLUICE_CACHE=/cache
RUN if [ "$SLUICE_CUDA" = true ]; then bash scripts/setup.sh --cuda; else bash scripts/setup.sh; fi \
 && cargo build --release --locked --bin sluice \
 && cp /cache/target/release/sluice /usr/local/bin/sluice

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /cache/torch-venv /cache/torch-venv
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
ENTRYPOINT []
