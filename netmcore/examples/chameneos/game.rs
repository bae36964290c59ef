//! The game of the `chameneos` example: the colours and how they change, the spelling of the
//! numbers, the meeting place's pairing and a creature's tally, as plain values; then the
//! processes that play it over `netmcore::shared` channels. The test
//! `tests/tests/chameneos_example.rs` includes this module, so it checks the example's own
//! code.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use netmcore::process::{self, ProcessType};
use netmcore::shared::{Error, Handle, Receiver, Sender, channel};
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
    /// The meeting place checks that the creature is still there; there is nothing to answer
    /// (for a creature that died, the sending itself fails: its reply channel is
    /// disconnected).
    Ping,
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

// The processes.

/// How many bytes a message may take in the channels: an arrival or a reply is a few bytes.
pub const MAX_MESSAGE: usize = 16;

/// The room of a creature's reply channel. A creature has at most one arrival the meeting
/// place has not answered, so at most one `Met` waits for it, then a `Stop`; the rest is room
/// for `Ping`s, which the meeting place only sends when there is room.
pub const REPLY_CAPACITY: usize = 4;

/// The meeting place checks that every creature is still there after this many meetings...
pub const PROBE_EVERY: u64 = 1 << 14;

/// ... and when nobody came for this long.
pub const PROBE_IDLE: Duration = Duration::from_millis(100);

/// What the meeting place is given: the receiving end of the arrivals, the sending end of
/// each creature's replies (creature `i`'s at index `i`), and the meetings of the game.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlaceArgs {
    /// Where the creatures come.
    pub arrivals: Handle<Receiver<Arrival>>,
    /// Where each creature hears what happened to it.
    pub replies: Vec<Handle<Sender<Reply>>>,
    /// How many meetings the game has.
    pub meetings: u64,
}

/// What a creature is given: who it is, its first colour, its sending end of the arrivals
/// and the receiving end of its own replies.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatureArgs {
    /// Its index in the game.
    pub id: u32,
    /// Its colour at the start.
    pub colour: Colour,
    /// Where it comes to the meeting place.
    pub arrivals: Handle<Sender<Arrival>>,
    /// Where it hears what happened.
    pub replies: Handle<Receiver<Reply>>,
}

/// What the meeting place reports: the meetings it hosted, and the seconds from the first
/// arrival to the last meeting.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Hosted {
    /// The meetings.
    pub meetings: u64,
    /// The seconds they took.
    pub seconds: f64,
}

/// The meeting place with its ends open, ready to host the game.
#[derive(Debug)]
pub struct Place {
    arrivals: Receiver<Arrival>,
    replies: Vec<Sender<Reply>>,
    meetings: u64,
}

impl Place {
    /// Opens the ends the meeting place was given.
    ///
    /// # Errors
    ///
    /// When an end cannot be opened.
    pub fn open(args: PlaceArgs) -> anyhow::Result<Place> {
        let arrivals = Receiver::open(args.arrivals).context("open the arrivals channel")?;
        let replies = args
            .replies
            .into_iter()
            .enumerate()
            .map(|(id, handle)| {
                Sender::open(handle).with_context(|| format!("open the replies of creature {id}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Place {
            arrivals,
            replies,
            meetings: args.meetings,
        })
    }

    /// Pairs the creatures as they come and tells each whom it met, until the game's meetings
    /// took place; then tells every creature to stop and waits until all have gone (the
    /// arrivals channel is disconnected once the last creature dropped its end).
    ///
    /// # Errors
    ///
    /// When every creature left before the end of the game, and when a creature is gone (its
    /// reply channel is disconnected): then the game ends at once, the others are told to
    /// stop, and the error names the creature. A creature that died is found when the meeting
    /// place tells it whom it met, or at the next check of every creature: after each
    /// [`PROBE_EVERY`] meetings, and when nobody came for [`PROBE_IDLE`].
    pub fn host(self) -> anyhow::Result<Hosted> {
        let mut place = Pairing::new(self.meetings);
        let mut first_arrival = None;
        let mut failure = None;
        while !place.is_over() {
            let creature = match self.arrivals.recv_timeout(PROBE_IDLE) {
                Ok(creature) => creature,
                Err(Error::Timeout) => match self.probe() {
                    Ok(()) => continue,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                },
                Err(Error::Disconnected) => {
                    failure = Some(anyhow::anyhow!("every creature left"));
                    break;
                }
                Err(e) => return Err(e).context("receive an arrival"),
            };
            first_arrival.get_or_insert_with(Instant::now);
            if let Some((a, b)) = place.arrive(creature) {
                // The creature that just came is told first: it is likely still looking at
                // its channel, while the one that waited may be asleep and need a wake-up.
                let mut told = self
                    .tell(b.id, Reply::Met(a))
                    .and_then(|()| self.tell(a.id, Reply::Met(b)));
                if told.is_ok() && place.meetings().is_multiple_of(PROBE_EVERY) {
                    told = self.probe();
                }
                if let Err(e) = told {
                    failure = Some(e);
                    break;
                }
            }
        }
        let seconds = first_arrival.map_or(0.0, |t: Instant| t.elapsed().as_secs_f64());

        // Everyone is told to stop, even after a failure, so that no creature waits forever.
        for id in (0u32..).take(self.replies.len()) {
            if let Err(e) = self.tell(id, Reply::Stop) {
                failure.get_or_insert(e);
            }
        }
        // A creature that met a partner comes once more before it reads its `Stop`: the
        // arrivals are drained until the last creature has gone.
        loop {
            match self.arrivals.recv() {
                Ok(_) => {}
                Err(Error::Disconnected) => break,
                Err(e) => return Err(e).context("receive an arrival after the game"),
            }
        }
        match failure {
            Some(e) => Err(e.context(format!(
                "the meeting place stopped the game after {} of {} meetings",
                place.meetings(),
                self.meetings
            ))),
            None => Ok(Hosted {
                meetings: place.meetings(),
                seconds,
            }),
        }
    }

    /// Checks that every creature is still there: one that died never comes again, and the
    /// others could go on meeting without it (or wait forever for a partner when it was the
    /// last). A `Ping` is sent where there is room; sending to a creature that died fails.
    fn probe(&self) -> anyhow::Result<()> {
        for (id, to) in self.replies.iter().enumerate() {
            match to.try_send(&Reply::Ping) {
                Ok(()) | Err(Error::Full) => {}
                Err(Error::Disconnected) => anyhow::bail!("creature {id} is gone"),
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("ping creature {id}")));
                }
            }
        }
        Ok(())
    }

    /// Sends `reply` to creature `id`.
    fn tell(&self, id: u32, reply: Reply) -> anyhow::Result<()> {
        let to = self
            .replies
            .get(id as usize)
            .with_context(|| format!("creature {id} is not in the game"))?;
        to.send(&reply).map_err(|e| match e {
            Error::Disconnected => anyhow::anyhow!("creature {id} is gone"),
            e => anyhow::Error::new(e).context(format!("tell creature {id}")),
        })
    }
}

