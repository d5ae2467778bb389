"""nbo: a next-best-offer service."""

import os

# OpenMP threads that wait for work by spinning take the CPU their sibling thread needs when other processes share
# a 2-core machine: LightGBM training in `nbo retrain` ran 1.5-5x slower, its CPU time growing as much (measured in
# docs/operations.md). Threads that sleep instead, unless OMP_WAIT_POLICY says otherwise; OpenMP reads it when
# LightGBM loads, hence here, before any import of it. Serving predicts on one thread: no OpenMP wait there.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
