//! Statement decisions on the data path: classify the SQL (`sluice_protocols::sql`),
//! then look each statement up in the compiled policy tables
//! (`sluice_config::policy`). A multi-statement message is refused whole if any
//! statement is refused.

use std::cell::Cell;
use std::sync::Arc;

use sluice_config::policy::{
    ApprovalSpec, CompiledPolicy, Decision, GroupSet, Statement as PolicyStatement,
};
use sluice_protocols::sql::{Kind, Statement};

pub mod cache;

use crate::identity::Identity;

/// What the driver does with a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny {
        message: Arc<str>,
        detail: String,
        /// The guardrail rule (0-based) that decided, if one did.
        rule: Option<u16>,
    },
    /// Runs only once a second person approves (rule `rule`, 0-based).
    Approve {
        rule: u16,
        spec: Arc<ApprovalSpec>,
        /// The statement kind that needs approval, e.g. `DELETE`.
        kind: Kind,
    },
}

/// What a session derives from the policy once per policy generation: its
/// target's index and its caller's group bits (so a statement costs array
/// lookups, not name hashing).
pub struct Resolved {
    generation: Cell<u64>,
    target: Cell<Option<usize>>,
    groups: Cell<GroupSet>,
}

impl Default for Resolved {
    fn default() -> Self {
        Resolved {
            generation: Cell::new(u64::MAX),
            target: Cell::new(None),
            groups: Cell::new(GroupSet::default()),
        }
    }
}

impl Resolved {
    fn get(&self, judge: &Judge<'_>, identity: &Identity) -> (Option<usize>, GroupSet) {
        let (policy, generation) = (judge.policy, judge.generation);
        if self.generation.get() != generation {
            self.target.set(policy.target_index(judge.target));
            self.groups.set(policy.groups(&identity.groups));
            self.generation.set(generation);
        }
        (self.target.get(), self.groups.get())
    }
}

/// The policy a statement is judged by: the tables in force, which load of
/// the configuration they come from, and the target's name.
pub struct Judge<'a> {
    pub policy: &'a CompiledPolicy,
    /// Changes with every reload: what a session resolved before is stale.
    pub generation: u64,
    pub target: &'a str,
}

/// `set_config(text, text, boolean)` in every PostgreSQL catalog (`pg_proc.dat`).
const SET_CONFIG_OID: u32 = 2078;

/// A `FunctionCall` message runs a function by OID: code the gateway cannot
/// see, so opaque. `set_config` by OID may set anything (its arguments are
/// binary values): it counts as setting the role, the search path and an
/// unknown client encoding.
pub fn function_call(oid: u32) -> Statement {
    let mut flags = sluice_protocols::sql::Flags {
        opaque: true,
        writes: true,
        ..Default::default()
    };
    if oid == SET_CONFIG_OID {
        flags.kinds = Kind::SetRole.bit() | Kind::SetSearchPath.bit();
        flags.encoding = Some(sluice_protocols::postgres::encoding::Class::Unsafe);
    }
    Statement {
        kind: Kind::Select,
        flags,
    }
}

/// Judges classified statements for the caller: a `Query`'s or `Parse`'s, or
/// ones the driver built itself (a startup parameter is judged as the `SET` it
/// amounts to, see [`sluice_protocols::sql::setting`]).
pub fn decide(
    judge: &Judge<'_>,
    identity: &Identity,
    resolved: &Resolved,
    statements: &[Statement],
) -> Verdict {
    let (policy, name) = (judge.policy, judge.target);
    let (target, groups) = resolved.get(judge, identity);
    let Some(t) = target else {
        return Verdict::Deny {
            message: "target is no longer configured".into(),
            detail: String::new(),
            rule: None,
        };
    };
    // Access is judged again at every statement: a reload that takes the
    // caller's groups off `access` ends what open sessions may do.
    if !policy.may_connect(t, groups) {
        return Verdict::Deny {
            message: format!("access to target `{name}` was withdrawn").into(),
            detail: "the configuration in force no longer lets your groups connect".into(),
            rule: None,
        };
    }
    // A deny anywhere in the message wins over an approval elsewhere in it.
    let mut approve: Option<Verdict> = None;
    for st in statements {
        // A statement is judged as every kind it does: its own and those
        // inside it (`WITH d AS (DELETE ...) INSERT`, `MERGE ... THEN DELETE`,
        // `SELECT set_config('role', ...)`).
        for kind in st.kinds() {
            if let Some(deny) = judge_kind(policy, t, name, groups, st, kind, &mut approve) {
                return deny;
            }
        }
    }
    approve.unwrap_or(Verdict::Allow)
}

