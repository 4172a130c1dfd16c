FROM python:3.11-slim
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
