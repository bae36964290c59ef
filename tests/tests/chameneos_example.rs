//! The `chameneos` example of the facade plays the game right: the colours change as the
//! complements table says, numbers are spelled digit by digit, the meeting place pairs the
//! creatures in the order they come and stops at the game's count, and a game played
//! sequentially with the example's own bookkeeping counts every meeting twice; then the game
//! through processes: the meeting place and every creature a process, talking through
//! channels, count every meeting twice, and a creature or the meeting place SIGKILLed in the
//! middle of a game ends it with an error that names it, never a hang.
//!
//! The example's module is included from `netmcore/examples/chameneos/game.rs`, so that this
//! checks the example's own code.

mod support;

#[allow(
    dead_code,
    reason = "the example's module has parts that only the example uses"
)]
#[path = "../../netmcore/examples/chameneos/game.rs"]
mod game;

use std::process::ExitCode;

use anyhow::{Context as _, bail, ensure};
use game::{Arrival, Colour, Creature, CreatureArgs, Game, Pairing, Place, PlaceArgs, Tally};
use netmcore::process;
use rustix::process::Signal;
use support::{
    Scenario, cases, coordinator, read_pid, run_coordinator, send_signal, write_own_pid,
};

fn main() -> ExitCode {
    support::run_cases(cases![
        the_complements_table_is_the_games,
        a_complement_is_the_colour_neither_has,
        numbers_are_spelled_digit_by_digit,
        the_meeting_place_pairs_in_order_and_stops_at_the_count,
        a_creature_counts_its_meetings_and_takes_the_complement,
        a_sequential_game_counts_every_meeting_twice,
        games_of_three_and_ten_processes_count_every_meeting_twice,
        a_creature_killed_mid_game_ends_the_game_with_an_error,
        a_creature_killed_in_a_game_of_two_ends_it_with_an_error,
        a_game_needs_two_creatures,
        a_meeting_place_killed_mid_game_ends_the_game_with_an_error,
    ])
}

const BLUE: Colour = Colour::Blue;
const RED: Colour = Colour::Red;
const YELLOW: Colour = Colour::Yellow;

/// The table, line by line, as the game prints it.
fn the_complements_table_is_the_games(_: &Scenario) -> anyhow::Result<()> {
    let expected = "\
blue + blue -> blue
blue + red -> yellow
blue + yellow -> red
red + blue -> yellow
red + red -> red
red + yellow -> blue
yellow + blue -> red
yellow + red -> blue
yellow + yellow -> yellow
";
    let table = game::complements_table();
    ensure!(table == expected, "the table is\n{table}");
    Ok(())
}

/// Two creatures of one colour keep it; of two colours, both take the third; the order of
/// the two does not count.
fn a_complement_is_the_colour_neither_has(_: &Scenario) -> anyhow::Result<()> {
    for a in Colour::ALL {
        ensure!(a.complement(a) == a, "{a} + {a}");
        for b in Colour::ALL {
            ensure!(a.complement(b) == b.complement(a), "{a} + {b}");
            if a != b {
                let c = a.complement(b);
                ensure!(c != a && c != b, "{a} + {b} -> {c}");
            }
        }
    }
    ensure!(BLUE.complement(RED) == YELLOW);
    ensure!(RED.complement(YELLOW) == BLUE);
    ensure!(YELLOW.complement(BLUE) == RED);
    Ok(())
}

/// Each digit's name after a space, zero included.
fn numbers_are_spelled_digit_by_digit(_: &Scenario) -> anyhow::Result<()> {
    ensure!(game::spell(0) == " zero");
    ensure!(game::spell(7) == " seven");
    ensure!(game::spell(1200) == " one two zero zero");
    ensure!(game::spell(1_234_567_890) == " one two three four five six seven eight nine zero");
    ensure!(game::colours_line(&game::THREE) == " blue red yellow");
    ensure!(
        game::colours_line(&game::TEN) == " blue red yellow red yellow blue red yellow red blue"
    );
    Ok(())
}

fn arrival(id: u32, colour: Colour) -> Arrival {
    Arrival { id, colour }
}

