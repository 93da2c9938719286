# syntax=docker/dockerfile:1
# cTrip payment scanner image.
#
#   docker build -t ctrip-scanner .
#   docker run --rm -v $PWD/scanner.toml:/etc/scanner/scanner.toml:ro \
#       -e DATABASE_URL=postgresql://scanner:...@db/payments -p 127.0.0.1:9464:9464 \
#       --stop-timeout 45 ctrip-scanner
#   docker run --rm ... ctrip-scanner migrate upgrade      # any `scanner` subcommand
#
# Without a Docker engine or a registry: `bash .ci/container-image` builds this same file with
# podman (docs/install.md, "Container").
#
# Layout: a virtualenv at /opt/venv (on PATH) holding the runtime dependencies and the scanner,
# installed from a wheel (no source tree, no pip or setuptools); Alembic's scripts are the
# package's data files (/opt/venv/share/ctrip-scanner), found by scanner/db/migrate.py; the
# configuration expected at /etc/scanner/scanner.toml (mount it); a writable /var/lib/scanner
# for a SQLite file outside production. ENV defaults to production: set DATABASE_URL
# (PostgreSQL). The demo's web3 stack (the `demo` extra) is not installed: `scanner demo` exits 2.

# ---- builder: a virtualenv with the dependencies and the scanner package -------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first, from pyproject.toml alone, so that a code change does not reinstall them,
# at the versions pinned in constraints.txt (made by .ci/lock: the image built next month is the
# one tested today).
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
    && pip install -r /tmp/requirements.txt -c constraints.txt

# The application, as a wheel (not editable: the runtime image gets no source tree). Then the
# installers leave the runtime virtualenv: nothing in the image installs anything.
COPY README.md alembic.ini ./
COPY migrations ./migrations
COPY scanner ./scanner
RUN pip install --no-deps . \
    && scanner --help > /dev/null \
    && pip uninstall --yes --quiet pip setuptools

# ---- runtime -------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="ctrip-scanner" \
      org.opencontainers.image.description="Watches EVM chains for the payments a crypto payment gateway is waiting for."

RUN groupadd --system --gid 10001 scanner \
    && useradd --system --uid 10001 --gid scanner --home-dir /var/lib/scanner \
       --no-create-home --shell /usr/sbin/nologin scanner \
    && install -d -m 0750 -o scanner -g scanner /var/lib/scanner \
    && install -d -m 0755 /etc/scanner /app

COPY --from=builder /opt/venv /opt/venv
# /app: an empty working directory (made above: buildah does not create a WORKDIR), not
# writable by the scanner (its state goes to /var/lib/scanner).
WORKDIR /app

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENV=production \
    SCANNER_CONFIG=/etc/scanner/scanner.toml \
    SCANNER_METRICS_ADDR=0.0.0.0:9464 \
    DATABASE_URL_DEV=sqlite:////var/lib/scanner/scanner.db

USER scanner:scanner

EXPOSE 9464

# Liveness from /healthz (no curl in slim images). Follows SCANNER_METRICS_ADDR's port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('SCANNER_METRICS_ADDR', ':9464').rpartition(':')[2]; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % port, timeout=4)"]

# SIGTERM drains in-flight batches within shutdown_timeout (30 s): give the container more
# (docker run --stop-timeout 45, compose stop_grace_period: 45s).
STOPSIGNAL SIGTERM

ENTRYPOINT ["scanner"]
CMD ["run"]
