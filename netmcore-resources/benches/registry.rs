//! The registry's hot operations, as the master's event loop calls them: registering a
//! resource that two processes then get and release (the last release destroys it), and the
//! life of a process (start, finished, join, in both orders) on a registry that holds about a
//! hundred live resources.
//!
//! Run with `cargo bench -p netmcore-resources --bench registry`; add `-- --quick` for a
//! short run.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netmcore_resources::registry::{Action, JoinOutcome};
use netmcore_resources::{Holder, Inherit, ProcessId, Registry, ResId, ResourceDesc};

/// How many live resources the process benchmarks keep in the registry.
const LIVE_RESOURCES: usize = 100;

/// A registry with one process type and two processes that the master started: the registry,
/// the type's fork and join points, and the two process ids.
fn registry_with_two_processes() -> (Registry, ResId, ResId, ProcessId, ProcessId) {
    let mut registry: Registry = Registry::new();
    let (fork_point, join_point) = registry.def_process();
    let mut start = || {
        registry
            .start(fork_point, &Inherit::Nothing, Holder::Master)
            .expect("start")
            .pid
    };
    let (a, b) = (start(), start());
    (registry, fork_point, join_point, a, b)
}

/// The description of file number `i`.
fn file(i: usize) -> ResourceDesc {
    ResourceDesc::File(PathBuf::from(format!("/tmp/netmcore-bench-registry-{i}")))
}

fn resources(c: &mut Criterion) {
    let mut group = c.benchmark_group("resource");
    group.throughput(Throughput::Elements(1));
    let (mut registry, _, _, a, b) = registry_with_two_processes();
    let desc = file(0);
    group.bench_function("register_get_release_two_holders", |bench| {
        bench.iter(|| {
            let id = registry
                .register(desc.clone(), Holder::Process(a))
                .expect("register");
            registry.get(id, Holder::Process(b)).expect("get");
            assert!(registry.release(id, Holder::Process(b)).is_none());
            black_box(registry.release(id, Holder::Process(a)).expect("destroyed"));
        });
    });
    // The pair that `get_release_us` measures end to end: a get and a release of a resource
    // that another process keeps.
    let held = registry
        .register(desc.clone(), Holder::Process(a))
        .expect("register");
    group.bench_function("get_release_held", |bench| {
        bench.iter(|| {
            black_box(registry.get(held, Holder::Process(b)).expect("get"));
            assert!(registry.release(held, Holder::Process(b)).is_none());
        });
    });
    group.finish();
}

fn processes(c: &mut Criterion) {
    let mut group = c.benchmark_group("process");
    group.throughput(Throughput::Elements(1));
    let (mut registry, fork_point, join_point, joiner, other) = registry_with_two_processes();
    // About a hundred live resources, registered by the two running processes and all used by
    // the joiner, so that lookups work on a registry of a realistic size.
    for i in 0..LIVE_RESOURCES {
        let owner = if i % 2 == 0 { joiner } else { other };
        let id = registry
            .register(file(i), Holder::Process(owner))
            .expect("register");
        registry.get(id, Holder::Process(joiner)).expect("get");
    }
    let by = Holder::Process(joiner);

    // The result arrives first; the join finds it ready.
    group.bench_function("start_finished_join", |bench| {
        bench.iter(|| {
            let started = registry
                .start(fork_point, &Inherit::Nothing, by)
                .expect("start");
            let actions = registry.finished(started.pid, Some(vec![1u8]));
            assert!(actions.is_empty());
            let outcome = registry
                .join(join_point, started.pid, joiner)
                .expect("join");
            assert!(matches!(outcome, JoinOutcome::Ready(Some(_))));
            black_box(outcome);
        });
    });

    // The joiner waits first; the end of the process wakes it.
    group.bench_function("start_join_finished_wake", |bench| {
        bench.iter(|| {
            let started = registry
                .start(fork_point, &Inherit::Nothing, by)
                .expect("start");
            let outcome = registry
                .join(join_point, started.pid, joiner)
                .expect("join");
            assert!(matches!(outcome, JoinOutcome::Deferred));
            let actions = registry.finished(started.pid, Some(vec![1u8]));
            assert!(matches!(actions.as_slice(), [Action::Wake(_)]));
            black_box(actions);
        });
    });

    // A process that registered a resource of its own: its end releases and destroys it.
    let desc = file(LIVE_RESOURCES);
    group.bench_function("start_register_finished_join", |bench| {
        bench.iter(|| {
            let started = registry
                .start(fork_point, &Inherit::Nothing, by)
                .expect("start");
            registry
                .register(desc.clone(), Holder::Process(started.pid))
                .expect("register");
            let actions = registry.finished(started.pid, None);
            assert!(matches!(actions.as_slice(), [Action::Destroy(_)]));
            black_box(
                registry
                    .join(join_point, started.pid, joiner)
                    .expect("join"),
            );
        });
    });
    group.finish();
    assert_eq!(registry.resource_count(), LIVE_RESOURCES + 2);
}

/// Short runs: these operations take well under a microsecond.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = resources, processes
}
criterion_main!(benches);
