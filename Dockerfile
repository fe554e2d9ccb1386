# syncd as a long-running service. Build: docker build -t syncd .
# Run:   docker run -v $PWD/syncd.toml:/app/syncd.toml -v $PWD/mappings:/app/mappings \
#          -v syncd-data:/app/var syncd run-once
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

COPY syncd.toml ./
COPY mappings ./mappings
COPY data ./data
RUN mkdir -p var && chown -R syncd:syncd /app

USER syncd
ENTRYPOINT ["syncd"]
CMD ["run-once"]
