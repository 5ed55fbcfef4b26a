//! The session machine against hand-written sequences (among them every way a
//! client pushed the earlier, name-tracking attempt out of step), and against a
//! model of the server over random client sequences and random timing.

use super::*;

fn fe(tag: char) -> Frontend<'static> {
    match tag {
        'Q' => Frontend::Query(b"SELECT 1"),
        'P' => Frontend::Parse {
            name: b"s",
            sql: b"SELECT 1",
            param_types: b"",
        },
        'B' => Frontend::Bind(Bind {
            portal: b"",
            statement: b"s",
            rest: b"",
        }),
        'D' => Frontend::Describe {
            kind: b'S',
            name: b"s",
        },
        'd' => Frontend::Describe {
            kind: b'P',
            name: b"",
        },
        'E' => Frontend::Execute {
            portal: b"",
            max_rows: 0,
        },
        'C' => Frontend::Close {
            kind: b'S',
            name: b"s",
        },
        'S' => Frontend::Sync,
        'H' => Frontend::Flush,
        'F' => Frontend::FunctionCall { oid: 1, rest: b"" },
        '>' => Frontend::CopyData(b"1\n"),
        '.' => Frontend::CopyDone,
        '!' => Frontend::CopyFail(b"no"),
        other => panic!("no client message {other:?}"),
    }
}

/// Feeds client messages (`fe` letters) then server tags; returns the routes
/// as a string: `c` client, `g` gateway, or the violation.
fn run(describe: bool, client: &str, server: &str) -> Result<String, Violation> {
    let mut s = Session::new(describe);
    for c in client.chars() {
        s.handle_frontend(&fe(c))?;
    }
    let mut out = String::new();
    for t in server.bytes() {
        out.push(match s.handle_backend(t)? {
            Route::Client => 'c',
            Route::Gateway => 'g',
        });
    }
    Ok(out)
}

#[test]
fn extended_round_trips_are_followed_and_injected_answers_go_to_the_gateway() {
    // Parse, Bind, Describe statement, Execute (with a Describe of its own), Sync.
    assert_eq!(run(true, "PBDES", "12tTTDDCZ").unwrap(), "ccccgcccc");
    // Without injection the same flow has no gateway answer.
    assert_eq!(run(false, "PBDES", "12tTDDCZ").unwrap(), "cccccccc");
    // The client's own Describe of the portal stays the client's.
    assert_eq!(run(true, "BdES", "2TnIZ").unwrap(), "ccgcc");
    assert_eq!(run(true, "BdES", "2TTsZ").unwrap(), "ccgcc");
    // Simple query, several result sets; a function call.
    assert_eq!(run(true, "Q", "TDCTDDCIZ").unwrap(), "ccccccccc");
    assert_eq!(run(true, "FQ", "VZTCZ").unwrap(), "ccccc");
    // Asynchronous messages at any time, with nothing owed too.
    assert_eq!(run(true, "", "SNA").unwrap(), "ccc");
    assert_eq!(run(true, "Q", "SNCZA").unwrap(), "ccccc");
    let mut s = Session::new(true);
    assert!(s.idle());
    s.handle_frontend(&fe('Q')).unwrap();
    assert!(!s.idle());
}

#[test]
fn an_error_skips_to_the_next_sync_even_one_not_sent_yet() {
    // Bind fails: the injected Describe and the Execute are skipped.
    assert_eq!(run(true, "BES", "EZ").unwrap(), "cc");
    // The five ways the name-tracking attempt was pushed out of step:
    // a failing Bind followed by a Query in the same group (the server would
    // discard the Query unanswered: refused before it is sent),
    assert_eq!(
        run(true, "BEQS", "").unwrap_err(),
        Violation::InPipeline('Q')
    );
    // a re-Parse under a live portal and a Bind that fails after the client
    // saw it sent: answers are attributed by order, never by name,
    assert_eq!(run(true, "PBESPBES", "12TDCZ1EZ").unwrap(), "ccgcccccc");
    // a Sync during COPY IN (below), and an overflowing queue (below).
    // An error before the client's Sync: what it sends until the Sync is
    // discarded by the server, and owed nothing.
    let mut s = Session::new(true);
    for c in "PB".chars() {
        s.handle_frontend(&fe(c)).unwrap();
    }
    assert_eq!(s.handle_backend(b'E').unwrap(), Route::Client);
    for c in "BE".chars() {
        assert!(!s.handle_frontend(&fe(c)).unwrap().describe_portal);
    }
    s.handle_frontend(&fe('S')).unwrap();
    assert_eq!(s.handle_backend(b'Z').unwrap(), Route::Client);
    assert!(s.idle());
    // An error in a simple query or at Sync (a failing commit) still ends with
    // ReadyForQuery.
    assert_eq!(run(true, "Q", "TDEZ").unwrap(), "cccc");
    assert_eq!(run(true, "S", "EZ").unwrap(), "cc");
}

