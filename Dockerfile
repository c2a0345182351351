# Dockerfile - the layer4-lb image: both binaries (layer4-lb, layer4-lb-controller) on Debian 12.
#
#   podman build -t layer4-lb .        (or: buildah bud -t layer4-lb . / docker build -t layer4-lb .)
#
# Two stages: "build" compiles the Release binaries (-O3, LTO) with Debian's -dev packages;
# the runtime stage holds only the shared libraries they link against, a non-root user and the
# two stripped binaries.  docs/container.md describes the image; tests/image/test_image.sh builds
# it with a daemonless builder and runs it.

# ---- build ------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS build

# scripts/deps.sh's list without the test-only packages (clang, libcmocka-dev, libseccomp-dev,
# python3, curl, openssl, iproute2).  Versions are not pinned (hadolint DL3008): Debian stable
# replaces a package's version in the archive with each point release or security fix, so a pin
# would break the build; the revision label and the base image identify what went in.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      liburing-dev libcjson-dev libyaml-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the binaries are built from, so a change to docs/, tests/ or charts/ reuses the
# compiled layer.
COPY CMakeLists.txt ./
COPY common/ common/
COPY dataplane/ dataplane/
COPY controller/ controller/

RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DLB_TESTS=OFF \
 && cmake --build /build --parallel "$(nproc)" \
 && cmake --install /build --prefix /staging --strip

# ---- runtime ----------------------------------------------------------------------------------
FROM debian:bookworm-slim

# The Debian packages that provide the binaries' NEEDED libraries (objdump -p | dpkg -S):
#   liburing.so.2 -> liburing2, libyaml-0.so.2 -> libyaml-0-2, libcjson.so.1 -> libcjson1,
#   libcurl.so.4 -> libcurl4 (the controller; it brings OpenSSL, nghttp2 and the rest itself),
#   libc.so.6 -> libc6 (in the base image).  ca-certificates: the controller's TLS to an API
#   server whose CA it is not given.  tests/image/test_image.sh fails if this list drifts.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      liburing2 libyaml-0-2 libcjson1 libcurl4 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# A fixed non-root uid/gid (65532, as distroless "nonroot") so Kubernetes runAsUser, file
# ownership on the host and the control socket's SO_PEERCRED check all agree on one number.
# /run/layer4-lb is the default control-socket directory; the dataplane creates its socket there.
# (useradd warns that 65532 is above SYS_UID_MAX: harmless, the account is still a system one.)
RUN groupadd --system --gid 65532 layer4-lb \
 && useradd --system --no-log-init --uid 65532 --gid 65532 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin layer4-lb \
 && install -d -o 65532 -g 65532 -m 0750 /run/layer4-lb

COPY --from=build /staging/bin/layer4-lb /staging/bin/layer4-lb-controller /usr/local/bin/

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=
ARG LICENSES=NOASSERTION
LABEL org.opencontainers.image.title="layer4-lb" \
      org.opencontainers.image.description="io_uring Layer 4 load balancer (layer4-lb) and its Kubernetes operator (layer4-lb-controller)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

USER 65532:65532

# The image is named for the dataplane, so it is the entrypoint: `docker run IMAGE --config F`
# runs it, and with no arguments it prints its help instead of starting with no config.  The
# controller runs with --entrypoint layer4-lb-controller; the Helm chart sets `command:` on both
# containers, which replaces the entrypoint, so neither depends on it there.  The binaries
# handle SIGTERM (drain) and SIGHUP (reload) themselves and start no children, so they run as
# PID 1 directly: no shell, no init wrapper.
ENTRYPOINT ["layer4-lb"]
CMD ["--help"]
