# The tdxsim command in a small image, for deploy/k8s/fuzz-job.yaml:
#   docker build -t tdxsim:latest .
# The toolchain go.mod names (go 1.26.8), so the build needs no toolchain download.
FROM golang:1.26.8 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/tdxsim ./cmd/tdxsim

FROM debian:stable-slim
COPY --from=build /out/tdxsim /usr/local/bin/tdxsim
WORKDIR /work
ENTRYPOINT ["tdxsim"]
