//! JSON escapes decoded: a key or string read as JSON clients read it.

/// A key or string as the document means it: `"s\u0073n"` is the key `ssn`,
/// so an escape cannot step around a rule or hide a value from the detectors
/// (a lone surrogate reads as U+FFFD, as JSON clients read it). Borrowed when
/// there is no escape.
pub(super) fn key_text(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if memchr::memchr(b'\\', raw).is_none() {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    let hex = |at: usize| {
        raw.get(at..at + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    while i < raw.len() {
        if raw[i] != b'\\' || i + 1 >= raw.len() {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let (c, used) = match raw[i + 1] {
            b'u' => match hex(i + 2) {
                // A surrogate pair spells one character.
                Some(hi @ 0xD800..=0xDBFF) if raw.get(i + 6..i + 8) == Some(b"\\u") => {
                    match hex(i + 8) {
                        Some(lo @ 0xDC00..=0xDFFF) => (
                            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)),
                            12,
                        ),
                        _ => (None, 6),
                    }
                }
                Some(v) => (char::from_u32(v), 6),
                None => (None, 2),
            },
            b'n' => (Some('\n'), 2),
            b't' => (Some('\t'), 2),
            b'r' => (Some('\r'), 2),
            b'b' => (Some('\u{8}'), 2),
            b'f' => (Some('\u{c}'), 2),
            other => (Some(other as char), 2),
        };
        let mut utf8 = [0u8; 4];
        out.extend_from_slice(c.unwrap_or('\u{fffd}').encode_utf8(&mut utf8).as_bytes());
        i += used;
    }
    std::borrow::Cow::Owned(out)
}
