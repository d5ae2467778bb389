"""Redis backend of the online feature store, shared by several service replicas.

Keys, under a prefix (default ``nbo:online:``):

- ``seen``: hash of applied event ids -> their content's fingerprint (features.fingerprints): an id sent again
  is a duplicate when the fingerprint matches, a conflict when not (a store made before fingerprints keeps a
  set of ids, and tells no conflicts until rebuilt);
- ``links``: hash device -> "linked_at customer_id" (HSETNX: a device's first link wins);
- ``rows:<customer>``: the customer's signal rows as packed fixed-size records (``RECORD``), appended,
  with one row per device at its first link (the ``devices`` signal);
- ``pending:<device>``: packed records of a device not linked yet, moved to its customer on the link;
- ``customers``: set of customers with rows;
- ``category_codes`` (hash name -> code) and ``category_names`` (NUL-terminated names, append-only):
  the int32 category codes of the records; ``layout``: the signal names the records were packed with
  (a store packed for other signals is refused on every write and read until rebuilt).

A batch of events (up to BATCH_EVENTS, more than /events takes) is applied by one Lua script, atomically:
replicas never interleave half-applied batches, and a batch refused while Redis is down left nothing applied.
rows() reads a customer with one MGET and decodes it with numpy, and keeps no cache, so a replica never serves
rows another one has since changed.

While Redis is down or loading, every call raises StoreUnavailable; the outage is logged once as a warning
when it starts and once when Redis answers again, not on every request.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import cast

import numpy as np
import pandas as pd
import redis

from features.definitions import LINK_KIND, SIGNAL_NAMES, kind_values, signal_values
from features.fingerprints import fingerprint
from features.offline import to_seconds
from features.store_interface import CustomerRows, StoreUnavailable, Written

_PACKED = np.dtype([("ts", "<i8"), ("visible", "<i8"), ("values", "<f8", (len(SIGNAL_NAMES),))])
RECORD = np.dtype([("category", "<i4"), *_PACKED.descr])
BATCH_EVENTS = 1000  # events per script call (all of an /events batch): Redis blocks others for a few ms at most
_ARGS_PER_EVENT = 8
TIMEOUT_S = 0.2  # socket connect/read timeout unless the URL sets one: an outage must not hang requests
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)  # BusyLoadingError (loading its data) is a ConnectionError
logger = logging.getLogger("nbo.online")
logger.setLevel(logging.INFO)  # an outage's end shows too where the root logger is at WARNING (as in BentoML)

_WRITE = r"""
local prefix, size, layout = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local stored = redis.call('GET', prefix .. 'layout')
if stored and stored ~= layout then return {-1, {}} end
if not stored then redis.call('SET', prefix .. 'layout', layout) end
local seen, links, customers = prefix .. 'seen', prefix .. 'links', prefix .. 'customers'
local legacy = redis.call('TYPE', seen)['ok'] == 'set'  -- ids kept without fingerprints (until rebuilt)
local codes, conflicts = {}, {}

