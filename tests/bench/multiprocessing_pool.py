"""What Python's multiprocessing Pool does on the pool figures of `cargo xtask bench`.

`Pool(2).map` of a trivial `int -> int` function over 1,000,000 items with the default
chunks (`python_pool_tasks_per_s`) and over 100,000 items with `chunksize=1`
(`python_pool_chunk1_tasks_per_s`), with the fork start method: the median of 5 maps each,
after one to warm up, the pool started before. The same shape as netmcore's
`pool_tasks_per_s` and `pool_chunk1_tasks_per_s`. Run it with
`python3 tests/bench/multiprocessing_pool.py`; it prints `name value unit`.
"""

import multiprocessing
import statistics
import time


def mix(n):
    return (n * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF


def tasks_per_s(pool, items, chunksize=None, rounds=5):
    pool.map(mix, range(items), chunksize)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        results = pool.map(mix, range(items), chunksize)
        took = time.perf_counter() - start
        assert len(results) == items
        samples.append(items / took)
    return statistics.median(samples)


def main():
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        print(f"python_pool_tasks_per_s {tasks_per_s(pool, 1_000_000):.0f} tasks/s")
        print(f"python_pool_chunk1_tasks_per_s {tasks_per_s(pool, 100_000, 1):.0f} tasks/s")


if __name__ == "__main__":
    main()
