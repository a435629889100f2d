# One image for every Lepton component: `lepton operator`, `lepton scheduler`,
# `lepton exporter` (the Helm chart picks the subcommand).
#
# BASE is a pinned slim Python (Debian 12); CI builds without a registry by passing a
# locally made Debian 12 base (scripts/build_image.sh). Every stage derives from it, so
# the virtualenv's interpreter path is the same in the build and final stages.
ARG BASE=docker.io/library/python:3.11.13-slim-bookworm

FROM ${BASE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# --- build: install Lepton and its dependencies (wheels) into /opt/venv ------------------
FROM base AS build
# Set only for the build (never kept in the image) where TLS to PyPI is intercepted.
ARG PIP_CERT
WORKDIR /src
RUN python3 -m venv /opt/venv
# Dependencies first, so that a code change reuses this layer.
COPY pyproject.toml README.md LICENSE NOTICE ./
RUN mkdir -p lepton operator scheduler exporter \
    && printf '__version__ = "0"\n' > lepton/__init__.py \
    && /opt/venv/bin/pip install --prefer-binary . \
    && /opt/venv/bin/pip uninstall --yes lepton
COPY lepton ./lepton
COPY operator ./operator
COPY scheduler ./scheduler
COPY exporter ./exporter
# Every dependency ships manylinux wheels: no compiler anywhere. pip and setuptools are
# build tools and stay in this stage.
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

# --- final: the virtualenv and a non-root user, nothing else ------------------------------
FROM base AS final
RUN groupadd --gid 10001 lepton \
    && useradd --uid 10001 --gid lepton --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin lepton
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["/opt/venv/bin/lepton"]
CMD ["--help"]
LABEL org.opencontainers.image.title="lepton" \
      org.opencontainers.image.description="Energy-aware scheduling for Kubernetes GPU clusters" \
      org.opencontainers.image.licenses="Apache-2.0"
