//! The classic first netmcore program: a coordinator starts ten `square` processes, one for
//! each of 1, 2, ..., 10, joins them and adds up their results. It prints 385.
//!
//! ```text
//! cargo run --release --example sum_of_squares
//! ```

use netmcore::Config;
use netmcore::process;

fn main() -> netmcore::Result<()> {
    // Process types are defined first, in the program that is about to become the master.
    // Workers are forked from the master, so they find these bodies in their copy of its memory.
    let square = process::def_process(|n: u64| n * n)?;

    // The coordinator is a process too: `join` works in workers, never in the master, whose
    // only job is to supervise. It starts all ten squares at once, then joins each one.
    let coordinator = process::def_process(move |count: u64| -> u64 {
        let pids: Vec<_> = (1..=count)
            .map(|n| square.start(&n).expect("start a square process"))
            .collect();
        pids.into_iter()
            .map(|pid| {
                // `None` would mean the process panicked or died without a result.
                square
                    .join(pid)
                    .expect("join")
                    .expect("a square has a result")
            })
            .sum()
    })?;

    // The master keeps its socket, lock and ledger in a directory of its own.
    let socket_dir =
        std::env::temp_dir().join(format!("netmcore-sum-of-squares-{}", std::process::id()));

    // `run` turns this process into the master, starts the coordinator as the first process with
    // the argument 10, and returns its result once every worker has ended.
    let total = netmcore::run(Config::new(&socket_dir), &coordinator, &10);
    let _ = std::fs::remove_dir_all(&socket_dir);

    match total? {
        Some(total) => println!("{total}"),
        None => {
            eprintln!("the coordinator ended without a result");
            std::process::exit(1);
        }
    }
    Ok(())
}
