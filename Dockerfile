# syntax=docker/dockerfile:1
#
# The remaudit image: one binary for `serve`, `controller`, `retention`,
# `migrate` and the command-line tools. Build it from the repository root:
#
#   docker build -t remaudit:0.1.0 .
#
# The build stage compiles the binary as the README does (locked
# dependencies, release profile). The runtime stage is distroless: glibc,
# CA certificates and tzdata, no shell, no package manager, running as the
# numeric user 65532. The binary writes nothing outside mounted volumes, so
# the container runs with a read-only root filesystem; the embedded SQLite
# default needs a writable volume, which is why the Helm chart uses
# PostgreSQL.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# The cache mounts keep crates.io downloads and build artefacts between
# builds; the binary is copied out of the cached target directory in the
# same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin remaudit \
    && install -D -m 0755 target/release/remaudit /out/remaudit

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/remaudit /usr/local/bin/remaudit
USER 65532:65532
WORKDIR /home/nonroot
# 8085: serve (API, /healthz, /readyz, /metrics); 9090: the controller's /metrics and /healthz.
EXPOSE 8085 9090
ENTRYPOINT ["/usr/local/bin/remaudit"]
CMD ["--help"]
