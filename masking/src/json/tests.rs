//! The JSON masker's tests: field rules, escapes, keys, invalid documents.

use super::*;
use crate::Profile;

fn run(doc: &str, rules: &[(&str, &str)]) -> Result<String, NotJson> {
    let mut m = Masker::new(Profile::new(&["email", "credit_card", "ssn"], &[]).unwrap());
    let rules = FieldRules::new(rules).unwrap();
    let mut v = doc.as_bytes().to_vec();
    mask_json(&mut v, &mut m, &rules)?;
    Ok(String::from_utf8(v).unwrap())
}

#[test]
fn keys_holding_values_are_masked_like_values() {
    let out = run(
        r#"{"users":{"jane@example.com":{"plan":"pro"},"4111\u00201111 1111 1111":1}}"#,
        &[("plan", "full")],
    )
    .unwrap();
    assert!(!out.contains("jane@") && !out.contains("4111"), "{out}");
    assert!(out.contains(r#""plan":"***""#), "{out}");
    assert_eq!(
        run(r#"{"ssn":1}"#, &[("ssn", "full")]).unwrap(),
        r#"{"ssn":"*"}"#
    );
    // Rules match keys as they were, also where a detector masks the
    // key itself (a bare-name rule naming it, here).
    let out = run(
        r#"{"jane@example.com":{"plan":"pro"},"n":7}"#,
        &[("jane@example.com", "full"), ("n", "full")],
    )
    .unwrap();
    assert!(out.contains(r#":{"plan":"***"}"#), "{out}");
    assert!(!out.contains("jane"), "{out}");
    assert!(out.contains(r#""n":"*""#), "{out}");
    // A key after a value that grew (a number masked into a string).
    let out = run(r#"{"n":7,"jane@example.com":1}"#, &[("n", "full")]).unwrap();
    assert_eq!(out, r#"{"n":"*","j***@*******.com":1}"#);
}

#[test]
fn escaped_runs_in_text_that_is_not_json_are_read_decoded() {
    let mut m = Masker::new(Profile::new(&["email", "credit_card"], &[]).unwrap());
    for (text, clear) in [
        (r#"{"a":"jane\u0040example.com","n":NaN}"#, "jane"),
        // Quoting tricks do not shift what is read: runs both sides of
        // every unescaped quote are checked.
        (r#"{"a":"x\"", b: 4111\u002D1111-1111-1111 // "#, "4111"),
        (r#"'jane\u0040example.com'"#, "jane"),
    ] {
        let mut v = text.as_bytes().to_vec();
        assert!(mask_escaped_runs(&mut v, &mut m) > 0, "{text}");
        let out = String::from_utf8(v).unwrap();
        assert!(!out.contains(clear), "{out}");
        assert_eq!(out.len(), text.len());
    }
    let mut plain = br#"{"a":"caf\u00e9","b":"\"quoted\""}"#.to_vec();
    let before = plain.clone();
    assert_eq!(mask_escaped_runs(&mut plain, &mut m), 0);
    assert_eq!(plain, before);
}

#[test]
fn field_paths_and_detectors() {
    let doc = r#"{"users":[{"name":"Jane","ssn":"123-45-6789","contact":{"email":"jane@example.com"}},
                  {"name":"Bob","ssn":"987-65-4321","card":4111111111111111,"note":"pay 5500 0000 0000 0004"}],
                  "total": 2}"#;
    let out = run(
        doc,
        &[
            ("$.users[*].ssn", "full"),
            ("card", "last4"),
            ("$.total", "full"),
        ],
    )
    .unwrap();
    let v: serde_json_check::Value = serde_json_check::from_str(&out);
    assert_eq!(v.get("users.0.ssn"), "\"***********\"");
    assert_eq!(v.get("users.1.ssn"), "\"***********\"");
    assert_eq!(v.get("users.0.contact.email"), "\"j***@*******.com\"");
    assert_eq!(
        v.get("users.1.card"),
        "\"************1111\"",
        "a number becomes a masked string"
    );
    assert_eq!(v.get("users.1.note"), "\"pay **** **** **** 0004\"");
    assert_eq!(v.get("users.0.name"), "\"Jane\"");
    assert_eq!(v.get("total"), "\"*\"");
}

#[test]
fn a_rule_on_an_object_or_array_covers_everything_inside() {
    let doc = r#"{"customer":{"name":"Jane Roe","address":{"street":"1 Main St","zip":12345},"tags":["vip","eu"]},"id":7}"#;
    let out = run(doc, &[("$.customer.address", "full"), ("tags", "full")]).unwrap();
    assert_eq!(
        out,
        r#"{"customer":{"name":"Jane Roe","address":{"street":"*********","zip":"*****"},"tags":["***","**"]},"id":7}"#
    );
    // The most specific rule wins inside a covered object.
    let out = run(
        r#"{"card":{"number":"4111111111111111","brand":"visa"}}"#,
        &[("card", "full"), ("$.card.number", "last4")],
    )
    .unwrap();
    assert_eq!(
        out,
        r#"{"card":{"number":"************1111","brand":"****"}}"#
    );
}

#[test]
fn escaped_keys_cannot_step_around_a_rule() {
    let out = run(
        r#"{"s\u0073n":"x","a":{"n\u0061me":"Jane"}}"#,
        &[("ssn", "full"), ("$.a.name", "full")],
    )
    .unwrap();
    assert_eq!(out, r#"{"s\u0073n":"*","a":{"n\u0061me":"****"}}"#);
    // A surrogate pair spells one character.
    assert_eq!(&*key_text(br"\ud83d\ude00"), "\u{1F600}".as_bytes());
    assert_eq!(&*key_text(br"a\nb\\c\/"), b"a\nb\\c/");
}

#[test]
fn values_that_grow_and_values_masked_in_place_interleave() {
    let doc = r#"[4111111111111111,"jane@example.com",{"n":5500000000000004,"m":"bob@example.org"},7,true]"#;
    let out = run(doc, &[("$[4]", "full")]).unwrap();
    assert_eq!(
        out,
        r#"["************1111","j***@*******.com",{"n":"************0004","m":"b**@*******.org"},7,"****"]"#
    );
    // Many small values: each handled as it is reached.
    let many = format!("[{}\"x@example.com\"]", "1,".repeat(100_000));
    let out = run(&many, &[]).unwrap();
    assert!(
        out.ends_with(r#"1,"x@*******.com"]"#),
        "{}",
        &out[out.len() - 40..]
    );
}

#[test]
fn numbers_are_checked_by_the_detectors_too() {
    let out = run(r#"{"card":4111111111111111,"n":42}"#, &[]).unwrap();
    assert_eq!(out, r#"{"card":"************1111","n":42}"#);
}

#[test]
fn escapes_are_never_broken() {
    let out = run(r#"{"a":"mail \"jane@example.com\" now","b":"x\\"}"#, &[]).unwrap();
    assert_eq!(out, r#"{"a":"*****************************","b":"x\\"}"#);
    let out = run(r#"{"ssn":"12\u0033-45-6789"}"#, &[("ssn", "last4")]).unwrap();
    assert_eq!(out, r#"{"ssn":"****************"}"#);
}

#[test]
fn escaped_values_are_read_as_json_clients_read_them() {
    let doc = r#"{"note":"jane.doe\u0040example.com","phone":"\u002B1 415 555 2671","tax":"123\u002D45-6789","pan":"4111\u002D1111-1111-1111","ok":"caf\u00e9 \ud83d\ude00"}"#;
    let mut m = Masker::new(Profile::new(&["email", "credit_card", "ssn", "phone"], &[]).unwrap());
    let mut bytes = doc.as_bytes().to_vec();
    mask_json(&mut bytes, &mut m, &FieldRules::default()).unwrap();
    let out = String::from_utf8(bytes).unwrap();
    let v = serde_json_check::from_str(&out);
    for field in ["note", "phone", "tax", "pan"] {
        let got = v.get(field);
        assert!(
            got.trim_matches('"').chars().all(|c| c == '*'),
            "{field}: {got}"
        );
    }
    // Nothing to mask: the escapes pass exactly as they came.
    assert!(out.contains(r#""ok":"caf\u00e9 \ud83d\ude00""#), "{out}");
    // Split across the escape of a surrogate pair, an email still shows.
    let out = run(
        r#"{"a":"x\ud83d\ude00@example.com y\u0040example.org"}"#,
        &[],
    )
    .unwrap();
    assert!(!out.contains("example"), "{out}");
}

#[test]
fn invalid_documents_are_refused() {
    for bad in [
        "",
        "{",
        "{\"a\":}",
        "{\"a\" 1}",
        "[1,]",
        "[01]",
        "{\"a\":1,}",
        "\"\\x\"",
        "tru",
        "{\"a\":\"\n\"}",
        "[1] x",
        "{'a':1}",
        "[1.]",
        "[-]",
        "[1e]",
    ] {
        assert!(run(bad, &[]).is_err(), "{bad:?}");
    }
    let deep = "[".repeat(600) + &"]".repeat(600);
    assert!(run(&deep, &[]).is_err());
    for good in [
        "[]",
        "{}",
        "0",
        "-1.5e+3",
        "\"s\"",
        "[true,false,null]",
        " { \"a\" : [ 1 , { } ] } ",
    ] {
        assert_eq!(run(good, &[]).unwrap(), good, "{good:?}");
    }
}

#[test]
fn paths_parse_or_fail_clearly() {
    assert!(FieldRules::new(&[
        ("$.a[*].b", "redact"),
        ("$['x y'][0]", "full"),
        ("$.*", "full")
    ])
    .is_ok());
    for bad in ["$", "$.", "$[x]", "$.a[", "$..a"] {
        let e = FieldRules::new(&[(bad, "full")]).unwrap_err();
        assert_eq!(e, crate::Error::InvalidFieldPath(bad.into()));
        assert_eq!(
            e.to_string(),
            format!("invalid field path `{bad}`: expected e.g. $.users[*].ssn")
        );
    }
    assert_eq!(
        FieldRules::new(&[("ssn", "hash")]).unwrap_err(),
        crate::Error::HashWithoutKey
    );
}

/// A tiny JSON path reader for assertions (the crate has no JSON parser
/// dependency): returns the raw text of the value at `a.b.0.c`.
mod serde_json_check {
    pub struct Value(String);
    pub fn from_str(s: &str) -> Value {
        Value(s.to_owned())
    }
    impl Value {
        pub fn get(&self, path: &str) -> String {
            let doc = self.0.as_bytes();
            let mut scalars = Vec::new();
            super::scan(doc, |r, _, p| scalars.push((r, p.to_vec()))).expect("valid JSON");
            let want: Vec<&str> = path.split('.').collect();
            for (range, spath) in scalars {
                let p: Vec<String> = spath
                    .iter()
                    .map(|seg| match seg {
                        super::PathSeg::Key(r) => {
                            String::from_utf8_lossy(&doc[r.clone()]).into_owned()
                        }
                        super::PathSeg::Index(i) => i.to_string(),
                    })
                    .collect();
                if p == want {
                    return String::from_utf8_lossy(&doc[range]).into_owned();
                }
            }
            panic!("no value at {path} in {}", self.0)
        }
    }
}
