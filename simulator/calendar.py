"""Calendar effects shared by the simulator and the ground truth: day of week and sale periods."""

from __future__ import annotations

import numpy as np

from nbo.units import DAY_NS

HOUR_NS = 3_600 * 10**9
DOW_FACTORS = np.array([0.85, 0.9, 0.95, 1.0, 1.1, 1.35, 1.25])  # Monday .. Sunday
SALE_PERIODS = ((102, 115), (625, 708), (1124, 1201))  # (MMDD from, MMDD to): winter, summer, Black Friday
SALE_BOOST = 1.8
SALE_MARKDOWN = 0.15


def to_epoch_days(ts_ns: np.ndarray) -> np.ndarray:
    """Whole days since 1970-01-01 for nanosecond timestamps."""
    return np.floor_divide(np.asarray(ts_ns, dtype=np.int64), DAY_NS)


def mark_sale_days(epoch_days: np.ndarray) -> np.ndarray:
    """True for the days that fall in a sale period (same calendar dates every year)."""
    dates = np.asarray(epoch_days, dtype=np.int64).astype("datetime64[D]")
    months = dates.astype("datetime64[M]")
    month_day = (months.astype(np.int64) % 12 + 1) * 100 + (dates - months).astype(np.int64) + 1
    sale = np.zeros(dates.shape, dtype=bool)
    for first, last in SALE_PERIODS:
        sale |= (month_day >= first) & (month_day <= last)
    return sale


def compute_season(epoch_days: np.ndarray) -> np.ndarray:
    """Demand multiplier of each day: day-of-week factor times the sale boost."""
    days = np.asarray(epoch_days, dtype=np.int64)
    return DOW_FACTORS[(days + 3) % 7] * np.where(mark_sale_days(days), SALE_BOOST, 1.0)
