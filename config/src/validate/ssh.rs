//! SSH targets: a pinned upstream host key (no trust on first use), a login
//! user and a key or password to log in with; what does not apply to SSH is
//! refused, and SSH-only settings on other targets too.

use toml::Spanned;

use crate::schema::*;

use super::Checker;

pub(super) fn target(c: &mut Checker, t: &RawTarget, name: &str) {
    match (&t.upstream_host_key, &t.upstream_known_hosts) {
        (None, None) => c.error(
            t.name.span(),
            format!(
                "ssh target `{name}` needs `upstream_host_key`: the upstream's public host key (e.g. the `ssh-ed25519 AAAA...` line of `ssh-keyscan HOST`), or `upstream_known_hosts`: a known_hosts file with it; Sluice never trusts a host key on first use"
            ),
        ),
        (Some(_), Some(f)) => c.error(
            f.span(),
            "set `upstream_host_key` or `upstream_known_hosts`, not both",
        ),
        (Some(k), None) if !is_public_key_line(k.get_ref()) => c.error(
            k.span(),
            "`upstream_host_key` must be an OpenSSH public key line: `ssh-ed25519 AAAA...`, `ecdsa-sha2-nistp256 AAAA...` or `ssh-rsa AAAA...`",
        ),
        (None, Some(f)) if f.get_ref().trim().is_empty() => c.error(
            f.span(),
            "`upstream_known_hosts` must name a known_hosts file",
        ),
        _ => {}
    }
    let credentials = t.credentials.as_ref().map(Spanned::get_ref);
    let user = credentials.and_then(|cr| cr.user.as_ref());
    if user.is_none() {
        c.error(
            t.credentials.as_ref().map_or(t.name.span(), |cr| cr.span()),
            format!("ssh target `{name}` needs credentials.user: the account Sluice logs in to the upstream as"),
        );
    }
    let key = credentials.and_then(|cr| cr.key_file.as_ref());
    let password = credentials.and_then(|cr| cr.password_env.as_ref());
    if key.is_none() && password.is_none() {
        c.error(
            t.credentials.as_ref().map_or(t.name.span(), |cr| cr.span()),
            format!("ssh target `{name}` needs credentials.key_file (a private key file) or credentials.password_env"),
        );
    }
    for (present, key) in [
        (t.database.as_ref().map(|s| s.span()), "database"),
        (t.require_tls.as_ref().map(|s| s.span()), "require_tls"),
        (t.upstream_tls.as_ref().map(|s| s.span()), "upstream_tls"),
        (t.upstream_ca.as_ref().map(|s| s.span()), "upstream_ca"),
        (
            credentials
                .and_then(|cr| cr.header.as_ref())
                .map(|s| s.span()),
            "credentials.header",
        ),
        (
            credentials
                .and_then(|cr| cr.value_env.as_ref())
                .map(|s| s.span()),
            "credentials.value_env",
        ),
    ] {
        if let Some(span) = present {
            c.error(
                span,
                format!("`{key}` has no effect on ssh target `{name}` (SSH brings its own encryption and logins)"),
            );
        }
    }
}

pub(super) fn not_ssh(c: &mut Checker, t: &RawTarget, name: &str, protocol: Protocol) {
    let key_file = t
        .credentials
        .as_ref()
        .and_then(|cr| cr.get_ref().key_file.as_ref())
        .map(|s| s.span());
    for (present, key) in [
        (
            t.upstream_host_key.as_ref().map(|s| s.span()),
            "upstream_host_key",
        ),
        (
            t.upstream_known_hosts.as_ref().map(|s| s.span()),
            "upstream_known_hosts",
        ),
        (t.host_key.as_ref().map(|s| s.span()), "host_key"),
        (key_file, "credentials.key_file"),
    ] {
        if let Some(span) = present {
            c.error(
                span,
                format!(
                    "`{key}` only applies to ssh targets; `{name}` is a {} target",
                    protocol.as_str()
                ),
            );
        }
    }
}

/// `identity.ssh_user_ca`: public key lines of certificate authorities.
pub(super) fn user_cas(c: &mut Checker, lines: &[Spanned<String>]) -> Vec<String> {
    for line in lines {
        if !is_public_key_line(line.get_ref()) {
            c.error(
                line.span(),
                "`ssh_user_ca` entries are the CAs' OpenSSH public key lines: `ssh-ed25519 AAAA...` (the .pub of the key that signs user certificates)",
            );
        }
    }
    lines
        .iter()
        .map(|l| l.get_ref().trim().to_owned())
        .collect()
}

/// `TYPE BASE64 [comment]` with a known key type.
fn is_public_key_line(line: &str) -> bool {
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(body)) = (parts.next(), parts.next()) else {
        return false;
    };
    let known = kind == "ssh-ed25519" || kind == "ssh-rsa" || kind.starts_with("ecdsa-sha2-nistp");
    known
        && body.len() >= 16
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}