local function claim(event_id, digest)
  if legacy then return redis.call('SADD', seen, event_id) == 1 end
  local known = redis.call('HGET', seen, event_id)
  if not known then
    redis.call('HSET', seen, event_id, digest)
    return true
  end
  if known ~= digest then conflicts[#conflicts + 1] = event_id end
  return false
end

local function code_of(category)
  if category == '' then return -1 end
  if codes[category] == nil then
    local code = redis.call('HGET', prefix .. 'category_codes', category)
    if not code then
      code = redis.call('HLEN', prefix .. 'category_codes')
      redis.call('HSET', prefix .. 'category_codes', category, code)
      redis.call('APPEND', prefix .. 'category_names', category .. '\0')
    end
    codes[category] = tonumber(code)
  end
  return codes[category]
end

local function append(customer, records)
  if records ~= '' then
    redis.call('APPEND', prefix .. 'rows:' .. customer, records)
    redis.call('SADD', customers, customer)
  end
end

local function visible_from(records, at)
  local out = {}
  for start = 1, #records, size do
    local ts = struct.unpack('<i8', records, start + 4)
    out[#out + 1] = string.sub(records, start, start + 11) .. struct.pack('<i8', math.max(ts, at))
      .. string.sub(records, start + 20, start + size - 1)
  end
  return table.concat(out)
end

local function release(device, customer, at)
  local key = prefix .. 'pending:' .. device
  local waiting = redis.call('GET', key)
  if waiting then
    append(customer, visible_from(waiting, at))
    redis.call('DEL', key)
  end
end

local new = 0
for i = 4, #ARGV, 8 do
  local event_id, customer, device = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local category, ts, packed, link = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  if claim(event_id, ARGV[i + 7]) then
    new = new + 1
    local record = ''
    if packed ~= '' then record = struct.pack('<i4', code_of(category)) .. packed end
    if customer ~= '' then
      if device ~= '' and redis.call('HSETNX', links, device, ts .. ' ' .. customer) == 1 then
        release(device, customer, tonumber(ts))
        append(customer, link)
      end
      append(customer, record)
    elseif device ~= '' then
      local link = redis.call('HGET', links, device)
      if link then
        local at, owner = string.match(link, '^(%S+) (.*)$')
        append(owner, visible_from(record, tonumber(at)))
      elseif record ~= '' then
        redis.call('APPEND', prefix .. 'pending:' .. device, record)
      end
    end
  end
end
return {new, conflicts}
"""


def connect_redis(url: str) -> redis.Redis:
    """A client of the Redis at `url`, with TIMEOUT_S connect and read timeouts."""
    return redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)


class OutageLog:
    """Logs an outage of a store once when it starts and once when the store answers again."""

    def __init__(
        self,
        name: str = "online store",
        meanwhile: str = "/recommend serves the popularity fallback and /events answers 503 until it is back",
    ) -> None:
        self.name, self.meanwhile = name, meanwhile
        self.down_since: float | None = None
        self.lock = threading.Lock()

    def failed(self, error: Exception) -> StoreUnavailable:
        """The error to raise for a failed call (the first failure of an outage is logged)."""
        with self.lock:
            if self.down_since is None:
                self.down_since = time.monotonic()
                logger.warning("%s unreachable (%s): %s", self.name, error, self.meanwhile)
        return StoreUnavailable(f"{self.name} unreachable: {error}")

    def answered(self) -> None:
        """Note a call that succeeded (the first one after an outage is logged)."""
        if self.down_since is not None:
            with self.lock:
                if self.down_since is not None:
                    logger.info("%s reachable again after %.1f s", self.name, time.monotonic() - self.down_since)
                    self.down_since = None


class RedisStore:
    """The online store in Redis: no local state, every replica sees every write at once."""

    def __init__(self, url: str, prefix: str = "nbo:online:"):
        self.client = connect_redis(url)
        self.prefix = prefix
        self.script = self.client.register_script(_WRITE)
        self.layout = ",".join(SIGNAL_NAMES)
        self.outage = OutageLog()

    def write(self, events: pd.DataFrame) -> int:
        """Apply validated canonical events not seen before; return how many were new."""
        return self.apply(events).applied

    def apply(self, events: pd.DataFrame) -> Written:
        """Apply validated canonical events not seen before; say how many were new and which ids conflicted
        (already applied with other content); StoreUnavailable while Redis is down or loading."""
        events = events.sort_values("ts", kind="stable").reset_index(drop=True)
        values, ts = signal_values(events), to_seconds(events["ts"])
        packed = np.zeros(len(events), _PACKED)
        packed["ts"], packed["visible"], packed["values"] = ts, ts, values
        blob, size = packed.tobytes(), _PACKED.itemsize
        useful = (values != 0).any(axis=1)
        links = np.zeros(len(events), RECORD)  # the device-link row each event would add, at its time
        links["category"], links["ts"], links["visible"] = -1, ts, ts
        links["values"] = kind_values(np.array([LINK_KIND]), np.array([np.nan]))
        link_blob, link_size = links.tobytes(), RECORD.itemsize
        texts = zip(
            *(to_texts(events[c]) for c in ("event_id", "customer_id", "anonymous_id", "category")), fingerprint(events)
        )
        args: list[str | bytes] = []
        for i, (event_id, customer_id, anonymous_id, category, digest) in enumerate(texts):
            record = blob[i * size : (i + 1) * size] if useful[i] else b""
            link = link_blob[i * link_size : (i + 1) * link_size] if customer_id and anonymous_id else b""
            args += [event_id, customer_id, anonymous_id, category, str(ts[i]), record, link, digest]
        step = BATCH_EVENTS * _ARGS_PER_EVENT
        new, conflicts = 0, {}
        for start in range(0, len(args), step):
            try:
                applied, refused = self.script(
                    args=[self.prefix, RECORD.itemsize, self.layout, *args[start : start + step]]
                )
            except REDIS_DOWN as error:
                raise self.outage.failed(error) from error
            self.outage.answered()
            if applied < 0:
                raise self._refusal()
            new += applied
            conflicts.update(dict.fromkeys(e.decode() for e in refused))
        return Written(new, list(conflicts))

    def rows(self, customer_id: str) -> CustomerRows | None:
        """The customer's signal rows (ordered by ts), or None for a customer never seen; StoreUnavailable
        while Redis is down."""
        try:
            blob, names, layout = cast(
                list[bytes | None],
                self.client.mget(
                    self.prefix + "rows:" + customer_id, self.prefix + "category_names", self.prefix + "layout"
                ),
            )
        except REDIS_DOWN as error:
            raise self.outage.failed(error) from error
        self.outage.answered()
        if blob is None:
            return None
        if layout != self.layout.encode():
            raise self._refusal()
        table = np.frombuffer(blob, RECORD)
        table = table[np.argsort(table["ts"], kind="stable")]
        categories = np.array([*(names or b"").decode().split("\0")[:-1], None], dtype=object)
        return CustomerRows(
            category=categories[table["category"]],
            ts=table["ts"].astype("int64"),
            visible=table["visible"].astype("int64"),
            values=table["values"].astype("float64"),
        )

    def customers(self) -> list[str]:
        """Every customer with at least one stored signal, sorted."""
        return sorted(c.decode() for c in cast(set[bytes], self.client.smembers(self.prefix + "customers")))

    def forget(self, customer_id: str) -> tuple[int, list[str]]:
        """Erase a customer: their rows, their devices' links and waiting rows, and the seen event ids that
        contain their id; return (keys and members erased, their devices). Redis's own snapshots keep them until
        they are next rewritten (docs/privacy.md)."""
        links, seen = self.prefix + "links", self.prefix + "seen"
        devices = [
            d.decode()
            for d, link in self.client.hscan_iter(links, count=1000)
            if link.decode().partition(" ")[2] == customer_id
        ]
        hashed = self.client.type(seen) == b"hash"  # event ids alone, or with their content's fingerprint
        scan = self.client.hscan_iter if hashed else self.client.sscan_iter
        found = {
            member[0] if hashed else member
            for name in [customer_id, *devices]
            for member in scan(seen, match=f"*{_glob_escape(name)}*")
        }
        with self.client.pipeline() as batch:
            batch.delete(self.prefix + "rows:" + customer_id, *(self.prefix + "pending:" + d for d in devices))
            batch.srem(self.prefix + "customers", customer_id)
            if devices:
                batch.hdel(links, *devices)
            if found:
                (batch.hdel if hashed else batch.srem)(seen, *found)
            erased = batch.execute()
        return sum(int(n) for n in erased), devices

    def clear(self) -> None:
        """Forget every event, link and row under the prefix (before a rebuild)."""
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=1000))
        for start in range(0, len(keys), 1000):
            self.client.unlink(*keys[start : start + 1000])

    def _refusal(self) -> RuntimeError:
        """The error for a store whose records were packed for other signals."""
        return RuntimeError(
            f"the online store at {self.prefix}* holds rows packed for other signals than "
            f"{self.layout}; rebuild it (nbo features)"
        )

    def close(self) -> None:
        """Release the connection."""
        self.client.close()


def _glob_escape(text: str) -> str:
    """Text matched literally by a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def to_texts(column: pd.Series) -> list[str]:
    """A column's values as strings, missing ones as the empty string (validation never keeps "")."""
    return [value if isinstance(value, str) else "" for value in column.to_numpy(dtype=object)]
