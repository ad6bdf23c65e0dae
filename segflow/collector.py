"""Python's cyclic garbage collector, set for long-lived server processes.

Python collects its youngest generation whenever the objects it tracks grow by 700, and the
objects that survive two such collections join the oldest generation, which is collected by
walking every object the process holds: all of Django, the apps and the pushed config. A batch of
500 events holds a few thousand dicts and rows at once, so each batch ran several collections
and, every few dozen batches, full ones: 2.5 ms of the 17 ms of CPU a batch cost the web process
(bench/profile_ingest.py, "in the garbage collector"). With what the process loaded for life
frozen, full collections walk only what was made since: 0.5 ms.

Collecting less often as well (a threshold of 10,000) took the rest, but cost the web processes
10 MB more at the peak of bench/ingest.py, which is held under 600 MB: Python's threshold stays.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Call once a server process has loaded what it keeps for its life: what exists now is
    left out of every later collection (`gc.freeze`). Also keeps the memory forked children
    share with their parent shared (a collection writes to every object it walks)."""
    gc.freeze()
