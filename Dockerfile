# The metering node: HTTP API + ingestor (+ Kafka consumer with --kafka-bootstrap-servers).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir .
VOLUME /data
EXPOSE 8005
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8005/healthz').status == 200 else 1)"
ENTRYPOINT ["usage-metering", "--db", "/data/metering.duckdb"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8005"]
