//! Any bytes as SQL, both dialects: a verdict per statement, never a panic; and
//! the verdict never depends on the classifier's reused scratch state.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_protocols::sql::{classify, Classifier, Dialect};

fuzz_target!(|data: &[u8]| {
    for d in [Dialect::Postgres, Dialect::Mysql] {
        let fresh = classify(data, d);
        let mut c = Classifier::new();
        let mut out = Vec::new();
        c.classify(
            b"WITH x AS (DELETE FROM t) SELECT 1; DROP TABLE t",
            d,
            &mut out,
        );
        c.classify(data, d, &mut out);
        assert_eq!(fresh, out);
    }
});
