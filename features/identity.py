"""Identity stitching: devices and cookies become a known customer on login, e-mail click or card scan."""

from __future__ import annotations

import numpy as np
import pandas as pd


def instants(times: pd.Series) -> np.ndarray:
    """Times as comparable numbers: int64 nanoseconds (UTC) for timestamps, the values otherwise."""
    if pd.api.types.is_datetime64_any_dtype(times):
        return (times if times.dt.unit == "ns" else times.dt.as_unit("ns")).array.asi8  # no copy when in ns
    return times.to_numpy()


def first_links(device: np.ndarray, has_customer: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Positions of the events that link each device (code >= 0) to a customer: its earliest event carrying
    a customer too (the first listed on a tie), in time order."""
    both = np.flatnonzero((device >= 0) & has_customer)
    if not len(both):
        return both
    linking, times = device[both], ts[both]
    earliest = np.full(int(linking.max()) + 1, times.max(), dtype=times.dtype)
    np.minimum.at(earliest, linking, times)  # per device, without sorting the events
    at_earliest = np.flatnonzero(times == earliest[linking])
    _, first_listed = np.unique(linking[at_earliest], return_index=True)
    first = both[at_earliest[first_listed]]
    return first[np.lexsort((first, ts[first]))]


def link_devices(events: pd.DataFrame) -> pd.DataFrame:
    """Device links: each anonymous id's customer and the moment it was first seen with that customer.

    An event carrying both ids (a login, an e-mail click, a loyalty-card scan) links them. A shared device
    seen with several customers belongs to the one it was linked to first.
    """
    device, _ = pd.factorize(events["anonymous_id"])
    first = first_links(device, events["customer_id"].notna().to_numpy(), instants(events["ts"]))
    return pd.DataFrame(
        {
            "anonymous_id": events["anonymous_id"].array[first],
            "customer_id": events["customer_id"].array[first],
            "linked_at": events["ts"].array[first],
        }
    )


def attribute(
    customer: np.ndarray, device: np.ndarray, ts: np.ndarray, owner: np.ndarray, linked_at: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Customer codes of events (-1 when unknown), anonymous ones taken from their device's ``owner``
    (per device code, -1 when never linked); and when each event is known to be the customer's: its own
    time, or its device's ``linked_at`` for earlier anonymous browsing."""
    anonymous = np.flatnonzero((customer < 0) & (device >= 0))
    customer, visible = customer.astype(owner.dtype), ts.copy()  # copies; codes as wide as the owners'
    customer[anonymous] = owner[device[anonymous]]
    linked = anonymous[customer[anonymous] >= 0]
    visible[linked] = np.maximum(ts[linked], linked_at[device[linked]])
    return customer, visible


def device_owners(devices: pd.Index, customers: pd.Index, links: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per device code: its owner's position among ``customers`` (-1 when not linked) and its link time."""
    at = pd.Index(links["anonymous_id"]).get_indexer(devices)
    known = at >= 0
    owner = np.full(len(devices), -1, dtype="int64")
    owner[known] = customers.get_indexer(links["customer_id"])[at[known]]
    times = instants(links["linked_at"])
    linked_at = np.zeros(len(devices), dtype=times.dtype)
    linked_at[known] = times[at[known]]
    return owner, linked_at


def stitch_identities(events: pd.DataFrame, links: pd.DataFrame | None = None) -> pd.DataFrame:
    """Attribute anonymous events to their device's customer.

    Adds ``visible_at``: the moment the event is known to belong to its customer (its own time, or the
    link's time for earlier anonymous browsing), so point-in-time features never use a link from the
    future. Events of devices never linked keep an empty customer_id.
    """
    events = events.reset_index(drop=True)
    links = link_devices(events) if links is None else links
    device, devices = pd.factorize(events["anonymous_id"])
    customer, names = pd.factorize(events["customer_id"])
    customers = pd.Index(names).append(pd.Index(links["customer_id"])).unique()
    owner, linked_at = device_owners(pd.Index(devices), customers, links)
    codes, visible = attribute(customer, device, instants(events["ts"]), owner, linked_at)
    stitched = events.copy()
    named = np.append(np.asarray(customers, dtype=object), np.array([None], dtype=object))[codes]
    stitched["customer_id"] = pd.Series(named, index=events.index, dtype=events["customer_id"].dtype)
    visible_at = pd.Series(visible, index=events.index)
    if pd.api.types.is_datetime64_any_dtype(events["ts"]):
        visible_at = pd.Series(pd.to_datetime(visible, utc=events["ts"].dt.tz is not None), index=events.index)
        visible_at = visible_at.astype(events["ts"].dtype)
    stitched["visible_at"] = visible_at
    return stitched