/// The meeting place's whole life: opens its ends and hosts the game.
///
/// # Errors
///
/// As [`Place::open`] and [`Place::host`].
pub fn host(args: PlaceArgs) -> anyhow::Result<Hosted> {
    Place::open(args)?.host()
}

/// A creature with its ends open, ready to play.
#[derive(Debug)]
pub struct Creature {
    tally: Tally,
    arrivals: Sender<Arrival>,
    replies: Receiver<Reply>,
}

impl Creature {
    /// Opens the ends the creature was given.
    ///
    /// # Errors
    ///
    /// When an end cannot be opened.
    pub fn open(args: CreatureArgs) -> anyhow::Result<Creature> {
        let arrivals = Sender::open(args.arrivals).context("open the arrivals channel")?;
        let replies = Receiver::open(args.replies).context("open the replies channel")?;
        Ok(Creature {
            tally: Tally::new(args.id, args.colour),
            arrivals,
            replies,
        })
    }

    /// Comes to the meeting place, again and again, until it is told to stop; returns what
    /// it counted.
    ///
    /// # Errors
    ///
    /// When the meeting place is gone (a channel is disconnected) or a channel fails.
    pub fn play(mut self) -> anyhow::Result<Tally> {
        let gone = |e: Error, doing: &str| match e {
            Error::Disconnected => anyhow::anyhow!("the meeting place is gone ({doing})"),
            e => anyhow::Error::new(e).context(doing.to_owned()),
        };
        loop {
            self.arrivals
                .send(&self.tally.arrival())
                .map_err(|e| gone(e, "come to the meeting place"))?;
            loop {
                match self
                    .replies
                    .recv()
                    .map_err(|e| gone(e, "wait for a partner"))?
                {
                    Reply::Met(partner) => {
                        self.tally.meet(partner);
                        break;
                    }
                    Reply::Stop => return Ok(self.tally),
                    Reply::Ping => {}
                }
            }
        }
    }
}

/// A creature's whole life: opens its ends and plays.
///
/// # Errors
///
/// As [`Creature::open`] and [`Creature::play`].
pub fn creature(args: CreatureArgs) -> anyhow::Result<Tally> {
    Creature::open(args)?.play()
}

/// What a process of the game returns: its result, or what went wrong as text.
pub type Outcome<T> = Result<T, String>;

/// The process types of the game.
#[derive(Debug, Clone, Copy)]
pub struct Game {
    /// The meeting place.
    pub place: ProcessType<PlaceArgs, Outcome<Hosted>>,
    /// A creature.
    pub creature: ProcessType<CreatureArgs, Outcome<Tally>>,
}

impl Game {
    /// Defines the process types of the game, with [`host`] and [`creature`] as bodies (before
    /// startup, or in the master).
    ///
    /// # Errors
    ///
    /// As `netmcore::process::def_process`.
    pub fn define() -> netmcore::Result<Game> {
        Ok(Game {
            place: process::def_process(|args: PlaceArgs| {
                host(args).map_err(|e| format!("{e:#}"))
            })?,
            creature: process::def_process(|args: CreatureArgs| {
                creature(args).map_err(|e| format!("{e:#}"))
            })?,
        })
    }

