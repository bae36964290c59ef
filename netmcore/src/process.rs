//! The statically typed layer over processes (the seed's `Netmcore_process`).
//!
//! A [`ProcessType<A, R>`] is a process type whose body takes an `A` and returns an `R`. It
//! wraps the argument into an [`Encap`] on [`start`](ProcessType::start) and unwraps the
//! result on [`join`](ProcessType::join), so that both ends agree on the types at compile
//! time.
//!
//! ```
//! use netmcore::process;
//!
//! let double = process::def_process(|n: u32| 2 * n)?;
//! assert_eq!(double.join_point().0, double.fork_point().0 + 1);
//!
//! // A process starts only inside a running master.
//! assert!(matches!(double.start(&21), Err(netmcore::Error::NotStarted)));
//! # Ok::<(), netmcore::Error>(())
//! ```

use std::fmt;
use std::marker::PhantomData;

use netmcore_encap::Encap;
use netmcore_resources::{Inherit, ProcessId, ResId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Result;

/// A process type whose body maps an `A` to an `R`: its fork point and its join point.
///
/// It is two ids, so it is `Copy` and may be captured by the bodies of other process types.
pub struct ProcessType<A, R> {
    fork_point: ResId,
    join_point: ResId,
    types: PhantomData<fn(A) -> R>,
}

impl<A, R> Clone for ProcessType<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, R> Copy for ProcessType<A, R> {}

impl<A, R> fmt::Debug for ProcessType<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessType")
            .field("fork_point", &self.fork_point)
            .field("join_point", &self.join_point)
            .field("arg", &std::any::type_name::<A>())
            .field("result", &std::any::type_name::<R>())
            .finish()
    }
}

/// Defines a process type whose processes run `body` (see [`crate::def_process`]).
///
/// The argument is unwrapped in the new process before `body` runs, and the result wrapped
/// after it returned. A process started through the untyped [`crate::start`] with an
/// argument of another type panics in its body, so its join gives `None`.
///
/// # Errors
///
/// [`Error::NotInMaster`](crate::Error::NotInMaster) in a worker.
pub fn def_process<A, R, F>(body: F) -> Result<ProcessType<A, R>>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    F: Fn(A) -> R + Send + Sync + 'static,
{
    let (fork_point, join_point) = netmcore_master::def_process(move |arg: Encap| {
        let arg: A = arg
            .into_value()
            .unwrap_or_else(|e| panic!("the argument of a process: {e}"));
        let result = body(arg);
        Encap::wrap(&result).unwrap_or_else(|e| panic!("the result of a process: {e}"))
    })?;
    Ok(ProcessType {
        fork_point,
        join_point,
        types: PhantomData,
    })
}

impl<A, R> ProcessType<A, R>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    /// Starts a process of this type with `arg`, inheriting nothing (see [`crate::start`]).
    ///
    /// # Errors
    ///
    /// As [`crate::start`], and [`Error::Encap`](crate::Error::Encap) when `arg` cannot be
    /// encoded.
    pub fn start(&self, arg: &A) -> Result<ProcessId> {
        self.start_with(arg, Inherit::Nothing)
    }

    /// Starts a process of this type with `arg` and the inheritance `inherit` (see
    /// [`crate::start_with`]).
    ///
    /// A large `Vec<u8>` argument goes from a worker to the new process through a pipe, with
    /// no copy of it made before (see [`crate::start_pieces`]).
    ///
    /// # Errors
    ///
    /// As [`crate::start_with`], and [`Error::Encap`](crate::Error::Encap) when `arg` cannot
    /// be encoded.
    pub fn start_with(&self, arg: &A, inherit: Inherit) -> Result<ProcessId> {
        netmcore_master::start_pieces(self.fork_point, Encap::wrap_pieces(arg)?, inherit)
    }

    /// Waits for process `pid` of this type and returns its result (see [`crate::join`]).
    ///
    /// # Errors
    ///
    /// As [`crate::join`], and [`Error::Encap`](crate::Error::Encap) if the result is not
    /// an `R`.
    pub fn join(&self, pid: ProcessId) -> Result<Option<R>> {
        decode(netmcore_master::join(self.join_point, pid)?)
    }

    /// The result of process `pid` if it has finished with one (see [`crate::join_nowait`]).
    ///
    /// # Errors
    ///
    /// As [`crate::join_nowait`], and [`Error::Encap`](crate::Error::Encap) if the result is
    /// not an `R`.
    pub fn join_nowait(&self, pid: ProcessId) -> Result<Option<R>> {
        decode(netmcore_master::join_nowait(self.join_point, pid)?)
    }
}

impl<A, R> ProcessType<A, R> {
    /// The fork point: what the untyped [`crate::start`] takes.
    pub fn fork_point(&self) -> ResId {
        self.fork_point
    }

    /// The join point: what the untyped [`crate::join`] takes.
    pub fn join_point(&self) -> ResId {
        self.join_point
    }
}

fn decode<R: DeserializeOwned + 'static>(result: Option<Encap>) -> Result<Option<R>> {
    Ok(result.map(|r| r.unwrap()).transpose()?)
}
