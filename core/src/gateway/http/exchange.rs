//! One request's way through: approval hold, the form-body override check,
//! the command record, the upstream connection (own, pooled or new), the
//! body upstream, the response back.

use super::respond::*;
use super::*;

pub(super) enum Next {
    KeepAlive,
    Close,
}

/// Forwards one admitted request and relays its response.
pub(super) async fn exchange<C: AsyncReadRent + AsyncWriteRent>(
    cx: &Context<'_>,
    client: &mut C,
    buf: &mut Vec<u8>,
    mut fwd: Forward,
    started: Instant,
) -> Next {
    crate::gateway::bench_slowdown();
    if fwd.expect_continue {
        // Everything about the request checked out: ask for the body now.
        if client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await
            .0
            .is_err()
        {
            return Next::Close;
        }
    }
    let mut held_body: Option<Vec<u8>> = None;
    let mut approval = None;
    // An urlencoded body on a target that judges overrides is read whole
    // first: its `_method` is judged before anything is forwarded.
    if let Some(rule_path) = fwd.form_rule_path.take() {
        let body = match read_whole_body(client, buf, fwd.framing, MAX_HELD_BODY).await {
            Ok(b) => b,
            Err(e) => {
                refuse(client, Reply::failure(&e)).await;
                return Next::Close;
            }
        };
        if let Err(r) = judge_form_override(cx, &mut fwd, &body, &rule_path) {
            if r.status == 403 {
                let said: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                record(cx, &fwd, "deny", None, said["error"].as_str()).await;
            }
            return if reply(client, r).await.is_ok() && fwd.keep_alive {
                Next::KeepAlive
            } else {
                Next::Close
            };
        }
        fwd.framing = if body.is_empty() {
            Framing::None
        } else {
            Framing::Length(body.len() as u64)
        };
        fwd.form = None;
        held_body = Some(body);
    }
    // A request that needs approval is read whole first: the approval is bound
    // to its method, target and body.
    if let Some((rule, spec)) = fwd.hold.take() {
        let body = match held_body.take() {
            Some(b) => b,
            None => match read_whole_body(client, buf, fwd.framing, MAX_HELD_BODY).await {
                Ok(b) => b,
                Err(e) => {
                    refuse(client, Reply::failure(&e)).await;
                    return Next::Close;
                }
            },
        };
        match hold(cx, &fwd, &body, rule, &spec).await {
            Held::Approved(id) => approval = Some(id),
            Held::Answer(r) => {
                let decision = if r.status == 202 { "approve" } else { "deny" };
                // The record says what the client was told, in words, and
                // which approval it was about.
                let said: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                let reason = said["error"].as_str().or(said["message"].as_str());
                record(cx, &fwd, decision, said["approval"].as_u64(), reason).await;
                return if reply(client, r).await.is_ok() && fwd.keep_alive {
                    Next::KeepAlive
                } else {
                    Next::Close
                };
            }
            Held::Gone => return Next::Close,
        }
        fwd.framing = if body.is_empty() {
            Framing::None
        } else {
            Framing::Length(body.len() as u64)
        };
        held_body = Some(body);
    }
    // A method override in a form body: refused like one in the query. Form
    // bodies are scanned as they stream (a held one whole, here).
    let mut scan = fwd.form.as_ref().map(FormScan::new);
    if let (Some(sc), Some(body)) = (scan.as_mut(), &held_body) {
        if let Err(why) = sc.feed(body).and_then(|()| sc.finish()) {
            refuse(client, Reply::failure(&bad_request(why))).await;
            return Next::Close;
        }
    }
    if !record(cx, &fwd, "allow", approval, None).await {
        let e = Error::new(
            Kind::AuditUnavailable,
            "request refused: the audit log cannot record it; Sluice runs nothing it cannot record",
            "",
        );
        refuse(client, Reply::failure(&e)).await;
        return Next::Close;
    }
    finish_head(&mut fwd.head, fwd.framing);
    let mut head = std::mem::take(&mut fwd.head);
    // A pooled connection the upstream closed just as the request went out is
    // retried once on a fresh connection, when the request can be sent again
    // (no body, or a body held in memory) and nothing reached the client.
    // Only requests that are safe to repeat: GET, HEAD, OPTIONS without a body
    // (an approved request runs once, whatever happens).
    let replayable = fwd.framing == Framing::None
        && held_body.is_none()
        && approval.is_none()
        && ["GET", "HEAD", "OPTIONS"]
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&fwd.method));
    let mut attempt = 0;
    let (up, outcome) = loop {
        let (mut up, reused) = match checkout(cx, replayable && attempt == 0, &fwd.identity).await {
            Ok(u) => u,
            Err(e) => {
                let e = Error::new(
                    Kind::Unreachable,
                    format!("target `{}` is unreachable", cx.target.name),
                    e,
                );
                cx.shard.failed(&e);
                warn!(
                    "upstream_connect_failed",
                    target = cx.target.name,
                    error = e.detail
                );
                return if reply(client, Reply::failure(&e)).await.is_ok()
                    && fwd.keep_alive
                    && fwd.framing == Framing::None
                {
                    Next::KeepAlive
                } else {
                    Next::Close
                };
            }
        };
        let may_retry = reused && replayable && attempt == 0;
        attempt += 1;
        let (res, back) = up.write_all(head).await;
        head = back;
        let name = &cx.target.name;
        let sent = match res {
            Err(e) => Err(upstream_broken(name, e)),
            Ok(_) => match held_body.take() {
                Some(body) => {
                    let (res, back) = up.write_all(body).await;
                    held_body = Some(back);
                    res.map(|_| ()).map_err(|e| upstream_broken(name, e))
                }
                None => copy_body(client, buf, fwd.framing, &mut up, scan.as_mut(), name).await,
            },
        };
        match sent {
            Ok(()) => {}
            Err(e) if e.retryable() && may_retry => continue,
            Err(e) if e.source() == Source::Upstream => {
                cx.shard.failed(&e);
                let _ = reply(client, Reply::failure(&e).closing()).await;
                return Next::Close;
            }
            Err(e) => {
                // The rest of the body may still be on its way.
                refuse(client, Reply::failure(&e)).await;
                return Next::Close;
            }
        }
        let outcome = respond(cx, client, &mut up, &fwd, may_retry).await;
        if outcome.retry {
            debug!(
                "upstream_retry",
                target = cx.target.name,
                reason = "a reused connection closed"
            );
            continue;
        }
        break (up, outcome);
    };
    let m = cx.shard.metrics.target(cx.index);
    m.bytes_from_upstream
        .set(m.bytes_from_upstream.get().wrapping_add(outcome.bytes));
    let elapsed = started.elapsed();
    cx.shard.metrics.command_done(elapsed);
    if let Some(audit) = cx.shard.audit() {
        let event = CommandResult {
            session: &cx.session,
            target: &cx.target.name,
            subject: &fwd.identity.subject,
            cmds: None,
            status: Some(outcome.status as u64),
            rows: None,
            bytes: outcome.bytes,
            duration_us: elapsed.as_micros() as u64,
            masked: &outcome.masked,
            error: outcome.error.as_deref(),
        };
        audit.note(|out| event.encode(out));
    }
    if outcome.upstream_reusable {
        checkin(cx, up, &fwd.identity);
    }
    if outcome.client_ok && fwd.keep_alive {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// A form body's `_method` on a target that judges overrides: it must name
/// one method and agree with any header or query override; the stricter of
/// the decision so far and the named method's holds (a deny is answered,
/// an approval held like any other).
pub(super) fn judge_form_override(
    cx: &Context<'_>,
    fwd: &mut Forward,
    body: &[u8],
    rule_path: &str,
) -> Result<(), Reply> {
    if fwd.form != Some(Form::Urlencoded) {
        return Ok(());
    }
    let values = form_override_values(body);
    let Some(first) = values.first() else {
        return Ok(());
    };
    let valid = !first.is_empty() && first.len() <= 16 && first.iter().all(u8::is_ascii_alphabetic);
    let agrees = |m: &[u8]| m.eq_ignore_ascii_case(first);
    if !valid
        || !values.iter().all(|v| agrees(v))
        || (fwd.overridden && !agrees(fwd.judged.as_bytes()))
    {
        return Err(Reply::error(
            400,
            "bad request: method overrides must name one method (letters only) and agree",
        ));
    }
    let named = String::from_utf8_lossy(first).to_ascii_uppercase();
    let generation = cx.shard.generation();
    let policy = &generation.policy;
    let t = policy
        .target_index(&cx.target.name)
        .ok_or_else(|| Reply::error(503, "target is no longer configured"))?;
    let groups = policy.groups(&fwd.identity.groups);
    let mut decision = policy.decide_http(t, &named, rule_path, groups);
    // What admit decided for the request's own method (and any override):
    // judged again so the stricter of both holds.
    decision = stricter(
        policy.decide_http(t, &fwd.judged, rule_path, groups),
        decision,
    );
    decision = stricter(
        policy.decide_http(t, &fwd.method, rule_path, groups),
        decision,
    );
    fwd.judged = named;
    match decision {
        Decision::Allow => Ok(()),
        Decision::Deny { message, rule } => {
            info!(
                "request_denied",
                target = cx.target.name,
                subject = fwd.identity.subject,
                method = fwd.judged,
                path = rule_path,
                rule = rule + 1
            );
            Err(denied(&message, rule))
        }
        Decision::Approve { rule } => {
            fwd.hold = Some((rule, approval_spec(policy, t, rule)?));
            Ok(())
        }
    }
}

/// Writes the command record; in strict durability waits for the disk. `false`
/// if it could not be recorded (the request must not run).
pub(super) async fn record(
    cx: &Context<'_>,
    fwd: &Forward,
    decision: &str,
    approval: Option<u64>,
    reason: Option<&str>,
) -> bool {
    let Some(audit) = cx.shard.audit() else {
        return true;
    };
    let event = Command {
        text: Some(fwd.target.as_bytes()),
        approval,
        reason,
        ..Command::new(
            &cx.session,
            &cx.target.name,
            &fwd.identity.subject,
            "http",
            Via::Method(&fwd.judged),
            decision,
        )
    };
    let pushed = audit.push(|out| event.encode(out)).await;
    match pushed {
        Ok(t) if decision == "allow" => audit.wait_durable(t).await.is_ok(),
        Ok(_) => true,
        Err(e) => {
            warn!(
                "audit_refused_commands",
                target = cx.target.name,
                reason = e
            );
            cx.shard.metrics.error(ErrorKind::Audit);
            false
        }
    }
}

pub(super) enum Held {
    Approved(u64),
    Answer(Reply),
    Gone,
}

/// Opens (or uses) an approval for this exact request.
pub(super) async fn hold(
    cx: &Context<'_>,
    fwd: &Forward,
    body: &[u8],
    _rule: u16,
    spec: &std::sync::Arc<ApprovalSpec>,
) -> Held {
    let fields: [(&[u8], &[u8]); 3] = [
        (b"method", fwd.judged.as_bytes()),
        (b"target", fwd.target.as_bytes()),
        (b"body", body),
    ];
    let key = Key {
        requester: fwd.identity.subject.clone(),
        target: cx.target.name.clone(),
        hash: approvals::key_hash(&fields, spec),
    };
    let what = format!("{} {} on {}", fwd.judged, fwd.target, cx.target.name);
    let shown = String::from_utf8_lossy(&body[..body.len().min(16 * 1024)]);
    let text = if shown.is_empty() {
        format!("{} {}", fwd.judged, fwd.target)
    } else {
        format!("{} {}\n\n{shown}", fwd.judged, fwd.target)
    };
    let held = approvals::Hold {
        key,
        spec: spec.clone(),
        protocol: "http",
        what: what.clone(),
        summary: fwd.judged.clone(),
        text,
        params: Vec::new(),
        database: String::new(),
        session: cx.session.clone(),
        justification: fwd.justification.clone(),
        how_to_justify: "send it in a Sluice-Reason header",
    };
    let pending = match cx
        .shard
        .shared
        .approvals
        .hold(held, monoio::time::sleep)
        .await
    {
        Opened::Granted(id) => return Held::Approved(id),
        Opened::Failed(message) => return Held::Answer(Reply::error(503, message)),
        Opened::Later {
            id,
            approvers,
            expires_at,
            ..
        } => {
            return Held::Answer(Reply::json(
                202,
                serde_json::json!({
                    "approval": id,
                    "status": "pending",
                    "message": format!("approval {id} requested for {what}; send the same request again once it is approved"),
                    "approvers": &*approvers,
                    "expires_at": expires_at,
                }),
            ));
        }
        Opened::Waiting(pending) => pending,
    };
    let waiting = approvals::Waiting {
        stopping: || cx.shard.stopping.is_set(),
        cancelled: || false,
        sleep: monoio::time::sleep,
    };
    let settled = pending.wait(cx.fd, waiting).await;
    let message = settled.message();
    match settled {
        Settled::Approved(id) => Held::Approved(id),
        Settled::Gone => Held::Gone,
        Settled::Refused { id, why, .. } => {
            let reason = match why {
                Refusal::Denied { reason, .. } => reason,
                _ => None,
            };
            Held::Answer(Reply::json(
                403,
                serde_json::json!({ "error": message, "reason": reason, "approval": id }),
            ))
        }
    }
}

fn bad_request(why: &str) -> Error {
    Error::new(Kind::BadRequest, format!("bad request: {why}"), "")
}

fn bad_chunked(e: impl std::fmt::Display) -> Error {
    Error::new(Kind::BadRequest, format!("bad chunked body: {e}"), "")
}

fn ended_early() -> Error {
    Error::new(Kind::BadRequest, "the request body ended early", "")
}

/// The upstream connection of target `name` failed while the request went out.
fn upstream_broken(name: &str, e: std::io::Error) -> Error {
    Error::new(
        Kind::UpstreamBroken,
        format!("target `{name}` closed the connection"),
        e.to_string(),
    )
}

/// Reads a whole request body (decoding chunks) into memory.
pub(super) async fn read_whole_body<C: AsyncReadRent>(
    client: &mut C,
    buf: &mut Vec<u8>,
    framing: Framing,
    max: u64,
) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    match framing {
        Framing::None | Framing::UntilClose => {}
        Framing::Length(n) => {
            while (buf.len() as u64) < n {
                if !matches!(read_more_timeout(client, buf, STALL).await, Ok(k) if k > 0) {
                    return Err(ended_early());
                }
            }
            body.extend(buf.drain(..n as usize));
        }
        Framing::Chunked => {
            let mut d = ChunkedDecoder::new(max);
            loop {
                let r = d.decode(buf).map_err(bad_chunked)?;
                body.extend_from_slice(&buf[r.data.clone()]);
                buf.drain(..r.consumed);
                if r.done {
                    break;
                }
                if r.consumed == 0
                    && !matches!(read_more_timeout(client, buf, STALL).await, Ok(k) if k > 0)
                {
                    return Err(ended_early());
                }
            }
        }
    }
    Ok(body)
}

