"""How long the disk takes to make a write durable: the floor under every durable commit of the service.

    .venv/bin/python bench/fsync_latency.py [--dir /path/on/the/database/disk] [--seconds 20]

Appends 8 KB and fsyncs it, again and again, for --seconds, then prints the percentiles and the count of fsyncs
over 100 ms. A SQLite commit with `--sqlite-sync full` (the default) and a PostgreSQL commit each end in one; the
requests whose batch commits during a stall wait for it, which is what sets the service's p99 on a disk with
stalls (bench/serve_load.py).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="a folder on the disk to measure")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    fd, path = tempfile.mkstemp(dir=args.dir, prefix="fsync-")
    latencies = []
    try:
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            os.write(fd, b"x" * 8192)
            before = time.perf_counter()
            os.fsync(fd)
            latencies.append((time.perf_counter() - before) * 1000.0)
    finally:
        os.close(fd)
        os.remove(path)
    ms = np.array(latencies)
    print(
        f"{len(ms):,} fsyncs in {args.seconds:g} s on {args.dir}: p50 {np.percentile(ms, 50):.2f} ms, "
        f"p99 {np.percentile(ms, 99):.2f} ms, p99.9 {np.percentile(ms, 99.9):.1f} ms, max {ms.max():.1f} ms; "
        f"{int((ms > 100).sum())} over 100 ms"
    )


if __name__ == "__main__":
    main()
