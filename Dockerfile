# syncd as a long-running service: the daemon (`syncd run`), with the event ingest endpoint on
# port 8787. Build: docker build -t syncd .
# Run: see "Run it as a service" in README.md. Mount your syncd.toml (its ingest source with
# host = "0.0.0.0"), mappings/ and drop folder, keep /app/var (store and log) on a volume, and
# pass the secrets the config names as environment variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 10001 syncd
WORKDIR /app

COPY pyproject.toml README.md ./
COPY syncd ./syncd
COPY connectors ./connectors
RUN pip install .

# The checkout's config and mappings, so that an image built from your project is complete
# (mounts replace them); the demo's sample data stays out, so a service never loads made-up people.
COPY syncd.toml ./
COPY mappings ./mappings
RUN mkdir -p var && chown -R syncd:syncd /app

USER syncd
VOLUME ["/app/var"]
EXPOSE 8787
ENTRYPOINT ["syncd"]
CMD ["run"]
