//! Any bytes through the detectors: the SIMD-prefiltered scan finds exactly
//! what trying every validator at every byte finds, never panics, and masking
//! keeps the length.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_masking::detect::{scan, scan_reference, Detector};
use sluice_masking::{Masker, Profile};

fuzz_target!(|data: &[u8]| {
    let (mut fast, mut slow) = (Vec::new(), Vec::new());
    scan(data, &Detector::ALL, &mut fast);
    scan_reference(data, &Detector::ALL, &mut slow);
    assert_eq!(fast, slow);
    let names: Vec<&str> = Detector::ALL.iter().map(|d| d.name()).collect();
    let mut masker = Masker::new(Profile::new(&names, &[]).expect("built-in detectors"));
    let mut v = data.to_vec();
    masker.mask_value(&mut v, None);
    assert_eq!(v.len(), data.len());
});
