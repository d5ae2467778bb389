"""What the service's worker processes run beside the requests: heap and thread settings, the body-size limit,
and the loop that keeps them on the registry's champions (purchase intent, uplift, lifetime value)."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time

from mlflow import MlflowClient
from threadpoolctl import threadpool_limits

from nbo.config import Paths
from nbo.settings import read_setting
from serving.recommender import Recommender
from training.champions import LIFETIME, current_champion
from training.registry import get_alias_version, load_model, open_client

logger = logging.getLogger("nbo.serving")
RELOAD_REQUEST = "reload-request"  # in the NBO home: its content changes when a reload of every worker is asked


def limit_blas_threads() -> None:
    """One BLAS thread: request matrices are tiny, and OpenBLAS's second thread spun a whole core between requests
    (3.3 ms of CPU per request at 200 req/s, as much as the request itself)."""
    threadpool_limits(limits=1, user_api="blas")


def settle_heap() -> None:
    """Exempt what is alive now (libraries, model, catalogue: about 440k objects) from garbage collection: a full
    collection over them stalls every request in flight for about 220 ms."""
    gc.collect()
    gc.freeze()


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before anything parses it."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = int(dict(scope["headers"]).get(b"content-length", b"0"))
        body, message = b"", {"type": "http.request", "more_body": declared <= self.limit}
        while message.get("more_body") and len(body) <= self.limit:
            message = await receive()
            body += message.get("body", b"")
        if declared > self.limit or len(body) > self.limit:
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [(b"content-type", b"text/plain"), (b"connection", b"close")],
                }
            )
            return await send({"type": "http.response.body", "body": b"request body over %d bytes" % self.limit})
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {**message, "body": body, "more_body": False}

        return await self.app(scope, replay, send)


def worker_count() -> int:
    """Worker processes of the service ($NBO_WORKERS, 1 by default)."""
    return read_setting("workers")


def reload_interval() -> float:
    """Seconds between two looks at the registry's champion ($NBO_RELOAD_SECONDS, 30 by default)."""
    return read_setting("reload_seconds")


def check_champion(recommender: Recommender, client: MlflowClient, refused: str | None) -> tuple[bool, str | None]:
    """Serve the registry's champion if it is not the model in use (another worker reloaded, a person promoted or
    rolled back, the registry is back after a start on the packaged model). A version refused once is not tried
    again until the alias moves. Returns whether the model changed, and the version refused."""
    version = get_alias_version(client, "champion")
    if version is None or version in (refused, recommender.registry_version):
        return False, refused
    try:
        recommender.use_model(load_model(client, version=version))
    except Exception as error:  # a champion this code cannot serve: keep the current model
        logger.warning("champion version %s refused, keeping the current model: %s", version, error)
        return False, version
    logger.info("now serving champion version %s", version)
    return True, refused


def request_reload(paths: Paths) -> None:
    """Ask every worker of the service to look at the registry now: write a new reload epoch in the NBO home (the
    workers' follow loops read it each second)."""
    target = paths.home / RELOAD_REQUEST
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f"{RELOAD_REQUEST}.{os.getpid()}")
    staged.write_text(str(time.time_ns()))
    os.replace(staged, target)


def read_reload_epoch(paths: Paths) -> str | None:
    """The last reload asked for, None if none ever was."""
    try:
        return (paths.home / RELOAD_REQUEST).read_text()
    except OSError:
        return None


def follow_registry(
    recommender: Recommender, paths: Paths, interval: float, stop: threading.Event | None = None, tick: float = 1.0
) -> None:
    """Until `stop` is set: the uplift and lifetime-value champions installed (their folder, the value tiers) and
    check_champion every `interval` seconds, and within `tick` seconds of a reload request. Nothing stops the loop:
    a registry that is down, unreadable or corrupt keeps the current model, warned about once per failure spell,
    and is looked at again on the next round."""
    stop = stop or threading.Event()
    epoch, refused, failing = read_reload_epoch(paths), None, False
    due = time.monotonic() + interval
    while not stop.wait(min(tick, interval)):
        requested = read_reload_epoch(paths)
        if requested == epoch and time.monotonic() < due:
            continue
        if requested != epoch:
            epoch, refused = requested, None  # asked for: try the champion again even if refused once
        due = time.monotonic() + interval
        if recommender.follow_uplift(paths):  # never raises: an unusable uplift model ranks by purchase intent
            settle_heap()
        current_champion(paths, LIFETIME)  # never raises: the tiers installed last stay
        try:
            swapped, refused = check_champion(recommender, open_client(paths), refused)
        except Exception as error:  # registry unreachable or unreadable: keep the current model
            if not failing:
                logger.warning(
                    "champion check failed, keeping the current model until the registry answers "
                    "(checked every %.0f s): %s",
                    interval,
                    error,
                )
            failing = True
            continue
        if failing:
            logger.info("the registry answers again")
            failing = False
        if swapped:
            settle_heap()
