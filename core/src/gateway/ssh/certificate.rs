//! OpenSSH user certificates as logins (`[identity] ssh_user_ca`): a
//! certificate signed by a configured CA stands for an access token. Its
//! principals are the caller's subject (exactly one plain principal) and
//! groups (`group:NAME`), its `valid_before` the login's expiry; the
//! `force-command` and `source-address` options and the `permit-pty` and
//! `permit-port-forwarding` extensions are honoured as sshd honours them.
//! An unknown critical option refuses the certificate (PROTOCOL.certkeys:
//! a server must not accept what it does not understand).

use std::net::IpAddr;

use russh::keys::ssh_key::certificate::CertType;
use russh::keys::{Algorithm, Certificate, HashAlg, PublicKey};

use crate::identity::Identity;

/// What a certificate limits beyond the target's guardrails.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Limits {
    /// Every exec and shell runs this command instead (`force-command`).
    pub force_command: Option<String>,
    /// `permit-pty`: a terminal may be asked for.
    pub pty: bool,
    /// `permit-port-forwarding`.
    pub port_forwarding: bool,
}

/// The principal prefix that names a group rather than the subject.
const GROUP: &str = "group:";

/// Checks `cert` (already proven held by the client, its own signature and
/// validity checked by russh) against the configured CAs and the options it
/// carries; `Ok` is the caller's identity and the certificate's limits.
pub(super) fn admit(
    cert: &Certificate,
    cas: &[String],
    peer: IpAddr,
    now: u64,
) -> Result<(Identity, Limits), String> {
    let cas: Vec<PublicKey> = cas
        .iter()
        .filter_map(|line| PublicKey::from_openssh(line).ok())
        .collect();
    if !cas.iter().any(|ca| ca.key_data() == cert.signature_key()) {
        return Err("the certificate is not signed by a CA in identity.ssh_user_ca".into());
    }
    let fingerprints: Vec<_> = cas.iter().map(|k| k.fingerprint(HashAlg::Sha256)).collect();
    // The CA, the signature and the validity window, at `now`.
    cert.validate_at(now, &fingerprints)
        .map_err(|e| format!("the certificate is not valid here: {e}"))?;
    // OpenSSH refuses SHA-1 RSA signatures (ssh-rsa) on certificates too.
    if cert.signature().algorithm() == (Algorithm::Rsa { hash: None }) {
        return Err("the CA signed the certificate with SHA-1 (ssh-rsa); sign with rsa-sha2-512 or an Ed25519 CA".into());
    }
    if cert.cert_type() != CertType::User {
        return Err("a host certificate is not a login".into());
    }
    if cert.valid_before() == u64::MAX {
        return Err(
            "certificates valid forever are refused: sign them for hours (ssh-keygen -V +8h)"
                .into(),
        );
    }
    let (groups, subjects): (Vec<&String>, Vec<&String>) = cert
        .valid_principals()
        .iter()
        .partition(|p| p.starts_with(GROUP));
    let subject =
        match subjects.as_slice() {
            [one] if !one.is_empty() => (*one).clone(),
            [] | [_] => return Err("the certificate names no principal to log in as".into()),
            _ => return Err(
                "the certificate names more than one subject (groups are `group:NAME` principals)"
                    .into(),
            ),
        };
    let mut limits = Limits::default();
    for (name, value) in cert.critical_options().iter() {
        match name.as_str() {
            "force-command" => limits.force_command = Some(value.clone()),
            "source-address" => {
                if !source_allowed(value, peer)? {
                    return Err(format!(
                        "the certificate may only be used from {value}, not {peer}"
                    ));
                }
            }
            other => {
                return Err(format!(
                "the certificate has the critical option `{other}`, which Sluice does not enforce"
            ))
            }
        }
    }
    let extensions = cert.extensions();
    limits.pty = extensions.contains_key("permit-pty");
    limits.port_forwarding = extensions.contains_key("permit-port-forwarding");
    let identity = Identity {
        subject,
        groups: groups
            .iter()
            .map(|g| g[GROUP.len()..].to_owned())
            .filter(|g| !g.is_empty())
            .collect(),
        expires_at: cert.valid_before(),
    };
    Ok((identity, limits))
}

/// `source-address`: a comma-separated list of addresses and CIDR networks.
/// A malformed list refuses the certificate (fail closed).
fn source_allowed(list: &str, peer: IpAddr) -> Result<bool, String> {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    let mut allowed = false;
    for entry in list.split(',') {
        let entry = entry.trim();
        let (addr, bits) = match entry.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (entry, None),
        };
        let bad =
            || format!("the certificate's source-address `{entry}` is not an address or network");
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits: u32 = match bits {
            Some(b) => b.parse().ok().filter(|&b| b <= max).ok_or_else(bad)?,
            None => max,
        };
        allowed |= in_network(peer, net, bits);
    }
    Ok(allowed)
}

fn in_network(peer: IpAddr, net: IpAddr, bits: u32) -> bool {
    let mask = |width: u32| -> u128 {
        match bits {
            0 => 0,
            b => (!0u128 << (width - b)) & (!0u128 >> (128 - width)),
        }
    };
    match (peer, net) {
        (IpAddr::V4(p), IpAddr::V4(n)) => {
            let m = mask(32);
            (u128::from(u32::from(p)) & m) == (u128::from(u32::from(n)) & m)
        }
        (IpAddr::V6(p), IpAddr::V6(n)) => {
            let m = mask(128);
            (u128::from(p) & m) == (u128::from(n) & m)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_match_as_sshd_matches_them() {
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(source_allowed("10.1.2.3", peer).unwrap());
        assert!(source_allowed("192.168.0.0/16, 10.0.0.0/8", peer).unwrap());
        assert!(!source_allowed("10.1.3.0/24", peer).unwrap());
        assert!(source_allowed("0.0.0.0/0", peer).unwrap());
        // An IPv4 peer on an IPv6 socket is still the IPv4 address.
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert!(source_allowed("10.1.2.0/24", mapped).unwrap());
        assert!(source_allowed("::1/128", "::1".parse().unwrap()).unwrap());
        assert!(!source_allowed("::1", peer).unwrap());
        // Malformed lists refuse rather than match nothing or everything.
        assert!(source_allowed("10.1.2.3/33", peer).is_err());
        assert!(source_allowed("everyone", peer).is_err());
        assert!(source_allowed("10.1.2.3,", peer).is_err());
    }
}
