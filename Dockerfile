# syntax=docker/dockerfile:1
# Multi-stage build of pe-bridge: a static binary (CGO_ENABLED=0) on
# distroless/static (no shell, runs as nonroot). Targets:
#   bridge      (default) the bridge binary, ENTRYPOINT /bridge, CMD run
#   example-go  the Go example handlers of examples/polyglot/go: /worker (default), /approver
# docker build -t pe-bridge .   |   docker build --target example-go -t pe-bridge-example-go .

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
# events and handlers-sdk are modules of their own, replaced by these directories.
COPY events/go.mod events/
COPY handlers-sdk/go.mod handlers-sdk/
RUN go mod download
COPY . .
ARG VERSION=dev
ENV CGO_ENABLED=0
RUN go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/bridge ./cmd/bridge
# The Go examples are a module of their own (examples/polyglot/go/go.mod).
RUN cd examples/polyglot/go && go build -trimpath -ldflags "-s -w" -o /out/ ./worker ./approver

FROM gcr.io/distroless/static-debian12:nonroot AS example-go
COPY --from=build /out/worker /out/approver /
ENTRYPOINT ["/worker"]

FROM gcr.io/distroless/static-debian12:nonroot AS bridge
COPY --from=build /out/bridge /bridge
USER nonroot:nonroot
ENTRYPOINT ["/bridge"]
CMD ["run"]