    /// Plays a game of `meetings` meetings between creatures of `colours`, each a process, and
    /// a meeting-place process. Returns when every process has finished; checks that the
    /// creatures counted every meeting twice.
    ///
    /// # Errors
    ///
    /// When there are fewer than two creatures for a game of some meetings, a channel cannot
    /// be made, a process cannot be started, a creature died or failed,
    /// the meeting place failed, or the counts do not add up. When a creature ended without a
    /// tally, the meeting place is not waited for: it ends on its own once this process has
    /// ended too (the ends that were moved but never opened are counted until then).
    pub fn play(&self, colours: &[Colour], meetings: u64) -> anyhow::Result<Played> {
        anyhow::ensure!(
            colours.len() >= 2 || meetings == 0,
            "a game of {meetings} meetings needs two creatures at least, not {}",
            colours.len()
        );
        let (arrive, arrivals) = channel::<Arrival>(colours.len().max(1), MAX_MESSAGE)
            .context("make the arrivals channel")?;
        let mut replies = Vec::with_capacity(colours.len());
        let mut creatures = Vec::with_capacity(colours.len());
        for (id, &colour) in (0u32..).zip(colours) {
            let (to, from) = channel::<Reply>(REPLY_CAPACITY, MAX_MESSAGE)
                .with_context(|| format!("make the replies channel of creature {id}"))?;
            replies.push(to.into_handle());
            creatures.push(CreatureArgs {
                id,
                colour,
                arrivals: arrive.clone().into_handle(),
                replies: from.into_handle(),
            });
        }
        // Only the creatures send arrivals: once they are gone, the meeting place sees the
        // channel disconnected.
        drop(arrive);
        let place = self
            .place
            .start(&PlaceArgs {
                arrivals: arrivals.into_handle(),
                replies,
                meetings,
            })
            .context("start the meeting place")?;
        let mut pids = Vec::with_capacity(creatures.len());
        for args in &creatures {
            let pid = self
                .creature
                .start(args)
                .with_context(|| format!("start creature {}", args.id))?;
            pids.push(pid);
        }

        let mut tallies = Vec::with_capacity(pids.len());
        let mut failures = Vec::new();
        for (args, pid) in creatures.iter().zip(pids) {
            let who = format!("creature {} ({})", args.id, args.colour);
            match self.creature.join(pid) {
                Ok(Some(Ok(tally))) => tallies.push(tally),
                Ok(Some(Err(e))) => failures.push(format!("{who} failed: {e}")),
                Ok(None) => failures.push(format!(
                    "{who} ended without a tally (it died: killed, or it panicked)"
                )),
                Err(e) => failures.push(format!("{who}: join: {e}")),
            }
        }
        if !failures.is_empty() {
            anyhow::bail!("the game failed: {}", failures.join("; "));
        }
        let hosted = match self.place.join(place).context("join the meeting place")? {
            Some(Ok(hosted)) => hosted,
            Some(Err(e)) => anyhow::bail!("the meeting place failed: {e}"),
            None => anyhow::bail!("the meeting place ended without a result (it died)"),
        };
        let played = Played {
            colours: colours.to_vec(),
            tallies,
            hosted,
        };
        anyhow::ensure!(
            hosted.meetings == meetings,
            "the meeting place hosted {} meetings, not {meetings}",
            hosted.meetings
        );
        anyhow::ensure!(
            played.total() == 2 * meetings,
            "the creatures counted {} meetings, not twice {meetings}",
            played.total()
        );
        Ok(played)
    }
}

/// A game that was played.
#[derive(Debug, Clone)]
pub struct Played {
    /// The creatures' colours at the start.
    pub colours: Vec<Colour>,
    /// What each creature counted, in the order of `colours`.
    pub tallies: Vec<Tally>,
    /// What the meeting place reported.
    pub hosted: Hosted,
}

impl Played {
    /// The meetings the creatures counted: twice the game's, since two creatures count each.
    pub fn total(&self) -> u64 {
        self.tallies.iter().map(|t| t.meetings).sum()
    }

    /// The game's report: the initial colours, a line per creature, the total spelled.
    pub fn report(&self) -> String {
        let mut text = colours_line(&self.colours);
        text.push('\n');
        for tally in &self.tallies {
            text.push_str(&tally.line());
            text.push('\n');
        }
        text.push_str(&spell(self.total()));
        text.push('\n');
        text
    }

    /// `3 creatures: 6000 meetings in 0.025 s, 240000 meetings/s`.
    pub fn summary(&self) -> String {
        let Hosted { meetings, seconds } = self.hosted;
        format!(
            "{} creatures: {meetings} meetings in {seconds:.3} s, {:.0} meetings/s",
            self.colours.len(),
            meetings as f64 / seconds.max(1e-9)
        )
    }
}