/// Streams a request body upstream as framed (chunked bytes pass as they are,
/// after the decoder has checked them).
pub(super) async fn copy_body<C: AsyncReadRent, U: AsyncWriteRent>(
    client: &mut C,
    buf: &mut Vec<u8>,
    framing: Framing,
    up: &mut U,
    mut scan: Option<&mut FormScan>,
    cx_name: &str,
) -> Result<(), Error> {
    // What the scan refuses never reaches the upstream whole: the request is
    // cut short there (before its last bytes) and the connection closed.
    let mut look = |data: &[u8], last: bool| {
        let r: Option<Result<(), &'static str>> = scan.as_deref_mut().map(|s| {
            s.feed(data)?;
            if last {
                s.finish()?;
            }
            Ok(())
        });
        match r {
            Some(Err(why)) => Err(bad_request(why)),
            _ => Ok(()),
        }
    };
    match framing {
        Framing::None | Framing::UntilClose => Ok(()),
        Framing::Length(mut left) => loop {
            let n = (buf.len() as u64).min(left) as usize;
            if n > 0 {
                look(&buf[..n], n as u64 == left)?;
                write_range(up, buf, 0..n)
                    .await
                    .map_err(|e| upstream_broken(cx_name, e))?;
                buf.drain(..n);
                left -= n as u64;
            }
            if left == 0 {
                return Ok(());
            }
            if !matches!(read_more_timeout(client, buf, STALL).await, Ok(k) if k > 0) {
                return Err(ended_early());
            }
        },
        Framing::Chunked => {
            let mut d = ChunkedDecoder::new(u64::MAX);
            loop {
                let mut checked = 0;
                let done = loop {
                    let r = d.decode(&buf[checked..]).map_err(bad_chunked)?;
                    look(&buf[checked + r.data.start..checked + r.data.end], r.done)?;
                    checked += r.consumed;
                    if r.done || r.consumed == 0 {
                        break r.done;
                    }
                };
                // Trailer fields could carry what the gateway strips from heads
                // (a token, a credential): refused, never forwarded.
                if d.has_trailers() {
                    return Err(bad_request(
                        "trailer fields in request bodies are not accepted",
                    ));
                }
                if checked > 0 {
                    write_range(up, buf, 0..checked)
                        .await
                        .map_err(|e| upstream_broken(cx_name, e))?;
                    buf.drain(..checked);
                }
                if done {
                    return Ok(());
                }
                if !matches!(read_more_timeout(client, buf, STALL).await, Ok(k) if k > 0) {
                    return Err(ended_early());
                }
            }
        }
    }
}

