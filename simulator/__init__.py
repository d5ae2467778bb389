"""The behaviour simulator, a data source with ground truth: `nbo generate` runs simulator.generate."""
