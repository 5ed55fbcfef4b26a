//! The configuration compiled into lookup tables for the data path.
//!
//! Group names are interned into bit positions (a caller's groups become a
//! [`GroupSet`] bitset), targets and statement kinds are dense indexes, and each
//! `(target, kind)` cell holds the ordered rules that can match it. A decision is
//! an array index plus a scan of a handful of `(group mask, action)` entries: no
//! hashing, no allocation.
//!
//! # How rules combine
//! 1. Any matching `deny` wins: guardrails are absolute.
//! 2. Otherwise the first matching rule scoped to one of the caller's groups
//!    (e.g. "dba may delete") decides: a group exemption overrides a general rule.
//! 3. Otherwise the first matching unscoped rule decides.
//! 4. No match: allow.

use std::collections::HashMap;
use std::sync::Arc;

use crate::{Action, Config, STATEMENT_KINDS};

/// A caller's groups as bits; only groups named somewhere in the config get a bit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupSet(pub u128);

impl GroupSet {
    pub fn intersects(self, mask: u128) -> bool {
        self.0 & mask != 0
    }
}

/// Most distinct group names a configuration may use.
pub const MAX_GROUPS: usize = 128;

/// Position of `opaque` in [`STATEMENT_KINDS`] (it is the last entry).
pub const OPAQUE: usize = STATEMENT_KINDS.len() - 1;

/// Index of a kind name in [`STATEMENT_KINDS`].
pub fn kind_index(name: &str) -> Option<usize> {
    STATEMENT_KINDS.iter().position(|k| *k == name)
}

/// The statement being judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement {
    /// Index into [`STATEMENT_KINDS`].
    pub kind: usize,
    /// `UPDATE`/`DELETE` without `WHERE`.
    pub unbounded: bool,
    /// Contains code the gateway cannot see into.
    pub opaque: bool,
}

/// The `rule` of a decision made by `other_commands` (no rule named the
/// command) or by the `shell` setting; a held one goes to the target's
/// approvers.
pub const OTHER_COMMANDS: u16 = u16::MAX;

/// What happens to a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny { message: Arc<str>, rule: u16 },
    Approve { rule: u16 },
}

#[derive(Debug, Clone)]
struct Entry {
    /// 0 = any caller.
    groups: u128,
    unbounded_only: bool,
    action: Action,
    /// Position of the rule in its guardrail set (for audit: "which rule decided").
    rule: u16,
    message: Arc<str>,
}

/// Who may approve what an `approve` rule holds, and how many of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSpec {
    /// Group names, any of which makes a caller an eligible approver.
    pub approvers: Arc<[String]>,
    /// Distinct approvers needed.
    pub quorum: u8,
    pub mode: crate::ApprovalMode,
    pub timeout: std::time::Duration,
    pub grant_ttl: std::time::Duration,
    /// The requester must give a reason for the request to open.
    pub reason: bool,
}

#[derive(Debug, Clone)]
pub struct TargetPolicy {
    pub name: String,
    /// The target has guardrails or masking: choosing a role or a search path
    /// then needs a rule that allows it (see [`CompiledPolicy::guarded`]).
    guarded: bool,
    access_any: bool,
    access: u128,
    approvers: u128,
    /// For each rule of the target's guardrails, its approval spec if it is an
    /// `approve` rule.
    approvals: Vec<Option<Arc<ApprovalSpec>>>,
    /// One list of entries per statement kind, in rule order.
    kinds: Vec<Vec<Entry>>,
    /// HTTP rules, in rule order.
    http: Vec<HttpEntry>,
    /// SSH command rules, in rule order.
    commands: Vec<CommandEntry>,
    /// SSH: what besides commands a session may do.
    pub ssh: crate::SshRules,
}

/// How the entries that match one request or command decide: any `deny`
/// wins; otherwise the first entry scoped to one of the caller's groups (a
/// group exemption beats a general rule); otherwise the first unscoped one;
/// no match allows.
fn combine<'e, I: Iterator<Item = &'e Entry>>(matching: impl Fn() -> I) -> Decision {
    if let Some(e) = matching().find(|e| e.action == Action::Deny) {
        return Decision::Deny {
            message: e.message.clone(),
            rule: e.rule,
        };
    }
    match matching()
        .find(|e| e.groups != 0)
        .or_else(|| matching().next())
    {
        Some(e) if e.action == Action::Approve => Decision::Approve { rule: e.rule },
        _ => Decision::Allow,
    }
}

/// A compiled SSH command rule: any of its globs matches.
#[derive(Debug, Clone)]
struct CommandEntry {
    globs: Vec<String>,
    entry: Entry,
}

