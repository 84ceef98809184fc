# syntax=docker/dockerfile:1
# Multi-stage build of pe-bridge: a static binary (CGO_ENABLED=0) on
# distroless/static (no shell, runs as nonroot). Targets:
#   bridge      (default) the bridge binary, ENTRYPOINT /bridge, CMD run
#   example-go  the Go example handlers of examples/polyglot/go: /worker (default), /approver
# docker build -t pe-bridge .   |   docker build --target example-go -t pe-bridge-example-go .

#
# The base images are pinned by digest. The digests were taken from public
# Dockerfiles that pin the same tags (several independent repositories each),
# not checked against the registries from the machine that wrote this file (it
# had no Docker daemon). Check or refresh them with
#   docker buildx imagetools inspect golang:1.26.8-bookworm
#   docker buildx imagetools inspect gcr.io/distroless/static-debian12:nonroot
# (or: crane digest IMAGE) and keep the tags: they say what the digest is.
#
# The bridge binary is built by `make build`, the same command CI (.ci/run)
# builds and starts: CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X
# main.version=$VERSION". Any VERSION runs (dev, a commit hash, a semver); the
# micro service gets a semver derived from it (cmd/bridge/README.md, Versions).

FROM golang:1.26.8-bookworm@sha256:a688600ca24f8a4d3ca77f95b0dd40704a9fc787c826660eb7ba0b641b8b175d AS build
WORKDIR /src
COPY go.mod go.sum ./
# events and handlers-sdk are modules of their own, replaced by these directories.
COPY events/go.mod events/
COPY handlers-sdk/go.mod handlers-sdk/
RUN go mod download
COPY . .
ARG VERSION=dev
ENV CGO_ENABLED=0
RUN make build VERSION="${VERSION}" BIN=/out/bridge
# The Go examples are a module of their own (examples/polyglot/go/go.mod).
RUN cd examples/polyglot/go && go build -trimpath -ldflags "-s -w" -o /out/ ./worker ./approver

FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab AS example-go
COPY --from=build /out/worker /out/approver /
ENTRYPOINT ["/worker"]

FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab AS bridge
COPY --from=build /out/bridge /bridge
USER nonroot:nonroot
# /healthz, /readyz and /metrics; loopback is useless in a container.
ENV PE_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["/bridge", "probe"]
ENTRYPOINT ["/bridge"]
CMD ["run"]
