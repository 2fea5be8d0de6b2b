"""Helpers shared by the test files."""
import gc
import os

import pygrad


def settle():
    """Free everything freeable (custom-op cycles, dead Values); live node count."""
    count = -1
    for _ in range(50):
        gc.collect()
        pygrad.engine.collect_custom_ops()
        now = pygrad.live_nodes()
        if now == count:
            return now
        count = now
    raise AssertionError("live node count never settled")


def rss_bytes():
    """This process's resident set size, from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