/// A compiled HTTP rule.
#[derive(Debug, Clone)]
struct HttpEntry {
    /// Bit per [`crate::HTTP_METHODS`] index; 0 = any method.
    methods: u16,
    path: Option<PathPattern>,
    entry: Entry,
}

/// A path pattern: `/v1/customers/*` (`*` is one whole segment), `/v1/**`
/// (`**`, last, is any number of segments, including none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern(Vec<PathSeg>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathSeg {
    Lit(String),
    One,
    Rest,
}

impl PathPattern {
    pub fn parse(p: &str) -> PathPattern {
        PathPattern(
            p.trim_start_matches('/')
                .split('/')
                .map(|s| match s {
                    "*" => PathSeg::One,
                    "**" => PathSeg::Rest,
                    lit => PathSeg::Lit(lit.to_owned()),
                })
                .collect(),
        )
    }

    /// Does this path match? The caller passes it canonical and decoded (see
    /// the HTTP driver); matching ignores ASCII case and a trailing `/`, as
    /// many servers do, so neither can step around a rule.
    pub fn matches(&self, path: &str) -> bool {
        let path = path.trim_start_matches('/');
        let path = path.strip_suffix('/').unwrap_or(path);
        let mut segs = path.split('/');
        for (i, p) in self.0.iter().enumerate() {
            match p {
                PathSeg::Rest if i == self.0.len() - 1 => return true,
                PathSeg::Rest => return false,
                PathSeg::One => match segs.next() {
                    Some(s) if !s.is_empty() => {}
                    _ => return false,
                },
                PathSeg::Lit(l) => {
                    if !segs.next().is_some_and(|s| s.eq_ignore_ascii_case(l)) {
                        return false;
                    }
                }
            }
        }
        segs.next().is_none()
    }
}

#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    groups: HashMap<String, u8>,
    pub targets: Vec<TargetPolicy>,
}

impl CompiledPolicy {
    /// Compiles a validated configuration. Fails only if it names more than
    /// [`MAX_GROUPS`] distinct groups.
    pub fn compile(config: &Config) -> Result<CompiledPolicy, String> {
        let mut groups: HashMap<String, u8> = HashMap::new();
        let mut intern = |name: &str| -> Result<u128, String> {
            if name == "*" {
                return Ok(0);
            }
            let next = groups.len();
            let bit = match groups.get(name) {
                Some(&b) => b,
                None if next < MAX_GROUPS => {
                    groups.insert(name.to_owned(), next as u8);
                    next as u8
                }
                None => return Err(format!("more than {MAX_GROUPS} distinct group names")),
            };
            Ok(1u128 << bit)
        };
        let mut targets = Vec::with_capacity(config.targets.len());
        for t in &config.targets {
            let mut access = 0;
            for g in &t.access {
                access |= intern(g)?;
            }
            let mut approvers = 0;
            for g in &t.approvers {
                approvers |= intern(g)?;
            }
            let mut kinds: Vec<Vec<Entry>> = vec![Vec::new(); STATEMENT_KINDS.len()];
            let mut http = Vec::new();
            let mut commands = Vec::new();
            let mut approvals = Vec::new();
            if let Some(set) = t.guardrails.as_ref().and_then(|g| config.guardrails.get(g)) {
                for (i, rule) in set.rules.iter().enumerate() {
                    approvals.push((rule.action == Action::Approve).then(|| {
                        let names = if rule.approvers.is_empty() {
                            &t.approvers
                        } else {
                            &rule.approvers
                        };
                        Arc::new(ApprovalSpec {
                            approvers: names.iter().cloned().collect(),
                            quorum: rule.quorum.unwrap_or(t.quorum),
                            mode: t.approval_mode,
                            timeout: t.approval_timeout.unwrap_or(config.approvals.timeout),
                            grant_ttl: config.approvals.grant_ttl,
                            reason: rule.reason,
                        })
                    }));
                    for g in &rule.approvers {
                        intern(g)?;
                    }
                    let mut mask = 0;
                    for g in &rule.groups {
                        mask |= intern(g)?;
                    }
                    let message: Arc<str> = rule
                        .message
                        .clone()
                        .unwrap_or_else(|| {
                            format!(
                                "blocked by rule {} of guardrails `{}`",
                                i + 1,
                                t.guardrails.as_deref().unwrap_or("")
                            )
                        })
                        .into();
                    if !rule.methods.is_empty() || rule.path.is_some() {
                        let methods = rule
                            .methods
                            .iter()
                            .filter(|m| m.as_str() != "*")
                            .filter_map(|m| crate::HTTP_METHODS.iter().position(|x| x == m))
                            .fold(0u16, |acc, i| acc | 1 << i);
                        http.push(HttpEntry {
                            methods,
                            path: rule.path.as_deref().map(PathPattern::parse),
                            entry: Entry {
                                groups: mask,
                                unbounded_only: false,
                                action: rule.action,
                                rule: i as u16,
                                message: message.clone(),
                            },
                        });
                    }
                    if !rule.commands.is_empty() {
                        commands.push(CommandEntry {
                            globs: rule.commands.clone(),
                            entry: Entry {
                                groups: mask,
                                unbounded_only: false,
                                action: rule.action,
                                rule: i as u16,
                                message: message.clone(),
                            },
                        });
                    }
                    for k in &rule.kinds {
                        let Some(ki) = kind_index(k) else { continue };
                        kinds[ki].push(Entry {
                            groups: mask,
                            unbounded_only: rule.unbounded,
                            action: rule.action,
                            rule: i as u16,
                            message: message.clone(),
                        });
                    }
                }
            }
            targets.push(TargetPolicy {
                name: t.name.clone(),
                guarded: t.guardrails.is_some() || t.masking.is_some(),
                access_any: t.access.iter().any(|g| g == "*"),
                access,
                approvers,
                approvals,
                kinds,
                http,
                commands,
                ssh: t
                    .guardrails
                    .as_ref()
                    .and_then(|g| config.guardrails.get(g))
                    .map(|g| g.ssh)
                    .unwrap_or_default(),
            });
        }
        for g in &config
            .identity
            .as_ref()
            .map(|i| i.admin_groups.clone())
            .unwrap_or_default()
        {
            intern(g)?;
        }
        Ok(CompiledPolicy { groups, targets })
    }

