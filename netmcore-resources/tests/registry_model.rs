//! The registry as a state machine, against a reference model.
//!
//! Random sequences of operations run against [`Registry`] and against `Model`, a deliberately
//! naive re-statement of the rules in `DESIGN.md` §4 that keeps everything in `Vec`s, scans
//! them linearly and stores no index (a process's used resources, for example, are found by
//! scanning every resource's users). Every return value is compared, and so are the live
//! resources and processes after every step.

use netmcore_resources::registry::{
    Action, Destroy, Holder, JoinOutcome, ProcessState, Registry, RegistryError, Started, Wake,
};
use netmcore_resources::{Inherit, ProcessId, ResId, ResourceDesc, ResourceKind};
use proptest::prelude::*;

/// A candidate name and whether it is valid as a file path, a shm name and a semaphore name.
struct Name {
    text: String,
    file: bool,
    shm: bool,
    sem: bool,
}

fn names() -> Vec<Name> {
    let name = |text: String, file, shm, sem| Name {
        text,
        file,
        shm,
        sem,
    };
    let long = |n: usize| format!("/{}", "x".repeat(n - 1));
    vec![
        name("/n1".into(), true, true, true),
        name("/n2".into(), true, true, true),
        name("n3".into(), false, false, false),
        name("".into(), false, false, false),
        name("/".into(), true, false, false),
        name("/d/e".into(), true, false, false),
        name("/.".into(), true, false, false),
        name("/a\0b".into(), false, false, false),
        name(long(251), true, true, true),
        name(long(252), true, true, false),
        name(long(255), true, true, false),
        name(long(256), true, false, false),
    ]
}

/// Which kind of object a `register` names.
#[derive(Debug, Clone, Copy)]
enum RegKind {
    File,
    Shm,
    Sem,
    Prealloc,
    ForkPoint,
}

/// An id chosen among the live candidates (by index, modulo their number) or at random in a small range, so that
/// destroyed and never allocated ids come up too.
#[derive(Debug, Clone)]
enum Pick {
    Live(usize),
    Raw(u64),
}

#[derive(Debug, Clone)]
enum HolderPick {
    Master,
    Process(Pick),
}

#[derive(Debug, Clone)]
enum InheritPick {
    Nothing,
    All,
    Resources(Vec<Pick>),
}

#[derive(Debug, Clone)]
enum Op {
    DefProcess,
    Register {
        kind: RegKind,
        name: usize,
        by: HolderPick,
    },
    Get {
        id: Pick,
        by: HolderPick,
        expected: Option<ResourceKind>,
    },
    Release {
        id: Pick,
        by: HolderPick,
    },
    Start {
        fork_point: Pick,
        inherit: InheritPick,
        by: HolderPick,
    },
    Finished {
        pid: Pick,
        result: Option<u32>,
    },
    Join {
        /// `None`: the join point of the target's own type.
        join_point: Option<Pick>,
        pid: Pick,
        by: Pick,
    },
    JoinNowait {
        /// `None`: the join point of the target's own type.
        join_point: Option<Pick>,
        pid: Pick,
    },
    Shutdown,
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        3 => any::<usize>().prop_map(Pick::Live),
        1 => (0u64..24).prop_map(Pick::Raw),
    ]
}

fn join_point_pick() -> impl Strategy<Value = Option<Pick>> {
    proptest::option::weighted(0.4, pick())
}

