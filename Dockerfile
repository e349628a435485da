# The users service as one container: the lambda-runtime emulator and the
# three function binaries (register, login, jwks), static musl builds on Alpine.
#
# Runs as a non-root numeric user in group 0, and works unchanged under
# OpenShift's arbitrary UID (restricted SCC): every file belongs to group 0
# with the owner's permissions (g=u), and nothing in the image needs writing.
# No key or credential is in the image: the signing key is mounted
# (JWT_PRIVATE_KEY_FILE) and the store settings come from the environment.
# TLS roots for AWS endpoints come from the Alpine base (ca-certificates-bundle).
#
#   docker build -t users .
#   docker run --user "$(id -u)" -p 8080:8080 \
#     -v "$PWD/.run/dev-signing-key.pem:/keys/private.pem:ro" \
#     -e JWT_PRIVATE_KEY_FILE=/keys/private.pem \
#     -e AWS_ENDPOINT_URL=... -e AWS_REGION=... -e AWS_ACCESS_KEY_ID=... \
#     -e AWS_SECRET_ACCESS_KEY=... users
# (`--user` your own UID, as OpenShift runs an arbitrary one, so the process
# can read your 0600 dev key.)
#
# Build arguments:
#   RUST_IMAGE    builder base (Alpine, so musl is the native libc)
#   ALPINE_IMAGE  runtime base
#   BINARIES      `builder` (default) compiles in the image; `prebuilt` takes
#                 static musl binaries already built into dist/bin/
#                 (emulator, register, login, jwks), as the release job and the
#                 container smoke test (tests/container/smoke.sh) produce them.

ARG RUST_IMAGE=rust:1.95-alpine3.23
ARG ALPINE_IMAGE=alpine:3.23
ARG BINARIES=builder

# --- builder: static musl release binaries -------------------------------------
FROM ${RUST_IMAGE} AS builder
# aws-lc-sys (TLS of the AWS SDK, and jsonwebtoken's crypto) compiles C and
# assembly: a C toolchain and musl headers (build-base), cmake and perl.
# Versions come with the pinned base image's Alpine release.
# hadolint ignore=DL3018
RUN apk add --no-cache build-base cmake musl-dev perl
# On Alpine the system gcc is the musl compiler (Debian would need musl-gcc).
ENV CC_x86_64_unknown_linux_musl=gcc \
    CARGO_TERM_COLOR=never
WORKDIR /src
# The whole workspace (every member's manifest must be there for cargo to
# load it); .dockerignore keeps build output, local state and keys out.
COPY . .
# Cache mounts keep the crates.io downloads and the target directory between
# builds on one machine; the binaries are copied out of the cache in the same
# step, since a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl \
        -p register -p login -p jwks -p emulator \
    && mkdir -p /opt/users/bin \
    && for bin in emulator register login jwks; do \
        cp "target/x86_64-unknown-linux-musl/release/$bin" /opt/users/bin/; \
    done

# --- prebuilt: binaries built outside the image --------------------------------
FROM scratch AS prebuilt
COPY dist/bin/emulator dist/bin/register dist/bin/login dist/bin/jwks /opt/users/bin/

# --- the binaries the runtime stage takes: builder or prebuilt -----------------
# (COPY --from cannot take a build argument; a stage named after it can. The
# WORKDIR makes it a stage of its own rather than an alias, which podman/buildah
# need when building without layer caching: --layers=false.)
FROM ${BINARIES} AS binaries
WORKDIR /opt/users/bin

# --- runtime -------------------------------------------------------------------
FROM ${ALPINE_IMAGE}
# A passwd entry for the image's own user (uid 1001, primary group 0), for
# tools that look the user up. Written directly: BusyBox builds without
# adduser exist, and the line is the same on every base.
RUN echo 'users:x:1001:0:users:/opt/users:/sbin/nologin' >> /etc/passwd \
    && mkdir -p /opt/users/bin \
    && chmod 0555 /opt/users /opt/users/bin
# Everything under /opt/users is owned by root, group 0, and read-only for
# everyone including the runtime user (g=u holds: the group has exactly the
# owner's permissions; nothing there is writable at run time).
COPY --from=binaries --chown=0:0 --chmod=0555 \
    /opt/users/bin/emulator /opt/users/bin/register /opt/users/bin/login /opt/users/bin/jwks \
    /opt/users/bin/
COPY --chown=0:0 --chmod=0444 infra/routes.toml /opt/users/routes.toml
ENV EMULATOR_ROUTES=/opt/users/routes.toml \
    EMULATOR_BIN_DIR=/opt/users/bin \
    PORT=8080
WORKDIR /opt/users
USER 1001
EXPOSE 8080
# No HEALTHCHECK: OpenShift ignores it and probes
# /_emulator/health/live and /_emulator/health/ready itself.
ENTRYPOINT ["/opt/users/bin/emulator"]
