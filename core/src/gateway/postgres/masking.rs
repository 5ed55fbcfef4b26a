//! The masking hook of the Postgres relay: every path a value can leak through
//! on its way to the client is masked in place (same length, no re-framing).
//!
//! - `RowDescription` fixes a per-column plan: the column rule (a `table.column`
//!   rule by the column's table OID and number, so under any alias; a `column`
//!   rule by name), and whether the column carries text (text format, or a
//!   text-like type in binary).
//! - `DataRow` values are masked column by column: the rule first, then content
//!   detection (rules add to detection; an alias like `ssn AS x` is still caught).
//! - `ErrorResponse`/`NoticeResponse` message, detail and hint (a failed cast
//!   echoes the value), `CopyData` out, `NotificationResponse` payloads and
//!   `FunctionCallResponse` values pass through content detection.

use sluice_masking::{Masker, Profile, Style};

use std::rc::Rc;

use crate::shard::catalogs::Catalog;
use sluice_protocols::postgres::backend::{self, field, tag, Backend};

/// Text-like type OIDs whose binary form is the text itself.
const TEXT_OIDS: &[u32] = &[25, 1043, 1042, 19, 114, 142, 705, 18, 17, 3802];

/// Integer types (and uuid) whose binary value may be any bytes: a `hash`
/// rule gives them keyed pseudo-random bytes.
const ANY_BYTES_OIDS: &[u32] = &[20, 21, 23, 26, 2950];
/// `numeric`, whose binary form has a header to keep.
const NUMERIC_OID: u32 = 1700;

#[derive(Clone, Copy)]
struct Column {
    rule: Option<Style>,
    /// A text-like type: its binary form is the text itself.
    text_type: bool,
    format: Format,
    /// How a binary value of a type that is not text is masked by a rule.
    binary: Binary,
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Text,
    Binary,
    /// Reported as text by the Describe of a statement, which cannot know the
    /// formats a later Bind asks for; told apart value by value.
    Unknown,
}

/// What a value in a DataRow is, as far as the masker can tell.
enum Reading {
    Text,
    Binary,
    Either,
}

#[derive(Clone, Copy)]
enum Binary {
    /// A fixed-width type (`type_len > 0`): zero bytes are a value of it.
    Fixed {
        len: usize,
        any_bytes: bool,
    },
    Numeric,
    /// Anything else (arrays, ranges, composites): no safe way to mask it.
    Opaque(u32),
}

pub struct RowMasker {
    masker: Masker,
    /// `table.column` rules resolved at login; `None`: match them by name.
    catalog: Option<Rc<Catalog>>,
    columns: Vec<Column>,
    /// The last RowDescription may not describe the rows now arriving.
    stale: bool,
    /// The last message was a ParameterDescription: a RowDescription now
    /// answers the Describe of a statement.
    described_statement: bool,
    /// Reused: the value ranges of the message being masked.
    ranges: Vec<std::ops::Range<usize>>,
    /// Strict column rules: an integrity error's detail (`Failing row
    /// contains (...)`, `Key (ssn)=(...)`) is hidden whole, since it can hold
    /// a protected value no detector recognises.
    strict: bool,
    /// No masking profile, only the login password to keep from the client:
    /// every value is read for it, by content alone.
    secrets_only: bool,
}

impl RowMasker {
    pub fn new(profile: Profile, catalog: Option<Rc<Catalog>>) -> RowMasker {
        RowMasker {
            masker: Masker::new(profile),
            catalog,
            columns: Vec::new(),
            stale: false,
            described_statement: false,
            ranges: Vec::new(),
            strict: false,
            secrets_only: false,
        }
    }

    /// A masker for the login password only (see the field).
    pub fn secrets_only(profile: Profile) -> RowMasker {
        RowMasker {
            secrets_only: true,
            ..RowMasker::new(profile, None)
        }
    }

    pub fn is_secrets_only(&self) -> bool {
        self.secrets_only
    }