/// The first to come waits, the second meets it; after the last meeting of the game nobody
/// is paired and nobody waits.
fn the_meeting_place_pairs_in_order_and_stops_at_the_count(_: &Scenario) -> anyhow::Result<()> {
    let mut place = Pairing::new(2);
    let (a, b, c) = (arrival(0, BLUE), arrival(1, RED), arrival(2, YELLOW));
    ensure!(place.arrive(a).is_none() && place.meetings() == 0);
    ensure!(place.arrive(b) == Some((a, b)));
    ensure!(place.meetings() == 1 && !place.is_over());
    ensure!(place.arrive(c).is_none() && place.meetings() == 1);
    let a = arrival(0, YELLOW);
    ensure!(place.arrive(a) == Some((c, a)));
    ensure!(place.meetings() == 2 && place.is_over());
    // Over: nobody is paired, and nobody waits for a later one.
    ensure!(place.arrive(b).is_none() && place.arrive(c).is_none());
    ensure!(place.meetings() == 2);

    let mut empty = Pairing::new(0);
    ensure!(empty.is_over() && empty.arrive(a).is_none() && empty.arrive(b).is_none());
    ensure!(empty.meetings() == 0);
    Ok(())
}

/// A meeting counts once, a meeting with itself also as a self-meeting, and the colour
/// becomes the complement of the two.
fn a_creature_counts_its_meetings_and_takes_the_complement(_: &Scenario) -> anyhow::Result<()> {
    let mut t = Tally::new(3, BLUE);
    ensure!(t.arrival() == arrival(3, BLUE));
    ensure!(t.line() == "0 zero");
    t.meet(arrival(1, RED));
    ensure!(t.colour == YELLOW && t.meetings == 1 && t.self_meetings == 0);
    t.meet(arrival(2, YELLOW));
    ensure!(t.colour == YELLOW && t.meetings == 2 && t.self_meetings == 0);
    t.meet(arrival(3, BLUE));
    ensure!(t.colour == RED && t.meetings == 3 && t.self_meetings == 1);
    ensure!(t.arrival() == arrival(3, RED));
    ensure!(t.line() == "3 one", "{}", t.line());
    Ok(())
}

/// The ten creatures come in turn, each as soon as its last meeting is over: the tallies
/// sum to twice the meetings, nobody meets itself, and the colours follow the table.
fn a_sequential_game_counts_every_meeting_twice(_: &Scenario) -> anyhow::Result<()> {
    const MEETINGS: u64 = 1001;
    let mut tallies: Vec<Tally> = (0u32..)
        .zip(game::TEN)
        .map(|(id, colour)| Tally::new(id, colour))
        .collect();
    let mut place = Pairing::new(MEETINGS);
    let mut waiting = None;
    let mut turn = 0;
    while !place.is_over() {
        let who = turn % tallies.len();
        turn += 1;
        // A creature that waits for a partner does not come again.
        if waiting == Some(who) {
            continue;
        }
        let met = place.arrive(tallies[who].arrival());
        waiting = if met.is_some() { None } else { Some(who) };
        if let Some((first, second)) = met {
            ensure!(first.id != second.id, "{first:?} met itself");
            tallies[first.id as usize].meet(second);
            tallies[second.id as usize].meet(first);
            ensure!(
                tallies[first.id as usize].colour == tallies[second.id as usize].colour,
                "after a meeting both have the complement"
            );
        }
    }
    let total: u64 = tallies.iter().map(|t| t.meetings).sum();
    ensure!(total == 2 * MEETINGS, "{total}");
    ensure!(tallies.iter().all(|t| t.self_meetings == 0));
    ensure!(game::spell(total) == " two zero zero two");
    Ok(())
}

