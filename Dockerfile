# syntax=docker/dockerfile:1
# The rtu-operator image: one binary, `rtu` (operator and worker engine), on an otherwise empty
# root filesystem: the shared libraries `ldd` lists (glibc, OpenSSL, zlib, libgcc_s; librdkafka
# is linked statically), CA certificates, /etc/passwd with nonroot 65532, /tmp. Runs as
# 65532:65532 (the worker pods' fsGroup); the operator renders containers with command ["rtu"].
#
# The root filesystem is assembled by scripts/build-image.sh --rootfs, the script that also
# builds this image without docker as an OCI archive (tests/image.rs runs it), so both images
# have the same content. Build: docker build -t rtu-operator:0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .

ARG RUST_VERSION=1.89

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl-dev pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV CARGO_TARGET_DIR=/src/target
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/build-image.sh --rootfs /rootfs

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
WORKDIR /home/nonroot
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/rtu"]
CMD ["--help"]
LABEL org.opencontainers.image.title="rtu-operator" \
      org.opencontainers.image.description="Kubernetes operator and consumer engine for Fast Data Real-Time Updaters" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