/// Judges one statement as `kind`; `Some` refuses the whole message, an
/// approval is kept in `approve`.
fn judge_kind(
    policy: &CompiledPolicy,
    t: usize,
    name: &str,
    groups: GroupSet,
    st: &Statement,
    kind: Kind,
    approve: &mut Option<Verdict>,
) -> Option<Verdict> {
    // `Kind` is declared in `STATEMENT_KINDS` order (checked by a test below).
    let index = kind as usize;
    let ps = PolicyStatement {
        kind: index,
        unbounded: st.flags.unbounded,
        opaque: st.flags.opaque,
    };
    match policy.decide(t, ps, groups) {
        Decision::Allow => {
            // Choosing the role or the search path on a target with guardrails
            // or masking needs a rule that says so (see `CompiledPolicy::guarded`).
            // `COPY ... PROGRAM` runs a command on the database server: only
            // where a rule says so, on any target.
            let (what, guarded) = match kind {
                Kind::SetRole => (
                    "choosing the session's role (SET ROLE, SET SESSION AUTHORIZATION)",
                    policy.guarded(t),
                ),
                Kind::SetSearchPath => ("changing search_path", policy.guarded(t)),
                Kind::Program => ("COPY ... PROGRAM (a command on the database server)", true),
                _ => return None,
            };
            if guarded && !policy.explicitly_allows(t, index, groups) {
                return Some(Verdict::Deny {
                    message: format!("{what} is not allowed on target `{name}`").into(),
                    detail: format!(
                        "a guardrail rule with kinds = [\"{}\"] and action = \"allow\" permits it",
                        kind.as_str()
                    ),
                    rule: None,
                });
            }
            None
        }
        Decision::Deny { message, rule } => Some(Verdict::Deny {
            message,
            detail: format!(
                "{} statement refused by guardrail rule {}",
                st.kind.as_str(),
                rule + 1
            ),
            rule: Some(rule),
        }),
        Decision::Approve { rule } => {
            // Statements of one message under different approval rules
            // would be approved by the weaker rule: refuse the mix.
            if let Some(Verdict::Approve { spec, .. }) = &approve {
                if policy.approval(t, rule).is_some_and(|s| **s != **spec) {
                    return Some(Verdict::Deny {
                        message: "these statements need approval under different rules; send them separately".into(),
                        detail: format!("guardrail rule {} and another approve rule both apply", rule + 1),
                        rule: Some(rule),
                    });
                }
            }
            if approve.is_none() {
                let Some(spec) = policy.approval(t, rule) else {
                    return Some(Verdict::Deny {
                        message: format!(
                            "{} on target `{name}` needs approval, and nobody may approve it",
                            kind.as_str().to_uppercase()
                        )
                        .into(),
                        detail: format!("guardrail rule {} has no approvers", rule + 1),
                        rule: Some(rule),
                    });
                };
                *approve = Some(Verdict::Approve {
                    rule,
                    spec: spec.clone(),
                    kind,
                });
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_protocols::sql::Kind;

    /// The classifier's kinds and the config's kind names must line up.
    #[test]
    fn kinds_match_the_config_contract() {
        for k in Kind::ALL {
            assert!(
                sluice_config::policy::kind_index(k.as_str()).is_some(),
                "{k:?}"
            );
        }
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        let config: Vec<&str> = sluice_config::STATEMENT_KINDS
            .iter()
            .copied()
            .filter(|k| *k != "opaque")
            .collect();
        assert_eq!(names, config);
    }
}