/// The game through processes, three creatures then ten, as the example plays it: the
/// meeting place hosts every meeting, the creatures count each twice, nobody meets itself.
fn games_of_three_and_ten_processes_count_every_meeting_twice(s: &Scenario) -> anyhow::Result<()> {
    const MEETINGS: u64 = 5000;
    let game = Game::define()?;
    let first = coordinator(move |()| {
        for colours in [&game::THREE[..], &game::TEN[..]] {
            let played = game.play(colours, MEETINGS)?;
            ensure!(played.hosted.meetings == MEETINGS);
            ensure!(played.total() == 2 * MEETINGS, "{}", played.total());
            ensure!(played.tallies.len() == colours.len());
            for (id, tally) in (0u32..).zip(&played.tallies) {
                ensure!(tally.id == id && tally.self_meetings == 0, "{tally:?}");
            }
            let report = played.report();
            let lines: Vec<&str> = report.lines().collect();
            ensure!(lines.len() == colours.len() + 2, "{report}");
            ensure!(lines[0] == game::colours_line(colours));
            ensure!(
                lines[colours.len() + 1] == " one zero zero zero zero",
                "{report}"
            );
            ensure!(
                played
                    .summary()
                    .starts_with(&format!("{} creatures: 5000 meetings in ", colours.len())),
                "{}",
                played.summary()
            );
        }
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// Kills the process whose pid `path` receives, with SIGKILL.
fn def_killer() -> anyhow::Result<process::ProcessType<std::path::PathBuf, support::Report>> {
    coordinator(|path: std::path::PathBuf| {
        let pid = read_pid(&path)?;
        send_signal(pid, Signal::KILL)
    })
}

/// The meetings of a game that a death cuts short: more than the game would play in hours.
const ENDLESS: u64 = 1 << 40;

/// Creature 1 (red) of three is SIGKILLed once it plays: the game ends with an error that
/// names it, the other processes end, nothing is left behind.
fn a_creature_killed_mid_game_ends_the_game_with_an_error(s: &Scenario) -> anyhow::Result<()> {
    kill_creature_1(s, &game::THREE)
}

/// The same with two creatures: the one left alone waits at the meeting place for a partner
/// that never comes, and the meeting place finds out by itself that the other died.
fn a_creature_killed_in_a_game_of_two_ends_it_with_an_error(s: &Scenario) -> anyhow::Result<()> {
    kill_creature_1(s, &[Colour::Yellow, Colour::Red])
}

/// Plays a game of `colours` (creature 1 red) without end, and SIGKILLs creature 1 once it
/// opened its ends: the game must end with an error that names it.
fn kill_creature_1(s: &Scenario, colours: &[Colour]) -> anyhow::Result<()> {
    let colours = colours.to_vec();
    let game = Game::define()?;
    let pid_file = s.path("creature-1.pid");
    let doomed = pid_file.clone();
    let creature = process::def_process(move |args: CreatureArgs| {
        let marked = args.id == 1;
        let outcome = Creature::open(args).and_then(|creature| {
            if marked {
                write_own_pid(&doomed)?;
            }
            creature.play()
        });
        outcome.map_err(|e| format!("{e:#}"))
    })?;
    let game = Game {
        place: game.place,
        creature,
    };
    let killer = def_killer()?;
    let first = coordinator(move |()| {
        let killing = killer.start(&pid_file)?;
        let outcome = game.play(&colours, ENDLESS);
        support::verdict(killer.join(killing)?).context("the killer")?;
        match outcome {
            Ok(played) => bail!("the game ended well: {}", played.summary()),
            Err(e) => {
                let message = format!("{e:#}");
                ensure!(
                    message.contains("creature 1 (red) ended without a tally"),
                    "{message}"
                );
                Ok(())
            }
        }
    })?;
    run_coordinator(s, &first, &())
}

/// The meeting place is SIGKILLed once it opened its ends: every creature fails, and the
/// game ends with an error that says the meeting place is gone.
fn a_meeting_place_killed_mid_game_ends_the_game_with_an_error(s: &Scenario) -> anyhow::Result<()> {
    let game = Game::define()?;
    let pid_file = s.path("place.pid");
    let doomed = pid_file.clone();
    let place = process::def_process(move |args: PlaceArgs| {
        let outcome = Place::open(args).and_then(|place| {
            write_own_pid(&doomed)?;
            place.host()
        });
        outcome.map_err(|e| format!("{e:#}"))
    })?;
    let game = Game {
        place,
        creature: game.creature,
    };
    let killer = def_killer()?;
    let first = coordinator(move |()| {
        let killing = killer.start(&pid_file)?;
        let outcome = game.play(&game::THREE, ENDLESS);
        support::verdict(killer.join(killing)?).context("the killer")?;
        match outcome {
            Ok(played) => bail!("the game ended well: {}", played.summary()),
            Err(e) => {
                let message = format!("{e:#}");
                ensure!(message.contains("the meeting place is gone"), "{message}");
                Ok(())
            }
        }
    })?;
    run_coordinator(s, &first, &())
}

/// One creature cannot meet anyone: a game of some meetings is refused before any process
/// starts; a game of none ends at once.
fn a_game_needs_two_creatures(s: &Scenario) -> anyhow::Result<()> {
    let game = Game::define()?;
    let first = coordinator(move |()| {
        let refused = game.play(&[Colour::Blue], 10);
        ensure!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("two creatures")),
            "{refused:?}"
        );
        let played = game.play(&[Colour::Blue], 0)?;
        ensure!(played.total() == 0 && played.hosted.meetings == 0);
        ensure!(
            played.report() == " blue\n0 zero\n zero\n",
            "{}",
            played.report()
        );
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}
