"""Rounds of `spawn_join_model.c` interleaved with netmcore's own figures.

Each round measures, one after the other: the C fork floor; the C model of netmcore's
protocol one task at a time (`seq`) and in waves of 2 (`waves`), with busy-polls of 0 and
10 µs, forking a replacement warm worker per task or with every worker forked beforehand
(`prefork`); and, given `--bench PATH` (the `bench` binary, `cargo build --release -p
netmcore-tests --bin bench`), netmcore's `spawn_join_us` and `parallel_tasks_per_s` (a median of
5). Every figure is read against the floor of its own round, then the medians over the rounds
are printed: microseconds per task and the ratio to the fork floor for one task at a time;
tasks per second and, as the bench reports `parallel_tasks_per_s`, the ratio to 2 cores / floor
(its target is 0.8) for waves.

Run it with `python3 tests/bench/spawn_join_model.py [--rounds N] [--bench PATH]`; it needs gcc.
"""

import argparse
import os
import statistics
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

VARIANTS = [
    ("C seq, spin 0", ["seq", "0"]),
    ("C seq, spin 10", ["seq", "10"]),
    ("C seq, spin 10, prefork", ["seq", "10", "430"]),
    ("C waves, spin 0", ["waves", "0"]),
    ("C waves, spin 10", ["waves", "10"]),
    ("C waves, spin 10, prefork", ["waves", "10", "440"]),
]


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout


def bench_figure(bench, job, figure):
    out = run([bench, "--child", job, "--reps", "5", "--quick"])
    values = [float(l.split()[2]) for l in out.splitlines() if l.startswith(f"sample {figure} ")]
    return statistics.median(values)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--bench", help="netmcore's bench binary, to interleave its figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "spawn_join_model")
        subprocess.run(
            ["gcc", "-O2", "-o", model, os.path.join(HERE, "spawn_join_model.c")], check=True
        )
        per_task = {}  # name -> [(us per task, floor of its round)]
        for _ in range(args.rounds):
            floor = float(run([model, "floor"]))
            for name, argv in VARIANTS:
                per_task.setdefault(name, []).append((float(run([model] + argv)), floor))
            if args.bench:
                us = bench_figure(args.bench, "spawn_join", "spawn_join_us")
                per_task.setdefault("netmcore spawn_join_us", []).append((us, floor))
                rate = bench_figure(args.bench, "parallel", "parallel_tasks_per_s")
                per_task.setdefault("netmcore parallel_tasks_per_s", []).append((1e6 / rate, floor))
        floors = [f for _, f in next(iter(per_task.values()))]
        print(f"floor_fork_wait_us median {statistics.median(floors):.1f} "
              f"(range {min(floors):.1f}-{max(floors):.1f}, {args.rounds} rounds)")
        for name, pairs in per_task.items():
            us = statistics.median(u for u, _ in pairs)
            if "waves" in name or "parallel" in name:
                ratios = [(1e6 / u) / (2 * 1e6 / f) for u, f in pairs]
                what = f"{1e6 / us:8.0f} tasks/s, vs 2/floor"
            else:
                ratios = [u / f for u, f in pairs]
                what = f"{us:8.1f} us/task, vs floor "
            print(f"{name:32} {what} {statistics.median(ratios):.2f} "
                  f"(range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
