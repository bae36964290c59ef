//! Multi-process integration tests of netmcore (crate `netmcore-tests`, not published).
//!
//! The scenarios live in `tests/` as `harness = false` targets, named by area:
//!
//! * `supervise_process`: `start`, `join`, `join_nowait`, `self_process_id`, `def_process` and
//!   `run`, with every error of DESIGN.md §4 for these calls; 200 processes in waves and at
//!   once; a grandchild nobody joins; globals seen with their master value; 256 MiB arguments
//!   and results.
//! * `supervise_faults`: bodies that panic, exit, are killed or die of SIGSEGV.
//! * `supervise_shutdown`: the end of a master (after its first process, on SIGTERM or SIGINT,
//!   killed), its socket directory and its pidfile.
//! * `mandelbrot_render`: the facade's `mandelbrot` example renders the right image.
//! * `resources_lifecycle`: users as sets, destruction on the last release and when a worker
//!   ends in any way, fork and join points dropped, nothing left when `startup` returns.
//! * `resources_errors`: `WrongKind`, `InvalidName` and `NoResource` in every role.
//! * `resources_prealloc`: preallocated shared memory and its inheritance.
//! * `crash_recovery`: a master killed with SIGKILL leaves nothing within a second; the next
//!   `startup` and `destroy_resources_in` clean what a dead master and its guardian left.
//!
//! A scenario calls `startup`, which turns the calling process into a master, so each runs in
//! a process of its own: the target's `main` forks one child per scenario (see
//! `tests/support/mod.rs`) and checks afterwards that no process of the scenario survived it,
//! that it left no zombie, and that nothing new is left in `/dev/shm`. Pass a name (or part of
//! one) to run only matching scenarios, e.g.
//! `cargo test -p netmcore-tests --test supervise_faults -- segv`.
//!
//! The library holds what the scenario runners and the `stress` program share: [`procs`],
//! the process table and `/dev/shm` as the leak checks read them.
#![deny(unsafe_code)]

pub mod procs;
