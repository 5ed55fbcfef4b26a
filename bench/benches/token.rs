//! Token validation: a full EdDSA signature check against the per-shard cache hit
//! that every later connection with the same token pays.

use std::rc::Rc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sluice::identity::cache::TokenCache;
use sluice::identity::jwks::KeySet;
use sluice::identity::token::DevKey;
use sluice::identity::{unix_now, Verifier, VerifierConfig};

fn bench(c: &mut Criterion) {
    let key = DevKey::generate();
    let keys = KeySet::from_json(key.jwks().to_string().as_bytes(), 1).unwrap();
    let now = unix_now();
    let token = key.sign(&serde_json::json!({
        "iss": "https://idp/", "aud": "sluice", "sub": "agent-1", "groups": ["agents"],
        "iat": now, "exp": now + 3600,
    }));
    let verifier = Verifier::new(VerifierConfig {
        issuer: "https://idp/".into(),
        audience: "sluice".into(),
        groups_claim: "groups".into(),
        leeway: Duration::from_secs(30),
        algorithms: VerifierConfig::default_algorithms(),
        hmac_secret: None,
        require_typ: None,
    });
    let mut cache = TokenCache::new(1000);
    let id = Rc::new(verifier.verify(&token, &keys, now).unwrap());
    cache.insert(&token, id, now);

    let mut g = c.benchmark_group("token");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_eddsa", |b| {
        b.iter(|| black_box(verifier.verify(black_box(&token), &keys, now).is_ok()))
    });
    g.bench_function("cache_hit", |b| {
        b.iter(|| black_box(cache.get(black_box(&token), now, 1).is_some()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
