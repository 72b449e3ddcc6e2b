# syntax=docker/dockerfile:1
# Images of byoc-operator: one Dockerfile, one target per binary (see docs/images.md).
#
#   docker build --target byoc-controller -t ghcr.io/toolforge/byoc-operator/byoc-controller:0.1.0 .
#   docker build --target byoc-webhook    -t ghcr.io/toolforge/byoc-operator/byoc-webhook:0.1.0 .
#
# The build stage and the runtime stage must use the same Debian release (glibc): trixie and
# distroless debian13. In a release pipeline, pin both images by digest.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie
ARG DISTROLESS_IMAGE=gcr.io/distroless/cc-debian13:nonroot

# ---- build: both binaries, once; the registry and target caches survive between builds.
FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p byoc-controller -p byoc-webhook --bins \
 && install -D -m 0755 target/release/byoc-controller /out/byoc-controller \
 && install -D -m 0755 target/release/byoc-webhook /out/byoc-webhook

# ---- runtime: distroless (glibc, libgcc, CA certificates, no shell), non-root 65532:65532,
# matching the chart's securityContext (runAsNonRoot, readOnlyRootFilesystem).
FROM ${DISTROLESS_IMAGE} AS runtime
LABEL org.opencontainers.image.source="https://github.com/toolforge/byoc-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532

FROM runtime AS byoc-controller
LABEL org.opencontainers.image.title="byoc-controller" \
      org.opencontainers.image.description="Turns ByocGrants into byoc.toolforge.org/ namespace labels"
COPY --from=build /out/byoc-controller /usr/local/bin/byoc-controller
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/byoc-controller"]

FROM runtime AS byoc-webhook
LABEL org.opencontainers.image.title="byoc-webhook" \
      org.opencontainers.image.description="Validating admission webhook enforcing the byoc registry policy"
COPY --from=build /out/byoc-webhook /usr/local/bin/byoc-webhook
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/byoc-webhook"]
