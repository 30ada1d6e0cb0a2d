# touchpath worker image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY streams ./streams
COPY sinks ./sinks
COPY replay ./replay
RUN pip install --no-cache-dir .
ENV TOUCHPATH_WEB_HOST=0.0.0.0
EXPOSE 6066
ENTRYPOINT ["touchpath"]
CMD ["worker"]
