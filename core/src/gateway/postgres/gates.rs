//! Which prepared statements need approval to execute, as the *server* sees them.
//!
//! A `Parse` that needs approval is forwarded (parsing runs nothing) and each
//! `Bind` of its name is held for approval. The gateway must know what text the
//! server really holds under a name, or a client could swap it: a second `Parse`
//! to an existing name fails upstream (42P05), a `Close` or `Parse` skipped after
//! an earlier error in the pipeline never happens, and so on. So state only
//! changes on the server's word: every forwarded `Parse` and `Close` is queued,
//! `ParseComplete`/`CloseComplete` confirm the oldest, an `ErrorResponse` means
//! the rest of that sync group was skipped, and `ReadyForQuery` ends the group.
//!
//! Until then a name keeps every *candidate* text it may hold: a `Bind` is held
//! if any candidate needs approval, and the approver sees (and the approval is
//! bound to) all of them.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// Most Parse/Close messages awaiting the server's answer.
pub const MAX_IN_FLIGHT: usize = 65_536;
/// Most statement names with candidates.
pub const MAX_NAMES: usize = 4096;

#[derive(Debug)]
struct Op {
    id: u64,
    /// The sync group the message belongs to.
    seq: u64,
    name: Vec<u8>,
    close: bool,
}

/// A text needing approval, tagged with the operation that put it there.
type Candidate = (u64, Rc<[u8]>);

#[derive(Default)]
pub struct Gates {
    /// Name → texts that need approval and may be prepared under it, each
    /// tagged with the operation that put it there.
    names: HashMap<Vec<u8>, Vec<Candidate>>,
    ops: VecDeque<Op>,
    next: u64,
}

/// Too many unanswered messages or gated names (a protocol abuse).
#[derive(Debug)]
pub struct Full;

impl Gates {
    /// A `Parse` of `name` is forwarded in sync group `seq`; `gated` is its text
    /// when executing it needs approval.
    pub fn parse(&mut self, name: &[u8], gated: Option<&[u8]>, seq: u64) -> Result<(), Full> {
        if self.ops.len() >= MAX_IN_FLIGHT {
            return Err(Full);
        }
        self.next += 1;
        let id = self.next;
        if let Some(text) = gated {
            if !self.names.contains_key(name) && self.names.len() >= MAX_NAMES {
                return Err(Full);
            }
            self.names
                .entry(name.to_vec())
                .or_default()
                .push((id, text.into()));
        }
        self.ops.push_back(Op {
            id,
            seq,
            name: name.to_vec(),
            close: false,
        });
        Ok(())
    }

    /// A `Close` of statement `name` is forwarded in sync group `seq`.
    pub fn close(&mut self, name: &[u8], seq: u64) -> Result<(), Full> {
        if self.ops.len() >= MAX_IN_FLIGHT {
            return Err(Full);
        }
        self.next += 1;
        self.ops.push_back(Op {
            id: self.next,
            seq,
            name: name.to_vec(),
            close: true,
        });
        Ok(())
    }

    /// The gated texts `name` may hold for a `Bind` sent in sync group `seq`
    /// (empty: none). A `Parse` or `Close` of the name earlier in the same
    /// group decides alone: if it fails, the server skips the rest of the
    /// group, the `Bind` included, so only its outcome can ever be bound.
    pub fn candidates(&self, name: &[u8], seq: u64) -> Vec<Rc<[u8]>> {
        let all = self.names.get(name);
        if let Some(op) = self.ops.iter().rev().find(|o| o.name == name) {
            if op.seq == seq {
                if op.close {
                    return Vec::new();
                }
                return all
                    .and_then(|c| c.iter().find(|(id, _)| *id == op.id))
                    .map(|(_, t)| vec![t.clone()])
                    .unwrap_or_default();
            }
        }
        all.map(|c| c.iter().map(|(_, t)| t.clone()).collect())
            .unwrap_or_default()
    }

    pub fn any(&self) -> bool {
        !self.names.is_empty()
    }

    /// `ParseComplete`: the oldest queued Parse succeeded; its text is now the
    /// only one under its name.
    pub fn parse_complete(&mut self) {
        if let Some(op) = self.pop(false) {
            self.keep_only(&op.name, Some(op.id));
        }
    }

    /// `CloseComplete`: the oldest queued Close succeeded.
    pub fn close_complete(&mut self) {
        if let Some(op) = self.pop(true) {
            self.keep_only(&op.name, None);
        }
    }

    /// An `ErrorResponse` while the server answers sync group `seq`: the queued
    /// messages of that group did not take effect.
    pub fn error(&mut self, seq: u64) {
        while self.ops.front().is_some_and(|o| o.seq <= seq) {
            let op = self.ops.pop_front().expect("checked");
            self.drop_candidate(&op);
        }
    }

    /// `ReadyForQuery` ended sync group `seq`: anything of it still queued was
    /// skipped.
    pub fn ready(&mut self, seq: u64) {
        self.error(seq);
    }

