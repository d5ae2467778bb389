"""Identity stitching: devices and cookies become a known customer on login, e-mail click or card scan."""

from __future__ import annotations

import pandas as pd


def link_devices(events: pd.DataFrame) -> pd.DataFrame:
    """Device links: each anonymous id's customer and the moment it was first seen with that customer.

    An event carrying both ids (a login, an e-mail click, a loyalty-card scan) links them. A shared device
    seen with several customers belongs to the one it was linked to first.
    """
    both = events.loc[events["customer_id"].notna() & events["anonymous_id"].notna(),
                      ["anonymous_id", "customer_id", "ts"]]
    first = both.sort_values("ts", kind="stable").drop_duplicates("anonymous_id")
    return first.rename(columns={"ts": "linked_at"}).reset_index(drop=True)


def stitch_identities(events: pd.DataFrame, links: pd.DataFrame | None = None) -> pd.DataFrame:
    """Attribute anonymous events to their device's customer.

    Adds ``visible_at``: the moment the event is known to belong to its customer (its own time, or the
    link's time for earlier anonymous browsing), so point-in-time features never use a link from the
    future. Events of devices never linked keep an empty customer_id.
    """
    events = events.reset_index(drop=True)
    links = link_devices(events) if links is None else links
    mapped = events[["anonymous_id"]].merge(links, on="anonymous_id", how="left")
    anonymous = events["customer_id"].isna().to_numpy() & mapped["customer_id"].notna().to_numpy()
    stitched = events.copy()
    stitched["customer_id"] = events["customer_id"].mask(anonymous, mapped["customer_id"].to_numpy())
    linked_at = mapped["linked_at"].to_numpy()
    stitched["visible_at"] = events["ts"].mask(anonymous & (linked_at > events["ts"].to_numpy()), linked_at)
    return stitched
