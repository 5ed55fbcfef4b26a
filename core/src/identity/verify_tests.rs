//! Every refusal class of the verifier, on tokens built here.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::{json, Value};

use super::*;
use crate::identity::jwks::KeySet;
use crate::identity::token::DevKey;

const NOW: u64 = 1_800_000_000;

fn setup() -> (DevKey, KeySet, Verifier) {
    let key = DevKey::generate();
    let keys = KeySet::from_json(key.jwks().to_string().as_bytes(), 1).unwrap();
    let v = Verifier::new(VerifierConfig {
        issuer: "https://idp.test/".into(),
        audience: "sluice".into(),
        groups_claim: "groups".into(),
        leeway: Duration::from_secs(30),
        algorithms: VerifierConfig::default_algorithms(),
        hmac_secret: None,
        require_typ: None,
    });
    (key, keys, v)
}

fn claims() -> Value {
    json!({"iss": "https://idp.test/", "aud": "sluice", "sub": "alice", "groups": ["sre", "dba"],
           "iat": NOW, "nbf": NOW, "exp": NOW + 600})
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

/// A token with an arbitrary header and payload and a given signature part.
fn raw(header: Value, payload: Value, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        B64URL.encode(header.to_string()),
        B64URL.encode(payload.to_string())
    )
}

#[test]
fn a_valid_token_yields_subject_and_groups() {
    let (key, keys, v) = setup();
    let id = v.verify(&key.sign(&claims()), &keys, NOW).unwrap();
    assert_eq!(id.subject, "alice");
    assert_eq!(id.groups, ["sre", "dba"]);
    assert_eq!(id.expires_at, NOW + 600);
    let arr = with(claims(), "aud", json!(["other", "sluice"]));
    assert!(
        v.verify(&key.sign(&arr), &keys, NOW).is_ok(),
        "aud as array"
    );
}

#[test]
fn alg_none_in_any_casing_is_refused() {
    let (_, keys, v) = setup();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let t = raw(json!({"alg": alg, "typ": "JWT"}), claims(), "");
        let e = v.verify(&t, &keys, NOW).unwrap_err();
        assert!(matches!(e, AuthError::Algorithm(_)), "{alg}: {e:?}");
    }
}

#[test]
fn hmac_is_refused_without_a_configured_secret() {
    let (key, keys, v) = setup();
    // HS256 "signed" with the public key as secret (the classic key-confusion attack).
    let secret = key.jwk()["x"].as_str().unwrap().to_owned();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(key.kid.clone());
    let t = jsonwebtoken::encode(
        &h,
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        v.verify(&t, &keys, NOW),
        Err(AuthError::Algorithm("HS256".into()))
    );
}

#[test]
fn claims_are_checked() {
    let (key, keys, v) = setup();
    let check = |c: Value| v.verify(&key.sign(&c), &keys, NOW);
    assert_eq!(
        check(with(claims(), "iss", json!("https://evil/"))),
        Err(AuthError::Issuer)
    );
    assert_eq!(
        check(with(claims(), "iss", json!("https://idp.test"))),
        Err(AuthError::Issuer),
        "exact match"
    );
    assert_eq!(
        check(with(claims(), "aud", json!("other"))),
        Err(AuthError::Audience("sluice".into()))
    );
    assert_eq!(
        check(with(claims(), "exp", json!(NOW - 31))),
        Err(AuthError::Expired)
    );
    assert!(
        check(with(claims(), "exp", json!(NOW - 29))).is_ok(),
        "within leeway"
    );
    assert_eq!(
        check(with(claims(), "nbf", json!(NOW + 31))),
        Err(AuthError::NotYetValid)
    );
    assert_eq!(
        check(with(claims(), "iat", json!(NOW + 300))),
        Err(AuthError::IssuedInFuture)
    );
    assert_eq!(
        check(with(claims(), "exp", json!("9999999999"))),
        Err(AuthError::ClaimType("exp"))
    );
    assert_eq!(
        check(with(claims(), "nbf", json!("0"))),
        Err(AuthError::ClaimType("nbf"))
    );
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(check(no_exp), Err(AuthError::ClaimType("exp")));
    let mut no_sub = claims();
    no_sub.as_object_mut().unwrap().remove("sub");
    assert_eq!(check(no_sub), Err(AuthError::NoSubject));
}