fn holder_pick() -> impl Strategy<Value = HolderPick> {
    prop_oneof![
        1 => Just(HolderPick::Master),
        3 => pick().prop_map(HolderPick::Process),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(RegKind::File),
        Just(RegKind::Shm),
        Just(RegKind::Sem),
        Just(RegKind::Prealloc),
        Just(RegKind::ForkPoint),
    ];
    let expected = proptest::option::of(proptest::sample::select(ResourceKind::ALL.to_vec()));
    let inherit = prop_oneof![
        Just(InheritPick::Nothing),
        Just(InheritPick::All),
        proptest::collection::vec(pick(), 0..4).prop_map(InheritPick::Resources),
    ];
    prop_oneof![
        2 => Just(Op::DefProcess),
        4 => (kind, any::<usize>(), holder_pick())
            .prop_map(|(kind, name, by)| Op::Register { kind, name, by }),
        5 => (pick(), holder_pick(), expected)
            .prop_map(|(id, by, expected)| Op::Get { id, by, expected }),
        5 => (pick(), holder_pick()).prop_map(|(id, by)| Op::Release { id, by }),
        5 => (pick(), inherit, holder_pick())
            .prop_map(|(fork_point, inherit, by)| Op::Start { fork_point, inherit, by }),
        4 => (pick(), proptest::option::of(0u32..1000))
            .prop_map(|(pid, result)| Op::Finished { pid, result }),
        5 => (join_point_pick(), pick(), pick()).prop_map(|(join_point, pid, by)| Op::Join { join_point, pid, by }),
        2 => (join_point_pick(), pick()).prop_map(|(join_point, pid)| Op::JoinNowait { join_point, pid }),
        1 => Just(Op::Shutdown),
    ]
}

struct MResource {
    id: ResId,
    desc: ResourceDesc,
    users: Vec<Holder>,
}

struct MProcess {
    pid: ProcessId,
    join_point: ResId,
    started_by: Holder,
    running: bool,
    result: Option<u32>,
    inherited: Vec<ResId>,
    waiter: Option<ProcessId>,
}

/// The reference model: vectors in id order and linear scans.
#[derive(Default)]
struct Model {
    next_res: u64,
    next_pid: u64,
    resources: Vec<MResource>,
    processes: Vec<MProcess>,
}

impl Model {
    fn resource(&self, id: ResId) -> Option<&MResource> {
        self.resources.iter().find(|r| r.id == id)
    }

    fn is_running(&self, pid: ProcessId) -> bool {
        self.processes.iter().any(|p| p.pid == pid && p.running)
    }

    fn caller_ok(&self, by: Holder) -> Result<(), RegistryError> {
        match by {
            Holder::Process(pid) if !self.is_running(pid) => {
                Err(RegistryError::UnknownProcess(pid))
            }
            _ => Ok(()),
        }
    }

    fn is_join_point(&self, id: ResId) -> bool {
        matches!(
            self.resource(id).map(|r| &r.desc),
            Some(ResourceDesc::JoinPoint { .. })
        )
    }

    fn add(&mut self, desc: ResourceDesc, by: Holder) -> ResId {
        let id = ResId(self.next_res);
        self.next_res += 1;
        self.resources.push(MResource {
            id,
            desc,
            users: vec![by],
        });
        id
    }

    fn def_process(&mut self) -> (ResId, ResId) {
        let fork_point = ResId(self.next_res);
        let join_point = ResId(self.next_res + 1);
        self.add(ResourceDesc::ForkPoint { join_point }, Holder::Master);
        self.add(ResourceDesc::JoinPoint { fork_point }, Holder::Master);
        (fork_point, join_point)
    }

    fn register(&mut self, kind: RegKind, name: &Name, by: Holder) -> Result<ResId, RegistryError> {
        self.caller_ok(by)?;
        let (desc, valid) = match kind {
            RegKind::File => (ResourceDesc::File(name.text.clone().into()), name.file),
            RegKind::Shm => (ResourceDesc::PosixShm(name.text.clone()), name.shm),
            RegKind::Sem => (ResourceDesc::PosixSem(name.text.clone()), name.sem),
            RegKind::Prealloc => (
                ResourceDesc::PosixShmPreallocated {
                    name: name.text.clone(),
                    size: 64,
                },
                name.shm,
            ),
            RegKind::ForkPoint => {
                return Err(RegistryError::NotRegistrable(ResourceKind::ForkPoint));
            }
        };
        if !valid {
            return Err(RegistryError::InvalidName(name.text.clone()));
        }
        Ok(self.add(desc, by))
    }

