"""What Python's multiprocessing takes for the spawn_join figure of `cargo xtask bench`.

A process started with the fork start method runs a function that returns at once and is
joined, sequentially (the median of 5 rounds of 300, after 50 to warm up); then, for contrast,
`Pool.apply` of the same function, which reuses its worker processes instead of starting one.
Run it with `python3 tests/bench/multiprocessing_spawn_join.py`; it prints `name value unit`.
"""

import multiprocessing
import statistics
import time


def noop():
    pass


def per_call_us(call, rounds=5, batch=300):
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(batch):
            call()
        samples.append((time.perf_counter() - start) / batch * 1e6)
    return statistics.median(samples)


def main():
    ctx = multiprocessing.get_context("fork")

    def start_join():
        process = ctx.Process(target=noop)
        process.start()
        process.join()

    for _ in range(50):
        start_join()
    print(f"python_fork_start_join_us {per_call_us(start_join):.1f} us")
    with ctx.Pool(2) as pool:
        pool.apply(noop)
        print(f"python_pool_apply_us {per_call_us(lambda: pool.apply(noop), batch=1000):.1f} us")


if __name__ == "__main__":
    main()
