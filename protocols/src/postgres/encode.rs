//! Builders for the messages the gateway writes itself. Each appends one complete
//! message to `out`, so several can be batched into one write.

use super::backend::{field, tag as be};
use super::frontend::tag as fe;
use super::{CANCEL_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE};

/// Appends a tagged message whose body is written by `body`.
pub fn message(out: &mut Vec<u8>, tag: u8, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(tag);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out);
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    // A NUL inside would end the field early and shift every later one.
    out.extend(s.iter().map(|&b| if b == 0 { b' ' } else { b }));
    out.push(0);
}

/// Severity, SQLSTATE, message and optional detail/hint of an error or notice.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    pub severity: &'a str,
    pub code: &'a str,
    pub message: &'a str,
    pub detail: Option<&'a str>,
    pub hint: Option<&'a str>,
}

impl<'a> Report<'a> {
    pub fn error(code: &'a str, message: &'a str) -> Self {
        Report {
            severity: "ERROR",
            code,
            message,
            detail: None,
            hint: None,
        }
    }

    pub fn fatal(code: &'a str, message: &'a str) -> Self {
        Report {
            severity: "FATAL",
            ..Report::error(code, message)
        }
    }

    pub fn notice(message: &'a str) -> Self {
        Report {
            severity: "NOTICE",
            code: "00000",
            ..Report::error("00000", message)
        }
    }
}

fn report(out: &mut Vec<u8>, tag: u8, r: &Report) {
    message(out, tag, |o| {
        for (code, value) in [
            (field::SEVERITY, Some(r.severity)),
            (field::SEVERITY_NONLOCALIZED, Some(r.severity)),
            (field::CODE, Some(r.code)),
            (field::MESSAGE, Some(r.message)),
            (field::DETAIL, r.detail),
            (field::HINT, r.hint),
        ] {
            if let Some(v) = value {
                o.push(code);
                cstr(o, v.as_bytes());
            }
        }
        o.push(0);
    });
}

pub fn error_response(out: &mut Vec<u8>, r: &Report) {
    report(out, be::ERROR_RESPONSE, r);
}

pub fn notice_response(out: &mut Vec<u8>, r: &Report) {
    report(out, be::NOTICE_RESPONSE, r);
}

pub fn ready_for_query(out: &mut Vec<u8>, status: u8) {
    message(out, be::READY_FOR_QUERY, |o| o.push(status));
}

pub fn auth_ok(out: &mut Vec<u8>) {
    message(out, be::AUTHENTICATION, |o| {
        o.extend_from_slice(&0i32.to_be_bytes())
    });
}

pub fn auth_cleartext_password(out: &mut Vec<u8>) {
    message(out, be::AUTHENTICATION, |o| {
        o.extend_from_slice(&3i32.to_be_bytes())
    });
}

pub fn backend_key_data(out: &mut Vec<u8>, pid: u32, key: u32) {
    message(out, be::BACKEND_KEY_DATA, |o| {
        o.extend_from_slice(&pid.to_be_bytes());
        o.extend_from_slice(&key.to_be_bytes());
    });
}

pub fn parameter_status(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    message(out, be::PARAMETER_STATUS, |o| {
        cstr(o, name);
        cstr(o, value);
    });
}

/// `NegotiateProtocolVersion`: we speak 3.0 and none of these `_pq_.` options.
pub fn negotiate_protocol_version(out: &mut Vec<u8>, unrecognized: &[&str]) {
    message(out, be::NEGOTIATE_PROTOCOL_VERSION, |o| {
        o.extend_from_slice(&0u32.to_be_bytes());
        o.extend_from_slice(&(unrecognized.len() as u32).to_be_bytes());
        for name in unrecognized {
            cstr(o, name.as_bytes());
        }
    });
}

/// An untagged startup message for protocol 3.0.
pub fn startup_message(out: &mut Vec<u8>, params: &[(&str, &str)]) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for (name, value) in params {
        cstr(out, name.as_bytes());
        cstr(out, value.as_bytes());
    }
    out.push(0);
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn ssl_request(out: &mut Vec<u8>) {
    out.extend_from_slice(&8u32.to_be_bytes());
    out.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
}

pub fn cancel_request(out: &mut Vec<u8>, pid: u32, key: u32) {
    out.extend_from_slice(&16u32.to_be_bytes());
    out.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(&key.to_be_bytes());
}

/// `PasswordMessage` with a cleartext or MD5-hashed password.
pub fn password(out: &mut Vec<u8>, password: &[u8]) {
    message(out, fe::PASSWORD, |o| cstr(o, password));
}

pub fn sasl_initial_response(out: &mut Vec<u8>, mechanism: &str, data: &[u8]) {
    message(out, fe::PASSWORD, |o| {
        cstr(o, mechanism.as_bytes());
        o.extend_from_slice(&(data.len() as i32).to_be_bytes());
        o.extend_from_slice(data);
    });
}

pub fn sasl_response(out: &mut Vec<u8>, data: &[u8]) {
    message(out, fe::PASSWORD, |o| o.extend_from_slice(data));
}

pub fn query(out: &mut Vec<u8>, sql: &[u8]) {
    message(out, fe::QUERY, |o| cstr(o, sql));
}

pub fn parse(out: &mut Vec<u8>, name: &[u8], sql: &[u8], param_types: &[u8]) {
    message(out, fe::PARSE, |o| {
        cstr(o, name);
        cstr(o, sql);
        o.extend_from_slice(&((param_types.len() / 4) as i16).to_be_bytes());
        o.extend_from_slice(param_types);
    });
}

/// `Describe` of a statement or portal (`kind`: a [`frontend::kind`](super::frontend::kind)).
pub fn describe(out: &mut Vec<u8>, kind: u8, name: &[u8]) {
    message(out, fe::DESCRIBE, |b| {
        b.push(kind);
        b.extend_from_slice(name);
        b.push(0);
    });
}

pub fn terminate(out: &mut Vec<u8>) {
    message(out, fe::TERMINATE, |_| {});
}

/// The MD5 password response: `"md5" + md5(md5(password + user) + salt)`.
pub fn md5_password(user: &str, password: &str, salt: [u8; 4]) -> String {
    use md5::{Digest, Md5};
    let inner = hex(&Md5::digest(
        [password.as_bytes(), user.as_bytes()].concat(),
    ));
    let outer = hex(&Md5::digest([inner.as_bytes(), &salt].concat()));
    format!("md5{outer}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