    fn get(
        &mut self,
        id: ResId,
        by: Holder,
        expected: Option<ResourceKind>,
    ) -> Result<ResourceDesc, RegistryError> {
        self.caller_ok(by)?;
        let resource = self.resource(id).ok_or(RegistryError::NoResource(id))?;
        let found = resource.desc.kind();
        if let Some(expected) = expected
            && expected != found
        {
            return Err(RegistryError::WrongKind {
                id,
                expected,
                found,
            });
        }
        if let Holder::Process(pid) = by {
            let process = self.processes.iter().find(|p| p.pid == pid).unwrap();
            if found == ResourceKind::PosixShmPreallocated && !process.inherited.contains(&id) {
                return Err(RegistryError::NotShared(id));
            }
            let resource = self.resources.iter_mut().find(|r| r.id == id).unwrap();
            if !resource.users.contains(&by) {
                resource.users.push(by);
            }
        }
        Ok(self.resource(id).unwrap().desc.clone())
    }

    fn release(&mut self, id: ResId, by: Holder) -> Option<Destroy> {
        let index = self.resources.iter().position(|r| r.id == id)?;
        let resource = &mut self.resources[index];
        let user = resource.users.iter().position(|u| *u == by)?;
        resource.users.remove(user);
        if !resource.users.is_empty() {
            return None;
        }
        let resource = self.resources.remove(index);
        if let ResourceDesc::JoinPoint { .. } = resource.desc {
            self.processes
                .retain(|p| p.running || p.join_point != resource.id);
        }
        Some(Destroy {
            id,
            desc: resource.desc,
        })
    }

    fn start(
        &mut self,
        fork_point: ResId,
        inherit: &Inherit,
        by: Holder,
    ) -> Result<Started, RegistryError> {
        self.caller_ok(by)?;
        let join_point = match self.resource(fork_point).map(|r| &r.desc) {
            Some(ResourceDesc::ForkPoint { join_point }) => *join_point,
            _ => return Err(RegistryError::NoResource(fork_point)),
        };
        let mut inherited: Vec<ResId> = match inherit {
            Inherit::All => self
                .resources
                .iter()
                .filter(|r| r.desc.kind() == ResourceKind::PosixShmPreallocated)
                .map(|r| r.id)
                .collect(),
            Inherit::Resources(ids) => {
                for &id in ids {
                    let resource = self.resource(id).ok_or(RegistryError::NoResource(id))?;
                    if resource.desc.kind() != ResourceKind::PosixShmPreallocated {
                        return Err(RegistryError::WrongKind {
                            id,
                            expected: ResourceKind::PosixShmPreallocated,
                            found: resource.desc.kind(),
                        });
                    }
                }
                ids.clone()
            }
            _ => Vec::new(),
        };
        inherited.sort();
        inherited.dedup();
        let pid = ProcessId(self.next_pid);
        self.next_pid += 1;
        let descs = inherited
            .iter()
            .map(|&id| (id, self.resource(id).unwrap().desc.clone()))
            .collect();
        self.processes.push(MProcess {
            pid,
            join_point,
            started_by: by,
            running: true,
            result: None,
            inherited,
            waiter: None,
        });
        Ok(Started {
            pid,
            join_point,
            inherited: descs,
        })
    }

    fn finished(&mut self, pid: ProcessId, result: Option<u32>) -> Vec<Action<u32>> {
        if !self.is_running(pid) {
            return Vec::new();
        }
        let me = Holder::Process(pid);
        let used: Vec<ResId> = self
            .resources
            .iter()
            .filter(|r| r.users.contains(&me))
            .map(|r| r.id)
            .collect();
        let mut actions: Vec<Action<u32>> = used
            .into_iter()
            .filter_map(|id| self.release(id, me))
            .map(Action::Destroy)
            .collect();
        for process in &mut self.processes {
            if process.waiter == Some(pid) {
                process.waiter = None;
            }
        }
        let index = self.processes.iter().position(|p| p.pid == pid).unwrap();
        let join_point = self.processes[index].join_point;
        if let Some(joiner) = self.processes[index].waiter {
            self.processes.remove(index);
            actions.push(Action::Wake(Wake {
                joiner,
                target: pid,
                join_point,
                result,
            }));
        } else if self.is_join_point(join_point) {
            self.processes[index].running = false;
            self.processes[index].result = result;
        } else {
            self.processes.remove(index);
        }
        actions
    }