    /// Interns a caller's group names; names the config never mentions are ignored.
    pub fn groups<S: AsRef<str>>(&self, names: &[S]) -> GroupSet {
        GroupSet(
            names
                .iter()
                .filter_map(|n| self.groups.get(n.as_ref()))
                .fold(0, |m, &b| m | 1u128 << b),
        )
    }

    pub fn target_index(&self, name: &str) -> Option<usize> {
        self.targets.iter().position(|t| t.name == name)
    }

    /// May a caller with `groups` connect to `target`?
    pub fn may_connect(&self, target: usize, groups: GroupSet) -> bool {
        let t = &self.targets[target];
        t.access_any || groups.intersects(t.access)
    }

    /// May a caller with `groups` approve requests on `target`?
    pub fn may_approve(&self, target: usize, groups: GroupSet) -> bool {
        groups.intersects(self.targets[target].approvers)
    }

    /// The approval spec of an `approve` rule (from [`Decision::Approve`]).
    pub fn approval(&self, target: usize, rule: u16) -> Option<&Arc<ApprovalSpec>> {
        self.targets[target].approvals.get(rule as usize)?.as_ref()
    }

    /// Does the target have guardrails or masking? Then statements of the
    /// kinds `set_role` and `set_search_path` are refused unless a rule
    /// explicitly allows them: a role or search path of the client's choosing
    /// could step around rules and masking written for the login role's view.
    pub fn guarded(&self, target: usize) -> bool {
        self.targets[target].guarded
    }

    /// Does a rule explicitly `allow` this kind for these groups (not just the
    /// absence of a rule)?
    pub fn explicitly_allows(&self, target: usize, kind: usize, groups: GroupSet) -> bool {
        self.targets[target].kinds.get(kind).is_some_and(|l| {
            l.iter().any(|e| {
                e.action == Action::Allow && (e.groups == 0 || groups.intersects(e.groups))
            })
        })
    }

    /// The decision for one HTTP request (`path` canonical, without the query),
    /// combining rules exactly like statements.
    pub fn decide_http(
        &self,
        target: usize,
        method: &str,
        path: &str,
        groups: GroupSet,
    ) -> Decision {
        // Methods are case-sensitive on the wire, but some servers fold them:
        // `delete` must not step around a rule for `DELETE`.
        let bit = crate::HTTP_METHODS
            .iter()
            .position(|m| m.eq_ignore_ascii_case(method))
            .map_or(0, |i| 1u16 << i);
        combine(|| {
            self.targets[target]
                .http
                .iter()
                .filter(move |h| {
                    (h.methods == 0 || h.methods & bit != 0)
                        && h.path.as_ref().is_none_or(|p| p.matches(path))
                        && (h.entry.groups == 0 || groups.intersects(h.entry.groups))
                })
                .map(|h| &h.entry)
        })
    }

