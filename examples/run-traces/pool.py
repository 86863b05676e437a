"""A multiprocessing Pool of 4 (fork) over numpy arrays: the parent builds an array the workers read (inherited
by fork), each task makes arrays of its own. Recorded by benchmarks/realprograms.py (see README.md, "Real
programs"): foliosim trace --thp 16K=always,64K=always --check-live -o pool.trace.gz -- python pool.py"""

import multiprocessing as mp

import numpy as np

SHARED = np.arange(256 * 1024, dtype=np.float64)  # 2 MiB, built before the fork: the workers read it


def work(i: int) -> float:
    rng = np.random.default_rng(i)
    a = rng.random((128, 128))
    return float((a @ a.T).trace() + SHARED[i * 1000 : i * 1000 + 1000].sum())


if __name__ == "__main__":
    mp.set_start_method("fork")
    with mp.Pool(4) as pool:
        total = sum(pool.map(work, range(64), chunksize=4))
    print(f"{total:.1f}")
