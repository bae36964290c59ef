//! The game of the `chameneos` example: the colours and how they change, the spelling of the
//! numbers, the meeting place's pairing and a creature's tally, as plain values; then the
//! processes that play it over `netmcore::shared` channels. The test
//! `tests/tests/chameneos_example.rs` includes this module, so it checks the example's own
//! code.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The colour of a creature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Colour {
    /// Blue.
    Blue,
    /// Red.
    Red,
    /// Yellow.
    Yellow,
}

impl Colour {
    /// The three colours, in the order of the complements table.
    pub const ALL: [Colour; 3] = [Colour::Blue, Colour::Red, Colour::Yellow];

    /// The colour a creature of this colour takes after it met one of colour `other`: its
    /// own when both are the same, otherwise the third colour, the one neither of them has.
    pub fn complement(self, other: Colour) -> Colour {
        match (self, other) {
            (a, b) if a == b => a,
            (Colour::Blue, Colour::Red) | (Colour::Red, Colour::Blue) => Colour::Yellow,
            (Colour::Blue, Colour::Yellow) | (Colour::Yellow, Colour::Blue) => Colour::Red,
            _ => Colour::Blue,
        }
    }

    /// The colour's name in lower case, as the game prints it.
    pub fn name(self) -> &'static str {
        match self {
            Colour::Blue => "blue",
            Colour::Red => "red",
            Colour::Yellow => "yellow",
        }
    }
}

impl fmt::Display for Colour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The first game's creatures: blue, red, yellow.
pub const THREE: [Colour; 3] = [Colour::Blue, Colour::Red, Colour::Yellow];

/// The second game's creatures: blue red yellow red yellow blue red yellow red blue.
pub const TEN: [Colour; 10] = [
    Colour::Blue,
    Colour::Red,
    Colour::Yellow,
    Colour::Red,
    Colour::Yellow,
    Colour::Blue,
    Colour::Red,
    Colour::Yellow,
    Colour::Red,
    Colour::Blue,
];

/// The complements table: one line `a + b -> c` per pair of colours, 9 lines in all.
pub fn complements_table() -> String {
    let mut table = String::new();
    for a in Colour::ALL {
        for b in Colour::ALL {
            table.push_str(&format!("{a} + {b} -> {}\n", a.complement(b)));
        }
    }
    table
}

/// `n` spelled digit by digit, each digit's name after a space: 1200 is
/// `" one two zero zero"`, 0 is `" zero"`.
pub fn spell(n: u64) -> String {
    const DIGITS: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    let mut spelled = String::new();
    for digit in n.to_string().bytes() {
        spelled.push(' ');
        spelled.push_str(DIGITS[usize::from(digit - b'0')]);
    }
    spelled
}

/// The initial colours of a game as its report starts: each colour's name after a space.
pub fn colours_line(colours: &[Colour]) -> String {
    colours.iter().map(|c| format!(" {c}")).collect()
}

/// A creature at the meeting place: who it is (its index in the game) and its colour now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrival {
    /// The creature's index in the game.
    pub id: u32,
    /// Its colour when it came.
    pub colour: Colour,
}

/// What the meeting place answers a creature that came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// It met this creature.
    Met(Arrival),
    /// The game is over: the creature goes home.
    Stop,
}

/// The meeting place's bookkeeping: pairs the creatures in the order they come, until a given
/// number of meetings took place.
#[derive(Debug, Clone)]
pub struct Pairing {
    /// The creature that came and waits for a partner.
    waiting: Option<Arrival>,
    /// The meetings so far.
    meetings: u64,
    /// The meetings of the game.
    limit: u64,
}

impl Pairing {
    /// A meeting place that will host `limit` meetings.
    pub fn new(limit: u64) -> Pairing {
        Pairing {
            waiting: None,
            meetings: 0,
            limit,
        }
    }

    /// A creature comes. If another one waits, the two meet: the pair is returned (the one
    /// that waited first) and counted. Otherwise this one waits. Once every meeting of the
    /// game took place, nobody is paired any more and nobody waits.
    pub fn arrive(&mut self, creature: Arrival) -> Option<(Arrival, Arrival)> {
        if self.is_over() {
            return None;
        }
        match self.waiting.take() {
            Some(first) => {
                self.meetings += 1;
                Some((first, creature))
            }
            None => {
                self.waiting = Some(creature);
                None
            }
        }
    }

    /// The creature that waits for a partner, if one does.
    pub fn waiting(&self) -> Option<Arrival> {
        self.waiting
    }

    /// The meetings so far.
    pub fn meetings(&self) -> u64 {
        self.meetings
    }

    /// Whether every meeting of the game took place.
    pub fn is_over(&self) -> bool {
        self.meetings >= self.limit
    }
}

/// A creature's own view of the game: its colour now, and what it counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// The creature's index in the game.
    pub id: u32,
    /// Its colour now.
    pub colour: Colour,
    /// The meetings it took part in.
    pub meetings: u64,
    /// The meetings whose partner was itself.
    pub self_meetings: u64,
}

impl Tally {
    /// Creature `id` of colour `colour`, before any meeting.
    pub fn new(id: u32, colour: Colour) -> Tally {
        Tally {
            id,
            colour,
            meetings: 0,
            self_meetings: 0,
        }
    }

    /// Where this creature stands when it comes to the meeting place.
    pub fn arrival(&self) -> Arrival {
        Arrival {
            id: self.id,
            colour: self.colour,
        }
    }

    /// This creature met `partner`: one more meeting (and one more self-meeting when the
    /// partner is this creature), and it takes the complement of its colour and the partner's.
    pub fn meet(&mut self, partner: Arrival) {
        self.meetings += 1;
        if partner.id == self.id {
            self.self_meetings += 1;
        }
        self.colour = self.colour.complement(partner.colour);
    }

    /// The creature's line in the report: its meetings, then its self-meetings spelled.
    pub fn line(&self) -> String {
        format!("{}{}", self.meetings, spell(self.self_meetings))
    }
}
