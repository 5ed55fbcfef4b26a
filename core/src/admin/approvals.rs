//! The approvals API. Every call carries the caller's own token
//! (`Authorization: Bearer`):
//!
//! - `GET /api/approvals?state=pending`: requests the caller may see, newest
//!   first (admins see all; others see the ones they may decide or asked for).
//! - `GET /api/approvals/{id}`
//! - `POST /api/approvals/{id}/approve` and `/deny`, with an optional JSON body
//!   `{"reason": "..."}`.
//!
//! The segregation-of-duties rules are the store's (see
//! [`crate::approvals::store`]); this layer maps their refusals to statuses:
//! 403 for the requester or a non-approver, 409 for a request already decided
//! or expired, 404 for an unknown (or invisible) id.

use sluice_protocols::http;

use super::{caller, is_admin, json};
use crate::approvals::{Decision, Request, State, StoreError, VoteError, Voter, CALL_TIMEOUT};
use crate::identity::Identity;
use crate::shard::Shard;

pub async fn route(shard: &Shard, req: &http::Request<'_, '_>, body: &[u8]) -> Vec<u8> {
    let rest = req.path().trim_start_matches("/api/approvals");
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let method_not_allowed = |allow: &str| {
        json(
            405,
            "Method Not Allowed",
            &format!(r#"{{"error":"method not allowed; use {allow}"}}"#),
        )
    };
    match (req.method, parts.as_slice()) {
        ("GET", []) => {}
        (_, []) => return method_not_allowed("GET"),
        ("GET", [_]) => {}
        (_, [_]) => return method_not_allowed("GET"),
        ("POST", [_, "approve" | "deny"]) => {}
        (_, [_, "approve" | "deny"]) => return method_not_allowed("POST"),
        _ => return json(404, "Not Found", r#"{"error":"not found"}"#),
    }
    let identity = match caller(shard, req).await {
        Ok(id) => id,
        Err(reply) => return reply,
    };
    let approvals = &shard.shared.approvals;
    let admin = is_admin(shard, &identity);
    let Some(id) = parts.first() else {
        let state = match super::console::query_param(req.query(), "state") {
            None => None,
            Some(s) => match State::parse(&s) {
                Some(st) => Some(st),
                None => {
                    return json(
                        400,
                        "Bad Request",
                        &serde_json::json!({ "error": format!("unknown state `{s}`: expected pending, approved, denied, expired, cancelled or abandoned") }).to_string(),
                    )
                }
            },
        };
        let listed = match answer(approvals.list(state)).await {
            Ok(l) => l,
            Err(e) => return store_down(&e),
        };
        let visible: Vec<Request> = listed
            .into_iter()
            .filter(|r| admin || may_see(&identity, r))
            .collect();
        return json(
            200,
            "OK",
            &serde_json::json!({ "approvals": visible }).to_string(),
        );
    };
    let Ok(id) = id.parse::<u64>() else {
        return json(
            400,
            "Bad Request",
            r#"{"error":"an approval id is a number"}"#,
        );
    };
    let not_found = || {
        json(
            404,
            "Not Found",
            &serde_json::json!({ "error": format!("no approval request {id}") }).to_string(),
        )
    };
    let Some(action) = parts.get(1) else {
        return match answer(approvals.get(id)).await {
            Ok(Some(r)) if admin || may_see(&identity, &r) => {
                json(200, "OK", &serde_json::to_string(&r).unwrap_or_default())
            }
            Ok(_) => not_found(),
            Err(e) => store_down(&e),
        };
    };
    let reason = match reason(body) {
        Ok(r) => r,
        Err(e) => {
            return json(
                400,
                "Bad Request",
                &serde_json::json!({ "error": e }).to_string(),
            )
        }
    };
    let decision = if *action == "approve" {
        Decision::Approve
    } else {
        Decision::Deny
    };
    match cast_vote(shard, &identity, admin, id, decision, reason, "api").await {
        Ok(v) => json(
            200,
            "OK",
            &serde_json::json!({
                "request": v.request,
                "counted": v.counted,
                "decided": v.decided,
            })
            .to_string(),
        ),
        Err(VoteError::NotFound(_)) => not_found(),
        Err(e) => {
            let (status, reason) = vote_status(&e);
            json(
                status,
                reason,
                &serde_json::json!({ "error": e.to_string() }).to_string(),
            )
        }
    }
}

/// Counts `identity`'s vote on request `id`, for the admin API and the
/// console alike (`via` says which, in the log). Whoever may not see a
/// request learns nothing about it, not even that it exists: `NotFound`.
pub(super) async fn cast_vote(
    shard: &Shard,
    identity: &Identity,
    admin: bool,
    id: u64,
    decision: Decision,
    reason: Option<String>,
    via: &str,
) -> Result<crate::approvals::Voted, VoteError> {
    let approvals = &shard.shared.approvals;
    match answer(approvals.get(id)).await {
        Ok(Some(r)) if admin || may_see(identity, &r) => {}
        Ok(_) => return Err(VoteError::NotFound(id)),
        Err(e) => return Err(e.into()),
    }
    let voter = Voter {
        subject: identity.subject.clone(),
        groups: identity.groups.clone(),
    };
    let voted = answer(approvals.vote(id, &voter, decision, reason)).await;
    match &voted {
        Ok(v) => crate::info!(
            "approval_vote",
            approval = id,
            subject = identity.subject,
            decision = decision.as_str(),
            state = v.request.state.as_str(),
            via = via
        ),
        Err(VoteError::NotFound(_)) => {}
        Err(e) => crate::info!(
            "approval_vote_refused",
            approval = id,
            subject = identity.subject,
            error = e,
            via = via
        ),
    }
    voted
}

/// A store call, bounded: a store that stops answering gets a 503, never a
/// request that hangs.
pub(super) async fn answer<T, E: From<StoreError>>(
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    monoio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(StoreError("no answer in time".into()).into()))
}

/// The HTTP status of a refused vote, whichever surface it came through.
pub(super) fn vote_status(e: &VoteError) -> (u16, &'static str) {
    match e {
        VoteError::NotFound(_) => (404, "Not Found"),
        VoteError::OwnRequest(_) | VoteError::NotApprover { .. } => (403, "Forbidden"),
        VoteError::Closed { .. } => (409, "Conflict"),
        VoteError::Store(_) => (503, "Service Unavailable"),
    }
}

/// The shared store could not answer: 503, saying why.
fn store_down(e: &StoreError) -> Vec<u8> {
    json(
        503,
        "Service Unavailable",
        &serde_json::json!({ "error": e.to_string() }).to_string(),
    )
}

/// The requester and eligible approvers may see a request.
pub(super) fn may_see(identity: &Identity, r: &Request) -> bool {
    r.requester == identity.subject || identity.groups.iter().any(|g| r.approvers.contains(g))
}

/// The optional `{"reason": "..."}` body.
fn reason(body: &[u8]) -> Result<Option<String>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    match v.get("reason") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.len() <= 1024 => Ok(Some(s.clone())),
        Some(serde_json::Value::String(_)) => Err("`reason` is longer than 1024 bytes".into()),
        Some(_) => Err("`reason` must be a string".into()),
    }
}
