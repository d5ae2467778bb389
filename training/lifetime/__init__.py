"""Lifetime value: the repeat-purchase model (model) and its fit on the retailer's own purchases (values)."""