#[test]
fn copy_in_ignores_syncs_until_the_client_ends_it() {
    // libpq's extended COPY FROM: Execute and Sync pipelined; the Sync reaches
    // the server during copy-in and is ignored; another follows CopyDone.
    let mut s = Session::new(true);
    for c in "PBES".chars() {
        s.handle_frontend(&fe(c)).unwrap();
    }
    for t in *b"12n" {
        s.handle_backend(t).unwrap();
    }
    s.handle_backend(b'G').unwrap();
    for c in ">>S>H.S".chars() {
        s.handle_frontend(&fe(c)).unwrap();
    }
    assert_eq!(s.handle_backend(b'C').unwrap(), Route::Client);
    assert_eq!(s.handle_backend(b'Z').unwrap(), Route::Client);
    assert!(s.idle(), "{s:?}");
    // Data sent before the CopyInResponse arrived.
    assert_eq!(run(true, "BES>>.S", "2nGCZ").unwrap(), "cgccc");
    // Two copies in one simple query: the first stream's end does not end the
    // second.
    let mut s = Session::new(true);
    s.handle_frontend(&fe('Q')).unwrap();
    s.handle_backend(b'G').unwrap();
    for c in ">.".chars() {
        s.handle_frontend(&fe(c)).unwrap();
    }
    s.handle_backend(b'C').unwrap();
    s.handle_backend(b'G').unwrap();
    s.handle_frontend(&fe('S')).unwrap(); // ignored: the second copy is open
    s.handle_frontend(&fe('!')).unwrap();
    s.handle_backend(b'E').unwrap();
    s.handle_backend(b'Z').unwrap();
    assert!(s.idle(), "{s:?}");
    // Copy messages outside a copy are ignored by the server.
    assert_eq!(run(true, ">.Q", "CZ").unwrap(), "cc");
    // Copy out.
    assert_eq!(run(true, "Q", "HddcCZ").unwrap(), "cccccc");
}

#[test]
fn sync_points_are_numbered_and_a_sync_during_copy_in_is_voided() {
    let mut s = Session::new(false);
    let f = |s: &mut Session, c: char| s.handle_frontend(&fe(c)).unwrap().sync_point;
    // libpq's extended COPY FROM: the Sync sent with the Execute (sync point
    // 2, after a Query) reaches the server during the copy and is ignored.
    assert!(f(&mut s, 'Q'));
    s.handle_backend(b'C').unwrap();
    s.handle_backend(b'Z').unwrap();
    for c in "PBE".chars() {
        assert!(!f(&mut s, c));
    }
    assert!(f(&mut s, 'S'));
    for t in *b"12" {
        s.handle_backend(t).unwrap();
    }
    s.handle_backend(b'G').unwrap();
    assert_eq!(s.voided(), 1);
    assert!(!f(&mut s, '>'));
    assert!(!f(&mut s, 'S'), "ignored during the copy");
    assert!(!f(&mut s, '.'));
    assert!(f(&mut s, 'S'), "sync point 3");
    s.handle_backend(b'C').unwrap();
    s.handle_backend(b'Z').unwrap();
    assert!(s.idle() && s.voided() == 1);
    // A Query or FunctionCall inside an unfinished extended group is refused:
    // after an error the server would discard it without an answer.
    let mut s = Session::new(false);
    f(&mut s, 'B');
    assert_eq!(s.handle_frontend(&fe('Q')), Err(Violation::InPipeline('Q')));
    let mut s = Session::new(false);
    f(&mut s, 'P');
    f(&mut s, 'S');
    assert!(f(&mut s, 'F'), "after a Sync it is its own group");
}