#[test]
fn keys_come_only_from_the_jwks() {
    let (key, keys, v) = setup();
    let other = DevKey::generate();
    assert_eq!(
        v.verify(&other.sign(&claims()), &keys, NOW),
        Err(AuthError::UnknownKid(other.kid.clone()))
    );
    // A jku header is refused even when the token is otherwise fine.
    let good = key.sign(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    let header = json!({"alg": "EdDSA", "kid": key.kid, "jku": "https://evil/jwks.json"});
    let t = format!(
        "{}.{}.{}",
        B64URL.encode(header.to_string()),
        parts[1],
        parts[2]
    );
    assert_eq!(v.verify(&t, &keys, NOW), Err(AuthError::EmbeddedKey("jku")));
}

#[test]
fn a_tampered_payload_fails_the_signature() {
    let (key, keys, v) = setup();
    let good = key.sign(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    let forged = with(claims(), "groups", json!(["admin"]));
    let t = format!(
        "{}.{}.{}",
        parts[0],
        B64URL.encode(forged.to_string()),
        parts[2]
    );
    assert_eq!(v.verify(&t, &keys, NOW), Err(AuthError::Signature));
}

#[test]
fn malformed_tokens() {
    let (_, keys, v) = setup();
    for t in ["", "abc", "a.b", "a.b.c.d", "!!.!!.!!"] {
        assert!(v.verify(t, &keys, NOW).is_err(), "{t:?}");
    }
    assert_eq!(
        v.verify(&"a".repeat(20_000), &keys, NOW),
        Err(AuthError::Malformed)
    );
}

#[test]
fn typ_check_and_dotted_group_paths() {
    let (key, keys, mut v) = setup();
    v.config.groups_claim = "realm_access.roles".into();
    let c = with(claims(), "realm_access", json!({"roles": ["ops"]}));
    assert_eq!(v.verify(&key.sign(&c), &keys, NOW).unwrap().groups, ["ops"]);
    v.config.require_typ = Some("at+jwt".into());
    // DevKey signs with typ "JWT": an ID-token-shaped header is refused.
    assert_eq!(
        v.verify(&key.sign(&c), &keys, NOW),
        Err(AuthError::Type("JWT".into()))
    );
}

#[test]
fn critical_extensions_are_refused() {
    let (key, keys, v) = setup();
    let good = key.sign(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    for header in [
        json!({"alg": "EdDSA", "kid": key.kid, "crit": ["exp-ext"], "exp-ext": 1}),
        json!({"alg": "EdDSA", "kid": key.kid, "crit": ["b64"]}),
    ] {
        let t = format!(
            "{}.{}.{}",
            B64URL.encode(header.to_string()),
            parts[1],
            parts[2]
        );
        let got = v.verify(&t, &keys, NOW);
        assert!(matches!(got, Err(AuthError::Critical(_))), "{got:?}");
    }
}

#[test]
fn times_must_be_whole_seconds_in_a_sane_range() {
    let (key, keys, v) = setup();
    for (claim, value) in [
        ("exp", json!(1e300)),
        ("exp", json!(18446744073709551615u64)),
        ("exp", json!(NOW as f64 + 600.5)),
        ("nbf", json!(-1)),
        ("iat", json!("0")),
    ] {
        let t = key.sign(&with(claims(), claim, value.clone()));
        assert_eq!(
            v.verify(&t, &keys, NOW),
            Err(AuthError::ClaimType(claim)),
            "{claim} = {value}"
        );
    }
    // A whole number written as a float is a whole number.
    let t = key.sign(&with(claims(), "exp", json!(NOW as f64 + 600.0)));
    assert!(v.verify(&t, &keys, NOW).is_ok());
}