/// An upstream connection (the client's own, a pooled one, or a new one, TLS
/// if configured), and whether it was reused (a fresh one is not retried).
pub(super) async fn checkout(
    cx: &Context<'_>,
    replayable: bool,
    who: &Rc<Identity>,
) -> Result<(Upstream, bool), String> {
    // Idle connections the upstream has closed meanwhile are dropped, not used.
    // The one this client used a moment ago, for the same caller, skips that
    // check (a syscall) for a request that is retried anyway if the connection
    // turns out closed.
    let own = cx.cache.borrow_mut().up.take();
    if let Some((u, idle_since, last)) = own {
        if replayable && Rc::ptr_eq(&last, who) && idle_since.elapsed() < FRESH {
            cx.cache.borrow_mut().up_unchecked = true;
            return Ok((u, true));
        }
        if !u.closed() {
            return Ok((u, true));
        }
    }
    cx.cache.borrow_mut().up_unchecked = false;
    if let Some(u) = cx.shard.pool().take(&cx.target.name, cx.plan.generation) {
        return Ok((u, true));
    }
    let up = upstream::connect(
        cx.plan.upstream_tls.as_ref(),
        cx.target,
        cx.config.gateway.connect_timeout,
    )
    .await?;
    Ok((up, false))
}

pub(super) fn checkin(cx: &Context<'_>, up: Upstream, who: &Rc<Identity>) {
    cx.cache.borrow_mut().up = Some((up, Instant::now(), who.clone()));
}

/// The client left: its upstream connection goes to the shard's pool, unless
/// it was ever reused unchecked.
pub(super) fn release(cx: &Context<'_>) {
    let mut cache = cx.cache.borrow_mut();
    let Some((up, _, _)) = cache.up.take() else {
        return;
    };
    if cache.up_unchecked {
        return;
    }
    drop(cache);
    cx.shard.pool().put(&cx.target.name, cx.plan.generation, up);
}