#[test]
fn anything_else_ends_the_session() {
    for (client, server) in [
        ("", "Z"),
        ("", "D"),
        ("P", "2"),
        ("B", "1"),
        ("D", "T"),
        ("BES", "2D"),
        ("BES", "2TT"),
        ("Q", "V"),
        ("Q", "1"),
        ("F", "D"),
        ("Q", "GD"),
        ("Q", "Hd1"),
    ] {
        assert!(
            matches!(run(true, client, server), Err(Violation::Unexpected(..))),
            "{client} / {server}"
        );
    }
    // A message the server would swallow as a broken copy.
    let mut s = Session::new(true);
    s.handle_frontend(&fe('Q')).unwrap();
    s.handle_backend(b'G').unwrap();
    assert!(matches!(
        s.handle_frontend(&fe('P')),
        Err(Violation::DuringCopy('P'))
    ));
    assert_eq!(
        run(true, "BESP", "2nG").unwrap_err(),
        Violation::DuringCopy('?')
    );
    assert_eq!(
        Session::new(true).handle_frontend(&Frontend::Password(b"x")),
        Err(Violation::Password)
    );
    // A long copy stream is one entry; an overflowing queue is refused.
    let mut s = Session::new(true);
    s.handle_frontend(&fe('Q')).unwrap();
    s.handle_backend(b'G').unwrap();
    for _ in 0..=MAX_IN_FLIGHT {
        s.handle_frontend(&fe('>')).unwrap();
    }
    s.handle_frontend(&fe('.')).unwrap();
    s.handle_backend(b'C').unwrap();
    s.handle_backend(b'Z').unwrap();
    assert!(s.idle());
    let mut s = Session::new(false);
    let mut r = Ok(Forward {
        describe_portal: false,
        sync_point: false,
    });
    for _ in 0..=MAX_IN_FLIGHT {
        r = s.handle_frontend(&fe('P'));
    }
    assert_eq!(r, Err(Violation::TooMany));
}