    /// Under strict column rules (see the field).
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on;
        self
    }

    pub fn profile(&self) -> &Profile {
        self.masker.profile()
    }

    /// Masks one complete message in place (`body` is the message body).
    pub fn message(&mut self, tag: u8, body: &mut [u8]) -> Result<(), String> {
        // Only the values matter: no row shapes, no column rules.
        if self.secrets_only && matches!(tag, tag::ROW_DESCRIPTION | tag::PARAMETER_DESCRIPTION) {
            return Ok(());
        }
        // A notice, parameter status or notification may come between the
        // ParameterDescription and the RowDescription: they keep the flag.
        let after_parameters = self.described_statement;
        if !matches!(
            tag,
            tag::NOTICE_RESPONSE | tag::PARAMETER_STATUS | tag::NOTIFICATION_RESPONSE
        ) {
            self.described_statement = tag == tag::PARAMETER_DESCRIPTION;
        }
        match tag {
            tag::ROW_DESCRIPTION => {
                let Ok(Backend::RowDescription(desc)) = backend::parse(tag, body) else {
                    return Err("malformed RowDescription".into());
                };
                let profile = self.masker.profile();
                let tables = self.catalog.as_deref();
                let statement = after_parameters;
                self.stale = false;
                self.columns.clear();
                self.columns.extend(desc.columns().map(|c| {
                    // A table rule for this very column (under any alias)
                    // wins; otherwise rules match by name, table rules
                    // included (the table may be a view or copy of theirs).
                    let by_table = tables.and_then(|t| {
                        t.columns
                            .iter()
                            .find(|(oid, attnum, _)| {
                                c.table_oid != 0 && *oid == c.table_oid && *attnum == c.attnum
                            })
                            .map(|(_, _, style)| *style)
                    });
                    let by_name = || {
                        let name = std::str::from_utf8(c.name).ok()?;
                        profile.column_style(name)
                    };
                    Column {
                        rule: by_table.or_else(by_name),
                        text_type: TEXT_OIDS.contains(&c.type_oid),
                        format: match (c.format, statement) {
                            (0, true) => Format::Unknown,
                            (0, false) => Format::Text,
                            _ => Format::Binary,
                        },
                        binary: if c.type_oid == NUMERIC_OID {
                            Binary::Numeric
                        } else if c.type_len > 0 {
                            Binary::Fixed {
                                len: c.type_len as usize,
                                any_bytes: ANY_BYTES_OIDS.contains(&c.type_oid),
                            }
                        } else {
                            Binary::Opaque(c.type_oid)
                        },
                    }
                }));
            }
            tag::DATA_ROW => {
                // Column positions are collected first (the row borrows `body`),
                // then masked; `None` columns (NULL) keep an empty range.
                self.ranges.clear();
                match backend::parse(tag, body) {
                    Ok(Backend::DataRow(row)) => {
                        self.ranges.extend(row.ranges().map(|r| r.unwrap_or(0..0)))
                    }
                    _ => return Err("malformed DataRow".into()),
                }
                for (i, r) in self.ranges.iter().enumerate() {
                    if r.is_empty() {
                        continue;
                    }
                    // Without a RowDescription every column is treated as text.
                    let col = self.columns.get(i).copied().unwrap_or(Column {
                        rule: None,
                        text_type: true,
                        format: Format::Text,
                        binary: Binary::Opaque(0),
                    });
                    let v = &mut body[r.clone()];
                    let stale = self.stale;
                    let format = if stale { Format::Unknown } else { col.format };
                    // What the value is: text, binary, or possibly either.
                    let text_type = col.text_type && !stale;
                    let kind = match format {
                        Format::Text => Reading::Text,
                        _ if text_type => Reading::Text,
                        Format::Binary => Reading::Binary,
                        Format::Unknown if !looks_like_text(v) => Reading::Binary,
                        // Reads as text, yet may be the binary form of a
                        // fixed-width type (whose length it then has).
                        Format::Unknown => {
                            let fixed_width = match col.binary {
                                Binary::Fixed { len, .. } => v.len() == len,
                                _ => false,
                            };
                            if fixed_width || (stale && v.len() <= 16) {
                                Reading::Either
                            } else {
                                Reading::Text
                            }
                        }
                    };
                    match (kind, col.rule) {
                        (Reading::Text, rule) => {
                            self.masker.mask_value(v, rule);
                        }
                        (Reading::Binary, Some(style)) if !stale => {
                            mask_binary(v, style, col.binary, i)?;
                            self.masker.counts.by_column_rule += 1;
                        }
                        // The type is unknown (stale) or the value could be
                        // either form: only hiding every byte is safe for both.
                        (Reading::Binary | Reading::Either, Some(_)) => {
                            v.fill(b'*');
                            self.masker.counts.by_column_rule += 1;
                        }
                        (Reading::Binary, None) | (Reading::Either, None) => {
                            // A value whose format is unknown still goes
                            // through the detectors; a binary one has no text.
                            if format == Format::Unknown {
                                self.masker.mask_value(v, None);
                            }
                        }
                    }
                }
            }
            tag::ERROR_RESPONSE | tag::NOTICE_RESPONSE => {
                self.ranges.clear();
                let mut hidden = None;
                match backend::parse(tag, body) {
                    Ok(Backend::ErrorResponse(f)) | Ok(Backend::NoticeResponse(f)) => {
                        let integrity = f.get(field::CODE).is_some_and(|c| c.starts_with(b"23"));
                        for (code, r) in f.value_ranges() {
                            match code {
                                field::DETAIL if integrity && self.strict => hidden = Some(r),
                                // Message, detail, hint, context, and the
                                // internal query (PL/pgSQL's own SQL text).
                                field::MESSAGE
                                | field::DETAIL
                                | field::HINT
                                | field::WHERE
                                | field::INTERNAL_QUERY => self.ranges.push(r),
                                _ => {}
                            }
                        }
                    }
                    _ => return Err("malformed error or notice".into()),
                }
                for r in &self.ranges {
                    self.masker.mask_value(&mut body[r.clone()], None);
                }
                if let Some(r) = hidden {
                    body[r].fill(b'*');
                }
            }
            tag::COPY_DATA => {
                self.masker.mask_value(body, None);
            }
            // The result of a fast-path FunctionCall, masked as text whatever
            // format the call asked for.
            tag::FUNCTION_CALL_RESPONSE => match backend::parse(tag, body) {
                Ok(Backend::FunctionCallResponse(r)) => {
                    if let Some(value) = r.value_range() {
                        self.masker.mask_value(&mut body[value], None);
                    }
                }
                _ => return Err("malformed FunctionCallResponse".into()),
            },
            // A row shape holds for one result: after it, the next Execute may run
            // a statement described earlier (column rules by position still
            // apply) or a different one, so every column is masked as text until
            // a new RowDescription arrives (fail safe).
            tag::COMMAND_COMPLETE
            | tag::READY_FOR_QUERY
            | tag::PORTAL_SUSPENDED
            | tag::EMPTY_QUERY_RESPONSE => self.stale = true,
            tag::NOTIFICATION_RESPONSE => {
                if let Ok(Backend::NotificationResponse { payload, .. }) = backend::parse(tag, body)
                {
                    let start = payload.as_ptr() as usize - body.as_ptr() as usize;
                    let end = start + payload.len();
                    self.masker.mask_value(&mut body[start..end], None);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Values masked since the last call, per detector.
    pub fn take_counts(&mut self) -> Vec<(&'static str, u64)> {
        let mut pairs = self.masker.counts.pairs();
        if self.masker.counts.by_column_rule > 0 {
            pairs.push(("column_rule", self.masker.counts.by_column_rule));
        }
        self.masker.counts = Default::default();
        pairs
    }
}

/// A column rule on a binary value of a type that is not text (a driver asked
/// for binary results): there is no text to keep the shape of, so the value
/// becomes zero of its type (`hash` on an integer or uuid: keyed pseudo-random
/// bytes, so joins still line up). A type Sluice cannot rewrite safely ends the
/// session rather than pass the value (fail closed).
fn mask_binary(v: &mut [u8], style: Style, kind: Binary, column: usize) -> Result<(), String> {
    match (kind, style) {
        (
            Binary::Fixed {
                any_bytes: true, ..
            },
            Style::Hash(key),
        ) => key.scramble(v),
        (Binary::Fixed { .. }, _) => v.fill(0),
        // ndigits, weight, sign, dscale, then the digits: zero with the same
        // digit count and scale.
        (Binary::Numeric, _) if v.len() >= 8 => {
            v[2..6].fill(0);
            v[8..].fill(0);
        }
        (Binary::Numeric, _) => return Err("malformed binary numeric".into()),
        (Binary::Opaque(oid), _) => {
            return Err(format!(
                "column {} has a masking rule but arrives in binary as type {oid}, which Sluice \
                 cannot mask; ask for text results",
                column + 1
            ))
        }
    }
    Ok(())
}

/// Whether a value sent in an unknown format is text: valid UTF-8 without
/// control characters. Binary numbers, dates and the like carry zero or other
/// control bytes; a binary value that happens to read as text is masked as
/// text, which hides every letter and digit in it.
fn looks_like_text(v: &[u8]) -> bool {
    !v.iter()
        .any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
        && std::str::from_utf8(v).is_ok()
}
