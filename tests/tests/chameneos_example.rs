//! The `chameneos` example of the facade plays the game right: the colours change as the
//! complements table says, numbers are spelled digit by digit, the meeting place pairs the
//! creatures in the order they come and stops at the game's count, and a game played
//! sequentially with the example's own bookkeeping counts every meeting twice.
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

use anyhow::ensure;
use game::{Arrival, Colour, Pairing, Tally};
use support::{Scenario, cases};

fn main() -> ExitCode {
    support::run_cases(cases![
        the_complements_table_is_the_games,
        a_complement_is_the_colour_neither_has,
        numbers_are_spelled_digit_by_digit,
        the_meeting_place_pairs_in_order_and_stops_at_the_count,
        a_creature_counts_its_meetings_and_takes_the_complement,
        a_sequential_game_counts_every_meeting_twice,
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
    ensure!(place.arrive(a).is_none() && place.waiting() == Some(a));
    ensure!(place.arrive(b) == Some((a, b)));
    ensure!(place.waiting().is_none() && place.meetings() == 1 && !place.is_over());
    ensure!(place.arrive(c).is_none() && place.waiting() == Some(c));
    let a = arrival(0, YELLOW);
    ensure!(place.arrive(a) == Some((c, a)));
    ensure!(place.meetings() == 2 && place.is_over());
    ensure!(place.arrive(b).is_none() && place.waiting().is_none());
    ensure!(place.meetings() == 2);

    let mut empty = Pairing::new(0);
    ensure!(empty.is_over() && empty.arrive(a).is_none() && empty.waiting().is_none());
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
    let mut turn = 0;
    while !place.is_over() {
        let who = turn % tallies.len();
        turn += 1;
        if place.waiting().map(|w| w.id as usize) == Some(who) {
            continue;
        }
        if let Some((first, second)) = place.arrive(tallies[who].arrival()) {
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