    /// The decision for one SSH `exec` command line: every rule is matched
    /// against the whole line (whitespace normalised) and against each simple
    /// command it runs (`a; sudo b | c`, `$(d)`, `sh -c 'e'`: see
    /// [`sluice_protocols::shell`]); the strictest decision over all of them
    /// holds, as for the statements of one SQL message. A line the gateway
    /// cannot read (a program named by a variable, `eval`) is refused where
    /// any rule would deny or hold a command for this caller.
    pub fn decide_command(&self, target: usize, line: &str, groups: GroupSet) -> Decision {
        let rules = &self.targets[target].commands;
        let other = self.targets[target].ssh.other_commands;
        let applies = |c: &&CommandEntry| c.entry.groups == 0 || groups.intersects(c.entry.groups);
        let mut candidates = vec![sluice_protocols::shell::normalise(line)];
        match sluice_protocols::shell::read(line) {
            Ok(found) => {
                if other != Action::Allow {
                    // An allow-list names commands; a line that does more,
                    // or runs none, is not on it.
                    let why = match (found.unlisted, found.commands.is_empty()) {
                        (Some(why), _) => Some(why),
                        (None, true) => Some("it runs no command"),
                        (None, false) => None,
                    };
                    if let Some(why) = why {
                        return Decision::Deny {
                            message: format!(
                                "this command line is not among those allowed on this target ({why})"
                            )
                            .into(),
                            rule: OTHER_COMMANDS,
                        };
                    }
                }
                candidates.extend(found.commands)
            }
            Err(why) => {
                let stops = rules
                    .iter()
                    .filter(applies)
                    .find(|c| c.entry.action != Action::Allow)
                    .map(|c| c.entry.rule);
                if let Some(rule) = stops.or((other != Action::Allow).then_some(OTHER_COMMANDS)) {
                    return Decision::Deny {
                        message: format!(
                            "this command line cannot be judged ({why}); send the commands themselves"
                        )
                        .into(),
                        rule,
                    };
                }
            }
        }
        // The approvals the line's commands need, each rule's once.
        let mut held: Vec<u16> = Vec::new();
        for (i, text) in candidates.iter().enumerate() {
            // An allow-list: every command the line runs must be named (the
            // line as a whole need not be, when its commands are).
            // The rules naming this text, matched once.
            let matching: Vec<&Entry> = rules
                .iter()
                .filter(applies)
                .filter(|c| {
                    c.globs
                        .iter()
                        .any(|g| sluice_protocols::shell::glob(g, text))
                })
                .map(|c| &c.entry)
                .collect();
            let named = i == 0 || !matching.is_empty();
            if !named {
                match other {
                    Action::Allow => {}
                    Action::Deny => {
                        return Decision::Deny {
                            message: format!(
                                "`{text}` is not among the commands allowed on this target"
                            )
                            .into(),
                            rule: OTHER_COMMANDS,
                        }
                    }
                    Action::Approve => {
                        if !held.contains(&OTHER_COMMANDS) {
                            held.push(OTHER_COMMANDS);
                        }
                    }
                }
            }
            let decision = combine(|| matching.iter().copied());
            match decision {
                Decision::Deny { .. } => return decision,
                Decision::Approve { rule } => {
                    if !held.contains(&rule) {
                        held.push(rule);
                    }
                }
                Decision::Allow => {}
            }
        }
        // Commands held by different rules (or by a rule and the target, for
        // what no rule names) wait for different approvers: one approval
        // cannot stand for the others.
        match held.as_slice() {
            [] => Decision::Allow,
            [rule] => Decision::Approve { rule: *rule },
            _ => Decision::Deny {
                message: "the commands of this line are held by different approvers; send them one at a time"
                    .into(),
                rule: held[0],
            },
        }
    }

    /// The decision for one statement.
    pub fn decide(&self, target: usize, stmt: Statement, groups: GroupSet) -> Decision {
        let t = &self.targets[target];
        let opaque = OPAQUE;
        let lists: [&[Entry]; 2] = [
            t.kinds.get(stmt.kind).map_or(&[][..], Vec::as_slice),
            if stmt.opaque && stmt.kind != opaque {
                &t.kinds[opaque]
            } else {
                &[]
            },
        ];
        let matches = |e: &&Entry| {
            (!e.unbounded_only || stmt.unbounded) && (e.groups == 0 || groups.intersects(e.groups))
        };
        let all = || lists.iter().flat_map(|l| l.iter()).filter(matches);
        if let Some(e) = all().find(|e| e.action == Action::Deny) {
            return Decision::Deny {
                message: e.message.clone(),
                rule: e.rule,
            };
        }
        let chosen = all().find(|e| e.groups != 0).or_else(|| all().next());
        match chosen {
            Some(e) if e.action == Action::Approve => Decision::Approve { rule: e.rule },
            _ => Decision::Allow,
        }
    }
}
