//! The chameneos game: creatures of three colours meet in pairs at a meeting place, and each
//! leaves a meeting in the complement of its colour and its partner's. Each creature and the
//! meeting place is a process; they talk only through `netmcore::shared` channels.
//!
//! ```text
//! cargo run --release --example chameneos                 # 600000 meetings a game
//! cargo run --release --example chameneos -- 6000
//! ```
//!
//! The program turns itself into a netmcore master. Its first process prints the complements
//! table, then plays two games of N meetings: three creatures (blue, red, yellow), then ten
//! (blue red yellow red yellow blue red yellow red blue). A creature sends its id and colour
//! to the meeting place over one channel that all share, and waits on a channel of its own for
//! the reply: the id and colour of its partner, or the order to stop. The meeting place pairs
//! the creatures in the order they come; after N meetings it tells every creature to stop,
//! and each returns its tally. For each game the program prints the initial colours, each
//! creature's meetings and its meetings with itself (spelled), and the sum of the meetings
//! spelled digit by digit, twice N since two creatures count each meeting:
//!
//! ```text
//! blue + blue -> blue
//! ...
//! yellow + yellow -> yellow
//!
//!  blue red yellow
//! 4012 zero
//! 3977 zero
//! 4011 zero
//!  one two zero zero zero
//! 3 creatures: 6000 meetings in 0.031 s, 193548 meetings/s
//! ```
//!
//! The time is the meeting place's, from the first arrival to the last meeting. A creature
//! that dies ends the game with an error that names it, never a hang: the meeting place
//! learns it when it tells that creature something (its reply channel is disconnected),
//! which it also does every 16,384 meetings and when nobody came for 100 ms (a `Ping` the
//! creature ignores); it then stops everyone else, and the first process reports which
//! creature ended without a tally. A meeting place that dies is a disconnected channel for
//! every creature. The
//! socket directory of the master is a fresh directory under the system's temporary
//! directory, named after the process, and removed at the end. This is OCamlnet's `chameneos`
//! example over netmcore's channels instead of camlboxes.

mod game;

use anyhow::Context as _;
use netmcore::Config;
use netmcore::process;

use game::Game;

/// The meetings of a game when no count is given.
const DEFAULT_MEETINGS: u64 = 600_000;

fn main() -> anyhow::Result<()> {
    let meetings = match std::env::args().nth(1) {
        None => DEFAULT_MEETINGS,
        Some(arg) => match arg.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("usage: chameneos [MEETINGS]   (a count; default {DEFAULT_MEETINGS})");
                std::process::exit(2);
            }
        },
    };

    // Process types are defined before startup: the workers are forked from the master and
    // find the bodies in their copy of its memory.
    let game = Game::define()?;
    let first = process::def_process(move |meetings: u64| -> Result<(), String> {
        play_both(&game, meetings).map_err(|e| format!("{e:#}"))
    })?;

    let socket_dir =
        std::env::temp_dir().join(format!("netmcore-chameneos-{}", std::process::id()));
    let outcome = netmcore::run(Config::new(&socket_dir), &first, &meetings);
    let _ = std::fs::remove_dir_all(&socket_dir);
    outcome?
        .context("the first process ended without a result")?
        .map_err(anyhow::Error::msg)
}

/// In the first process: the table, then the game of three creatures and the game of ten.
fn play_both(game: &Game, meetings: u64) -> anyhow::Result<()> {
    print!("{}", game::complements_table());
    for colours in [&game::THREE[..], &game::TEN[..]] {
        let played = game
            .play(colours, meetings)
            .with_context(|| format!("the game of {} creatures", colours.len()))?;
        print!("\n{}", played.report());
        println!("{}", played.summary());
    }
    Ok(())
}
