# twitter-bot: the webhook + bridge daemon. Listens on 5756 behind a TLS-terminating ingress.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TWITTER_BOT_CONFIG=/app/conf/application.conf \
    LOG_FORMAT=json

WORKDIR /app
RUN groupadd --system twitterbot && useradd --system --gid twitterbot --home-dir /app twitterbot

# Same install as the README's production install: `pip install .`
COPY pyproject.toml README.md ./
COPY twitter_bot ./twitter_bot
RUN pip install .
COPY conf ./conf

USER twitterbot
EXPOSE 5756
# Mount another file and set TWITTER_BOT_CONFIG to use it; every secret and host
# in conf/application.conf can also be set through environment variables.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import os,urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('HTTP_PORT','5756'), timeout=2); sys.exit(0)" || exit 1

ENTRYPOINT ["twitter-bot"]
CMD ["run"]
