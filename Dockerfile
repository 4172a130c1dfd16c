# The base image can be pinned by digest where a registry is reachable:
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
WORKDIR /app
COPY pyproject.toml README.md ./
COPY atp ./atp
COPY api ./api
COPY adapters ./adapters
COPY projections ./projections
RUN pip install --no-cache-dir .
ENV ATP_HOST=0.0.0.0 ATP_PORT=8000
EXPOSE 8000
CMD ["atp", "serve"]