/// A model of the server: processes the forwarded stream in order and says
/// what it answers, each answer tagged with whether it answers a message the
/// gateway added.
#[derive(Default)]
struct Server {
    copy_in: Option<u8>,
    skipping: bool,
    /// A client message the server swallowed (the gateway must have refused).
    swallowed: bool,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

impl Server {
    /// Answers one forwarded message (`injected`: the gateway's Describe).
    fn take(&mut self, m: char, injected: bool, rng: &mut Rng, out: &mut Vec<(u8, bool)>) {
        let mut say = |tags: &[u8]| out.extend(tags.iter().map(|&t| (t, injected)));
        if self.skipping {
            if m == 'S' {
                self.skipping = false;
                say(b"Z");
            }
            return;
        }
        if let Some(origin) = self.copy_in {
            match m {
                '>' | 'S' | 'H' => {}
                '.' => {
                    self.copy_in = None;
                    say(if origin == b'Q' { b"CZ" } else { b"C" });
                }
                _ => {
                    if m != '!' {
                        self.swallowed = true;
                    }
                    self.copy_in = None;
                    if origin == b'Q' {
                        say(b"EZ");
                    } else {
                        say(b"E");
                        self.skipping = true;
                    }
                }
            }
            return;
        }
        let fail = rng.below(8) == 0;
        let extended = |s: &mut Self, ok: &[u8], out: &mut Vec<(u8, bool)>| {
            if fail {
                // An error goes to the client even when it answers the
                // gateway's Describe: the client's Execute is skipped with it.
                out.push((b'E', false));
                s.skipping = true;
            } else {
                out.extend(ok.iter().map(|&t| (t, injected)));
            }
        };
        match m {
            'P' => extended(self, b"1", out),
            'B' => extended(self, b"2", out),
            'C' => extended(self, b"3", out),
            'D' => extended(self, if rng.below(2) == 0 { b"tT" } else { b"tn" }, out),
            'd' => extended(self, if rng.below(2) == 0 { b"T" } else { b"n" }, out),
            'E' => match rng.below(6) {
                0 => extended(self, b"DDC", out),
                1 => extended(self, b"Ds", out),
                2 => extended(self, b"I", out),
                3 => extended(self, b"HddcC", out),
                4 if !fail => {
                    say(b"G");
                    self.copy_in = Some(b'E');
                }
                _ => extended(self, b"C", out),
            },
            'S' => say(b"Z"),
            'Q' => match rng.below(5) {
                0 => say(b"TDDCTCZ"),
                1 => say(b"TDEZ"),
                2 => say(b"IZ"),
                3 => say(b"HdcCZ"),
                _ => {
                    say(b"TCG");
                    self.copy_in = Some(b'Q');
                }
            },
            'F' => say(if fail { b"EZ" } else { b"VZ" }),
            _ => {} // Flush; copy messages outside a copy
        }
    }
}

#[test]
fn random_sequences_and_timing_never_misattribute_an_answer() {
    let alphabet: Vec<char> = "PBDdESSSSQFH>>.!".chars().collect();
    let mut rng = Rng(0x5e55_1011);
    let (mut violations, mut answers) = (0, 0);
    for round in 0..3000 {
        let describe = round % 3 != 0;
        let len = 1 + rng.below(24) as usize;
        let client: Vec<char> = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
            .collect();
        let mut session = Session::new(describe);
        let mut server = Server::default();
        let mut pending: std::collections::VecDeque<(u8, bool)> = Default::default();
        let mut failed = None;
        let mut readies = 0u64;
        let mut sync_points = 0u64;
        let mut deliver = |session: &mut Session,
                           pending: &mut std::collections::VecDeque<(u8, bool)>,
                           n: usize|
         -> Result<(), Violation> {
            for _ in 0..n {
                let Some((tag, injected)) = pending.pop_front() else {
                    break;
                };
                let want = if injected {
                    Route::Gateway
                } else {
                    Route::Client
                };
                readies += u64::from(tag == b'Z');
                let got = session.handle_backend(tag)?;
                assert_eq!(
                    got, want,
                    "{:?} answer {}: {client:?}",
                    tag as char, answers
                );
                answers += 1;
            }
            Ok(())
        };
        for &m in &client {
            match session.handle_frontend(&fe(m)) {
                Ok(fwd) => {
                    sync_points += u64::from(fwd.sync_point);
                    let mut out = Vec::new();
                    if fwd.describe_portal {
                        server.take('d', true, &mut rng, &mut out);
                    }
                    server.take(m, false, &mut rng, &mut out);
                    pending.extend(out);
                }
                Err(v) => {
                    failed = Some(v);
                    break;
                }
            }
            let n = rng.below(4) as usize;
            if let Err(v) = deliver(&mut session, &mut pending, n) {
                failed = Some(v);
                break;
            }
        }
        if failed.is_none() {
            if let Err(v) = deliver(&mut session, &mut pending, usize::MAX) {
                failed = Some(v);
            }
        }
        match failed {
            // Failing closed is allowed only where the server would have
            // swallowed a message (the answers up to it were all right).
            Some(v) => {
                assert!(
                    matches!(v, Violation::DuringCopy(_) | Violation::InPipeline(_)),
                    "{v} on {client:?}"
                );
                violations += 1;
            }
            None => {
                assert!(
                    !server.swallowed,
                    "a swallowed message went unnoticed: {client:?}"
                );
                if server.copy_in.is_none() && !server.skipping {
                    assert!(session.idle(), "{client:?}: {session:?}");
                    // Every sync point forwarded was answered or voided.
                    let voided = session.voided();
                    assert_eq!(sync_points, readies + voided, "{client:?}");
                }
            }
        }
    }
    assert!(answers > 20_000, "{answers}");
    eprintln!("session model: {answers} answers, {violations} sequences refused");
    assert!(violations < 2000, "{violations}");
}

/// Statement and portal names of a test message.
fn named(tag: char, statement: &'static [u8], portal: &'static [u8]) -> Frontend<'static> {
    match tag {
        'P' => Frontend::Parse {
            name: statement,
            sql: b"SELECT 1",
            param_types: b"",
        },
        'B' => Frontend::Bind(Bind {
            portal,
            statement,
            rest: b"",
        }),
        'E' => Frontend::Execute {
            portal,
            max_rows: 0,
        },
        'C' => Frontend::Close {
            kind: b'S',
            name: statement,
        },
        'c' => Frontend::Close {
            kind: b'P',
            name: portal,
        },
        other => fe(other),
    }
}

