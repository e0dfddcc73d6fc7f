# Image of the Nocturna Chart Service (Node.js 20 + Chromium's headless shell for Puppeteer).
#
# The build context is the service checkout (package.json, package-lock.json, src/, public/);
# this file lives in nocturna-infra and is passed with -f, so it copies nothing of ours.
# Needs BuildKit (DOCKER_BUILDKIT=1) for the cache mounts; there is deliberately no `# syntax=`
# line, because BuildKit would pull that frontend image from a registry. See docs/dockerfile.md.
#
# Run it with an init as PID 1 (`docker run --init`, `init=True` on a Pulumi docker.Container):
# Docker's tini reaps Chromium's orphaned children and forwards SIGTERM to node, which then
# drains for up to 30 s, so give `docker stop` a timeout above that (e.g. -t 40).
# Writable paths needed at runtime, everything else can be read-only (`--read-only`):
#   /tmp               Chromium profiles and temporary files   (tmpfs)
#   /home/node/.config Chromium's crashpad and settings         (tmpfs)

ARG BASE_IMAGE=node:20-slim

FROM ${BASE_IMAGE} AS base
# PEM text of extra CA certificates to trust, e.g. a TLS-intercepting proxy's. Public
# certificates only: build arguments are visible in the image history.
ARG EXTRA_CA_CERTS=""
ARG DEBIAN_FRONTEND=noninteractive
# One file per certificate, so update-ca-certificates links each of them in /etc/ssl/certs.
# printenv rather than $EXTRA_CA_CERTS keeps the PEM text out of the build log's step names.
RUN if [ -n "$(printenv EXTRA_CA_CERTS)" ]; then \
      mkdir -p /usr/local/share/ca-certificates \
      && printenv EXTRA_CA_CERTS | awk ' \
           /-----BEGIN CERTIFICATE-----/ { n++; inside = 1; file = sprintf("/usr/local/share/ca-certificates/nocturna-extra-%02d.crt", n) } \
           inside { print > file } \
           /-----END CERTIFICATE-----/ { inside = 0; close(file) }' \
      && { ls /usr/local/share/ca-certificates/nocturna-extra-*.crt >/dev/null 2>&1 \
           || { echo 'EXTRA_CA_CERTS: no PEM certificate found' >&2; exit 1; }; } \
      && if command -v update-ca-certificates >/dev/null; then update-ca-certificates; fi; \
    fi
# The browser Puppeteer drives, a Debian package whose binary is /usr/bin/<package>:
#   chromium-headless-shell  Chromium's headless shell (default): the same Chromium, headless
#                            only, without GTK, dbus, cups or avahi; about 200 MB smaller
#   chromium                 the full browser, for a service that needs a headful feature
# PUPPETEER_EXECUTABLE_PATH below follows it; so must the stack's puppeteerExecutablePath.
ARG CHROMIUM_PACKAGE=chromium-headless-shell
# The official image's docker-clean hook deletes downloaded .debs; removing it keeps them in the
# cache mount. The package lists live on a cache mount too, so none end up in the image.
# The browser's Depends bring the libraries it needs (nss, gbm, pango, fontconfig, ...).
RUN --mount=type=cache,id=nocturna-apt-cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,id=nocturna-apt-lists,target=/var/lib/apt/lists,sharing=locked \
    case "$CHROMIUM_PACKAGE" in \
      chromium-headless-shell|chromium) ;; \
      *) echo "CHROMIUM_PACKAGE: must be chromium-headless-shell or chromium; got '$CHROMIUM_PACKAGE'" >&2; exit 1 ;; \
    esac \
    && rm -f /etc/apt/apt.conf.d/docker-clean \
    && echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' >/etc/apt/apt.conf.d/keep-cache \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
         ca-certificates \
         "$CHROMIUM_PACKAGE" \
         fonts-liberation \
         fonts-noto-color-emoji \
    && update-ca-certificates
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    PUPPETEER_EXECUTABLE_PATH=/usr/bin/${CHROMIUM_PACKAGE} \
    PUPPETEER_SKIP_DOWNLOAD=true

FROM base AS dependencies
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,id=nocturna-npm-cache,target=/root/.npm \
    npm ci --omit=dev --no-audit --no-fund

FROM base AS production
ENV NODE_ENV=production \
    PORT=3011 \
    HOST=0.0.0.0
WORKDIR /app
# Owned by root: the node user can read the app but not change it.
COPY --from=dependencies /app/node_modules ./node_modules
COPY package.json package-lock.json ./
COPY public ./public
COPY src ./src
USER node
EXPOSE 3011
STOPSIGNAL SIGTERM
# The app's own node, no curl: exit 0 only on a 200 from /health within the timeout.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "require('http').get({host: '127.0.0.1', port: process.env.PORT || 3011, path: '/health', timeout: 4000}, (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('timeout', () => process.exit(1)).on('error', () => process.exit(1))"]
CMD ["node", "src/app.js"]
# Last, so a new revision changes only the image config, never a cached layer.
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="nocturna-chart-service" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
