"""Building blocks of the behaviour simulator; the entry points are in features.simulate."""
