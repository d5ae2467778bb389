"""The one definition of a day, in each form the code computes with: epoch seconds (event times),
nanoseconds (Arrow and NumPy timestamps) and a pandas Timedelta. Durations are set in days everywhere."""

import pandas as pd

DAY_SECONDS = 86_400
DAY_NS = DAY_SECONDS * 10**9
DAY = pd.Timedelta(seconds=DAY_SECONDS)
