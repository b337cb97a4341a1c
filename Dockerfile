FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streamwatch ./streamwatch
RUN pip install --no-cache-dir . && useradd --system --uid 10001 streamwatch
COPY examples/streamwatch.yaml /etc/streamwatch/streamwatch.yaml
USER streamwatch
EXPOSE 9400
ENTRYPOINT ["streamwatch"]
CMD ["run", "--config", "/etc/streamwatch/streamwatch.yaml"]