    fn pop(&mut self, close: bool) -> Option<Op> {
        // Responses come in order; a mismatch would be a server bug, and then
        // keeping every candidate (doing nothing) is the safe side.
        if self.ops.front()?.close != close {
            return None;
        }
        self.ops.pop_front()
    }

    fn keep_only(&mut self, name: &[u8], id: Option<u64>) {
        if let Some(c) = self.names.get_mut(name) {
            c.retain(|(op, _)| Some(*op) == id);
            if c.is_empty() {
                self.names.remove(name);
            }
        }
    }

    fn drop_candidate(&mut self, op: &Op) {
        if op.close {
            return;
        }
        if let Some(c) = self.names.get_mut(&op.name[..]) {
            c.retain(|(id, _)| *id != op.id);
            if c.is_empty() {
                self.names.remove(&op.name[..]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(g: &Gates, name: &str) -> Vec<String> {
        g.candidates(name.as_bytes(), 0)
            .iter()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect()
    }

    #[test]
    fn a_gate_is_set_at_once_and_cleared_only_when_the_server_confirms() {
        let mut g = Gates::default();
        g.parse(b"s", Some(b"DELETE 1"), 1).unwrap();
        assert_eq!(texts(&g, "s"), ["DELETE 1"], "held before ParseComplete");
        g.parse_complete();
        // A second Parse to the same name: the server refuses it (42P05).
        g.parse(b"s", None, 2).unwrap();
        assert_eq!(texts(&g, "s"), ["DELETE 1"]);
        g.error(2);
        g.ready(2);
        assert_eq!(texts(&g, "s"), ["DELETE 1"], "still the DELETE");
        // A Close skipped after an error in its group changes nothing.
        g.parse(b"x", None, 3).unwrap();
        g.close(b"s", 3).unwrap();
        g.error(3);
        g.ready(3);
        assert_eq!(texts(&g, "s"), ["DELETE 1"]);
        // A confirmed Close clears it.
        g.close(b"s", 4).unwrap();
        g.close_complete();
        g.ready(4);
        assert!(texts(&g, "s").is_empty());
    }

    #[test]
    fn unconfirmed_replacements_keep_every_candidate() {
        let mut g = Gates::default();
        g.parse(b"", Some(b"DELETE 1"), 1).unwrap();
        g.parse_complete();
        g.ready(1);
        // Pipelined: replace the unnamed statement with another gated text.
        g.parse(b"", Some(b"UPDATE 2"), 2).unwrap();
        assert_eq!(texts(&g, ""), ["DELETE 1", "UPDATE 2"], "either may run");
        g.parse_complete();
        assert_eq!(texts(&g, ""), ["UPDATE 2"]);
        // Replaced by a plain statement: cleared on confirmation only.
        g.parse(b"", None, 3).unwrap();
        assert_eq!(texts(&g, ""), ["UPDATE 2"]);
        g.parse_complete();
        assert!(texts(&g, "").is_empty());
        assert!(!g.any());
    }

    #[test]
    fn a_parse_earlier_in_the_same_group_decides_alone() {
        let mut g = Gates::default();
        g.parse(b"", Some(b"set_config('client_encoding', $1, false)"), 1)
            .unwrap();
        g.parse_complete();
        g.ready(1);
        // Pipelined: the unnamed statement replaced, then bound, in group 2.
        g.parse(b"", None, 2).unwrap();
        assert!(
            g.candidates(b"", 2).is_empty(),
            "only the new text can be bound"
        );
        // From a later group it could still be either (the Parse may fail).
        assert_eq!(g.candidates(b"", 3).len(), 1);
        g.parse_complete();
        assert!(g.candidates(b"", 3).is_empty());
        // A Close earlier in the group: nothing to bind.
        g.parse(b"s", Some(b"DELETE 1"), 4).unwrap();
        g.parse_complete();
        g.close(b"s", 5).unwrap();
        assert!(g.candidates(b"s", 5).is_empty());
        assert_eq!(g.candidates(b"s", 6).len(), 1);
        // A gated Parse in the same group is the one candidate.
        g.parse(b"s", Some(b"UPDATE 2"), 6).unwrap();
        let c = g.candidates(b"s", 6);
        assert_eq!(c.len(), 1);
        assert_eq!(&*c[0], b"UPDATE 2");
    }

    #[test]
    fn responses_of_later_groups_are_not_confused() {
        let mut g = Gates::default();
        g.parse(b"a", Some(b"DELETE a"), 1).unwrap();
        g.parse(b"b", Some(b"DELETE b"), 2).unwrap();
        // Group 1's Parse fails; group 2's is untouched.
        g.error(1);
        g.ready(1);
        assert!(texts(&g, "a").is_empty());
        assert_eq!(texts(&g, "b"), ["DELETE b"]);
        g.parse_complete();
        g.ready(2);
        assert_eq!(texts(&g, "b"), ["DELETE b"]);
    }
}