#[test]
fn results_are_accounted_to_the_commands_that_produced_them() {
    let mut s = Session::new(true);
    let fwd = |s: &mut Session, m: Frontend<'static>, a: Account| s.forward(&m, a, 7).unwrap();
    // Round trip 1: two statements prepared, one executed through a portal.
    assert_eq!(s.next_sync(), 1);
    fwd(&mut s, named('P', b"a", b""), Account::Command(1));
    fwd(&mut s, named('P', b"b", b""), Account::Command(2));
    fwd(&mut s, named('B', b"a", b"pa"), Account::None);
    fwd(&mut s, named('E', b"", b"pa"), Account::None);
    fwd(&mut s, fe('S'), Account::None);
    // Round trip 2: the other statement, through a portal of the same name
    // as before (rebound), with no Parse in this group.
    assert_eq!(s.next_sync(), 2);
    fwd(&mut s, named('B', b"b", b"pa"), Account::None);
    fwd(&mut s, named('E', b"", b"pa"), Account::None);
    fwd(&mut s, fe('S'), Account::None);
    // A refused Parse names nothing; executing the name counts nothing.
    fwd(&mut s, named('P', b"x", b""), Account::Refused);
    fwd(&mut s, named('B', b"x", b"px"), Account::None);
    fwd(&mut s, named('E', b"", b"px"), Account::None);
    fwd(&mut s, fe('S'), Account::None);
    // A simple query is a group of its own.
    fwd(&mut s, fe('Q'), Account::Command(9));
    for t in b"1 1 2 T D C Z".split(|b| *b == b' ') {
        s.handle_backend(t[0]).unwrap();
    }
    assert_eq!(
        s.take_done(),
        Some(Group {
            seq: 1,
            commands: vec![1, 2],
            stamp: 7
        })
    );
    assert_eq!(s.take_done(), None, "once");
    for t in b"2TDCZ" {
        s.handle_backend(*t).unwrap();
    }
    assert_eq!(s.take_done().map(|g| g.commands), Some(vec![2]));
    for t in b"E" {
        s.handle_backend(*t).unwrap();
    }
    assert_eq!(s.answering(), 3);
    s.handle_backend(b'Z').unwrap();
    assert_eq!(
        s.take_done().map(|g| (g.seq, g.commands)),
        Some((3, vec![]))
    );
    for t in b"TDC" {
        s.handle_backend(*t).unwrap();
    }
    s.handle_backend(b'Z').unwrap();
    assert_eq!(
        s.take_done().map(|g| (g.seq, g.commands)),
        Some((4, vec![9]))
    );
    // Closing a statement forgets it.
    fwd(&mut s, named('C', b"a", b""), Account::None);
    fwd(&mut s, named('B', b"a", b"q"), Account::None);
    fwd(&mut s, named('E', b"", b"q"), Account::None);
    fwd(&mut s, fe('S'), Account::None);
    for t in b"3E" {
        s.handle_backend(*t).unwrap();
    }
    s.handle_backend(b'Z').unwrap();
    assert_eq!(s.take_done().map(|g| g.commands), Some(vec![]));
    assert!(s.idle());
}

#[test]
fn a_group_whose_sync_is_voided_runs_on_into_the_next() {
    let mut s = Session::new(false);
    s.forward(&named('P', b"", b""), Account::Command(1), 0)
        .unwrap();
    for m in "BES".chars() {
        s.forward(&fe(m), Account::None, 0).unwrap();
    }
    // The server reads COPY data: the Sync already sent is ignored.
    for t in b"12G" {
        s.handle_backend(*t).unwrap();
    }
    s.forward(&fe('>'), Account::None, 0).unwrap();
    s.forward(&fe('.'), Account::None, 0).unwrap();
    s.forward(&fe('S'), Account::None, 0).unwrap();
    for t in b"CZ" {
        s.handle_backend(*t).unwrap();
    }
    assert_eq!(
        s.take_done().map(|g| (g.seq, g.commands)),
        Some((2, vec![1]))
    );
    assert!(s.idle());
}