    fn join(
        &mut self,
        join_point: ResId,
        pid: ProcessId,
        by: ProcessId,
    ) -> Result<JoinOutcome<u32>, RegistryError> {
        self.caller_ok(Holder::Process(by))?;
        if !self.is_join_point(join_point) {
            return Err(RegistryError::NoResource(join_point));
        }
        let unknown = Err(RegistryError::UnknownProcess(pid));
        if pid == by {
            return unknown;
        }
        let Some(index) = self.processes.iter().position(|p| p.pid == pid) else {
            return unknown;
        };
        let process = &mut self.processes[index];
        if process.join_point != join_point {
            return unknown;
        }
        if !process.running {
            let process = self.processes.remove(index);
            return Ok(JoinOutcome::Ready(process.result));
        }
        if process.waiter.is_some() {
            return unknown;
        }
        process.waiter = Some(by);
        Ok(JoinOutcome::Deferred)
    }

    fn join_nowait(&mut self, join_point: ResId, pid: ProcessId) -> Option<u32> {
        if !self.is_join_point(join_point) {
            return None;
        }
        let index = self
            .processes
            .iter()
            .position(|p| p.pid == pid && !p.running && p.join_point == join_point)?;
        self.processes.remove(index).result
    }

    fn shutdown(&mut self) -> Vec<Destroy> {
        self.processes.retain(|p| p.running);
        self.resources
            .drain(..)
            .map(|r| Destroy {
                id: r.id,
                desc: r.desc,
            })
            .collect()
    }

    // Candidate lists for picking ids, all in id order.

    fn live_ids(&self, kind: Option<ResourceKind>) -> Vec<ResId> {
        self.resources
            .iter()
            .filter(|r| kind.is_none_or(|k| r.desc.kind() == k))
            .map(|r| r.id)
            .collect()
    }

    fn known_pids(&self, running_only: bool) -> Vec<ProcessId> {
        self.processes
            .iter()
            .filter(|p| p.running || !running_only)
            .map(|p| p.pid)
            .collect()
    }
}

fn resolve_res(pick: &Pick, candidates: &[ResId]) -> ResId {
    match pick {
        Pick::Live(n) if !candidates.is_empty() => candidates[n % candidates.len()],
        Pick::Live(_) => ResId(0),
        Pick::Raw(n) => ResId(*n),
    }
}

fn resolve_pid(pick: &Pick, candidates: &[ProcessId]) -> ProcessId {
    match pick {
        Pick::Live(n) if !candidates.is_empty() => candidates[n % candidates.len()],
        Pick::Live(_) => ProcessId(0),
        Pick::Raw(n) => ProcessId(*n),
    }
}

fn resolve_join_point(pick: Option<&Pick>, pid: ProcessId, model: &Model) -> ResId {
    match pick {
        Some(pick) => resolve_res(pick, &model.live_ids(Some(ResourceKind::JoinPoint))),
        None => model
            .processes
            .iter()
            .find(|p| p.pid == pid)
            .map_or(ResId(1), |p| p.join_point),
    }
}

fn resolve_holder(pick: &HolderPick, model: &Model) -> Holder {
    match pick {
        HolderPick::Master => Holder::Master,
        HolderPick::Process(pick) => Holder::Process(resolve_pid(pick, &model.known_pids(true))),
    }
}

/// What the registry shows of its resources: id, description, users in order.
fn registry_resources(registry: &Registry<u32>) -> Vec<(ResId, ResourceDesc, Vec<Holder>)> {
    registry
        .resources()
        .map(|r| (r.id(), r.desc().clone(), r.users().collect()))
        .collect()
}

