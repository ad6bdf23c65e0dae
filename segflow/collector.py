"""Python's cyclic garbage collector, set for long-lived server processes.

Python collects its youngest generation whenever the objects it tracks grow by 700, and the
objects that survive two such collections join the oldest generation, which is collected by
walking every object the process holds: all of Django, the apps and the pushed config. A batch of
500 events holds a few thousand dicts and rows at once, so each batch ran several collections
and, every few dozen batches, full ones: 2.5 ms of the 17 ms of CPU a batch costs the web process
(bench/profile_ingest.py, "in the garbage collector"). Nearly all of those objects are freed by
their reference counts as the request ends; the collector only has to find cycles.
"""

from __future__ import annotations

import gc

# Growth of the youngest generation that starts a collection: above what one request or task
# holds at once, so that collections run between them and find little; cyclic garbage waits
# for at most this many objects.
YOUNGEST_GENERATION_THRESHOLD = 50_000


def settle() -> None:
    """Call once a server process has loaded what it keeps for its life: what exists now is
    left out of every later collection (`gc.freeze`), and collections start less often. Also
    keeps the memory forked children share with their parent shared (a collection writes to
    every object it walks)."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNGEST_GENERATION_THRESHOLD, older, oldest)