fn model_resources(model: &Model) -> Vec<(ResId, ResourceDesc, Vec<Holder>)> {
    model
        .resources
        .iter()
        .map(|r| {
            let mut users = r.users.clone();
            users.sort();
            (r.id, r.desc.clone(), users)
        })
        .collect()
}

/// pid, state, result, join point, starter, waiter, awaited, used, inherited.
type ProcessRow = (
    ProcessId,
    ProcessState,
    Option<u32>,
    ResId,
    Holder,
    Option<ProcessId>,
    Vec<ProcessId>,
    Vec<ResId>,
    Vec<ResId>,
);

fn registry_processes(registry: &Registry<u32>) -> Vec<ProcessRow> {
    let mut rows: Vec<ProcessRow> = registry
        .processes()
        .map(|p| {
            (
                p.pid(),
                p.state(),
                p.result().copied(),
                p.join_point(),
                p.started_by(),
                p.waiter(),
                p.awaiting().collect(),
                p.used().collect(),
                p.inherited().collect(),
            )
        })
        .collect();
    rows.sort_by_key(|row| row.0);
    rows
}

fn model_processes(model: &Model) -> Vec<ProcessRow> {
    let mut rows: Vec<ProcessRow> = model
        .processes
        .iter()
        .map(|p| {
            let state = if p.running {
                ProcessState::Running
            } else {
                ProcessState::Finished {
                    has_result: p.result.is_some(),
                }
            };
            let mut awaiting: Vec<ProcessId> = model
                .processes
                .iter()
                .filter(|q| q.waiter == Some(p.pid))
                .map(|q| q.pid)
                .collect();
            awaiting.sort();
            let used: Vec<ResId> = model
                .resources
                .iter()
                .filter(|r| r.users.contains(&Holder::Process(p.pid)))
                .map(|r| r.id)
                .collect();
            let (waiter, inherited) = if p.running {
                (p.waiter, p.inherited.clone())
            } else {
                (None, Vec::new())
            };
            (
                p.pid,
                state,
                p.result,
                p.join_point,
                p.started_by,
                waiter,
                awaiting,
                used,
                inherited,
            )
        })
        .collect();
    rows.sort_by_key(|row| row.0);
    rows
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let names = names();
    let mut registry: Registry<u32> = Registry::new();
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::DefProcess => {
                prop_assert_eq!(registry.def_process(), model.def_process(), "step {}", step);
            }
            Op::Register { kind, name, by } => {
                let name = &names[name % names.len()];
                let by = resolve_holder(by, &model);
                let desc = match kind {
                    RegKind::File => ResourceDesc::File(name.text.clone().into()),
                    RegKind::Shm => ResourceDesc::PosixShm(name.text.clone()),
                    RegKind::Sem => ResourceDesc::PosixSem(name.text.clone()),
                    RegKind::Prealloc => ResourceDesc::PosixShmPreallocated {
                        name: name.text.clone(),
                        size: 64,
                    },
                    RegKind::ForkPoint => ResourceDesc::ForkPoint {
                        join_point: ResId(1),
                    },
                };
                prop_assert_eq!(
                    registry.register(desc, by),
                    model.register(*kind, name, by),
                    "step {}",
                    step
                );
            }
            Op::Get { id, by, expected } => {
                let id = resolve_res(id, &model.live_ids(None));
                let by = resolve_holder(by, &model);
                let got = match expected {
                    Some(kind) => registry.get_kind(id, by, *kind).cloned(),
                    None => registry.get(id, by).cloned(),
                };
                prop_assert_eq!(got, model.get(id, by, *expected), "step {}", step);
            }
            Op::Release { id, by } => {
                let id = resolve_res(id, &model.live_ids(None));
                let by = resolve_holder(by, &model);
                prop_assert_eq!(
                    registry.release(id, by),
                    model.release(id, by),
                    "step {}",
                    step
                );
            }
            Op::Start {
                fork_point,
                inherit,
                by,
            } => {
                let fork_point =
                    resolve_res(fork_point, &model.live_ids(Some(ResourceKind::ForkPoint)));
                let inherit = match inherit {
                    InheritPick::Nothing => Inherit::Nothing,
                    InheritPick::All => Inherit::All,
                    InheritPick::Resources(picks) => {
                        // Mostly preallocated shm, sometimes anything live.
                        let prealloc = model.live_ids(Some(ResourceKind::PosixShmPreallocated));
                        let any = model.live_ids(None);
                        Inherit::Resources(
                            picks
                                .iter()
                                .enumerate()
                                .map(|(i, pick)| {
                                    resolve_res(pick, if i % 3 == 2 { &any } else { &prealloc })
                                })
                                .collect(),
                        )
                    }
                };
                let by = resolve_holder(by, &model);
                prop_assert_eq!(
                    registry.start(fork_point, &inherit, by),
                    model.start(fork_point, &inherit, by),
                    "step {}",
                    step
                );
            }
            Op::Finished { pid, result } => {
                let pid = resolve_pid(pid, &model.known_pids(true));
                prop_assert_eq!(
                    registry.finished(pid, *result),
                    model.finished(pid, *result),
                    "step {}",
                    step
                );
            }
            Op::Join {
                join_point,
                pid,
                by,
            } => {
                let pid = resolve_pid(pid, &model.known_pids(false));
                let join_point = resolve_join_point(join_point.as_ref(), pid, &model);
                let by = resolve_pid(by, &model.known_pids(true));
                prop_assert_eq!(
                    registry.join(join_point, pid, by),
                    model.join(join_point, pid, by),
                    "step {}",
                    step
                );
            }
            Op::JoinNowait { join_point, pid } => {
                let pid = resolve_pid(pid, &model.known_pids(false));
                let join_point = resolve_join_point(join_point.as_ref(), pid, &model);
                prop_assert_eq!(
                    registry.join_nowait(join_point, pid),
                    model.join_nowait(join_point, pid),
                    "step {}",
                    step
                );
            }
            Op::Shutdown => {
                prop_assert_eq!(registry.shutdown(), model.shutdown(), "step {}", step);
            }
        }
        prop_assert_eq!(
            registry_resources(&registry),
            model_resources(&model),
            "resources after step {}",
            step
        );
        prop_assert_eq!(
            registry_processes(&registry),
            model_processes(&model),
            "processes after step {}",
            step
        );
        prop_assert_eq!(registry.resource_count(), model.resources.len());
        prop_assert_eq!(registry.process_count(), model.processes.len());
        prop_assert_eq!(
            registry.running_processes().collect::<Vec<_>>(),
            model.known_pids(true)
        );
        prop_assert_eq!(
            registry.is_empty(),
            model.resources.is_empty() && model.processes.is_empty()
        );
    }
    Ok(())
}

/// Cases per property: `PROPTEST_CASES` when set (`cargo xtask prop` sets it), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(512)))]

    #[test]
    fn registry_matches_the_model(ops in proptest::collection::vec(op(), 1..150)) {
        run(&ops)?;
    }
}

/// A fixed scenario through the same harness, so that a change in the model's conventions
/// shows up even when the random cases are lucky.
#[test]
fn a_fixed_sequence_matches_the_model() {
    let live = Pick::Live;
    let mut ops = vec![Op::DefProcess, Op::DefProcess];
    for i in 0..4 {
        ops.push(Op::Start {
            fork_point: live(i % 2),
            inherit: InheritPick::All,
            by: HolderPick::Master,
        });
        ops.push(Op::Register {
            kind: RegKind::Prealloc,
            name: i,
            by: HolderPick::Process(live(i)),
        });
    }
    ops.push(Op::Join {
        join_point: None,
        pid: Pick::Raw(2),
        by: Pick::Raw(0),
    });
    ops.push(Op::Finished {
        pid: Pick::Raw(2),
        result: Some(5),
    });
    ops.push(Op::Release {
        id: Pick::Raw(1),
        by: HolderPick::Master,
    });
    ops.push(Op::Shutdown);
    run(&ops).unwrap();
}
