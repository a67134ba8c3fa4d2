//! The general JSON line parser: any key order, any whitespace, escapes in keys, precise
//! errors. Lines the learned shape cannot take come here.

use super::scan::{LineError, Scan, describe, fail, literal, skip_value, skip_ws, string};
use super::{JsonDecoder, Key};
use crate::batch::{Batch, Column, ColumnValues, Interner};
use crate::decode::field::{FieldError, millis_to_micros, timestamp_from_text};
use crate::decode::number::{NumberError, parse_f64, parse_i64, scan_json_number};

/// The UTF-8 encoding of U+FEFF.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

impl JsonDecoder {
    /// Parses the object at `i`, pushing one row and recording its keys in `self.keys`;
    /// returns the index of the line break (or end of data) that ends it.
    pub(super) fn object(
        &mut self,
        b: &[u8],
        i: usize,
        batch: &mut Batch,
        interner: &mut Interner,
    ) -> Scan<usize> {
        // A UTF-8 byte order mark, as Windows tools write at the start of a file (and so
        // at the start of a line of files joined with `cat`), is not part of the object.
        if b[i..].starts_with(UTF8_BOM) {
            let j = skip_ws(b, i + UTF8_BOM.len());
            if b.get(j).is_some_and(|&c| c != b'\n') {
                return self.object(b, j, batch, interner);
            }
        }
        if b[i] != b'{' {
            return fail(
                i,
                format!("expected a JSON object, found {}", describe(b, i)),
            );
        }
        self.stamp += 1;
        self.keys.clear();
        let n = self.fields.len();
        let mut matched = 0;
        let mut j = skip_ws(b, i + 1);
        if b.get(j) == Some(&b'}') {
            j += 1;
        } else {
            loop {
                if b.get(j) != Some(&b'"') {
                    return fail(j, "expected a field name in double quotes");
                }
                let key_start = j + 1;
                let (end, key) = string(b, key_start, &mut self.scratch)?;
                let field = self.fields.iter().position(|f| *f.name == *key);
                let escaped = end - 1 - key_start != key.len();
                self.keys.push(Key {
                    name: key.into(),
                    column: field,
                    escaped,
                });
                j = skip_ws(b, end);
                if b.get(j) != Some(&b':') {
                    return fail(j, "expected ':' after the field name");
                }
                j = skip_ws(b, j + 1);
                match field {
                    Some(c) => {
                        if self.seen[c] == self.stamp {
                            let name = String::from_utf8_lossy(&self.fields[c].name).into_owned();
                            return fail(j, format!("duplicate field `{name}`"));
                        }
                        self.seen[c] = self.stamp;
                        matched += 1;
                        j = self.value(b, j, c, &mut batch.columns[c], interner)?;
                    }
                    None => j = skip_value(b, j, 1, &mut self.scratch)?,
                }
                j = skip_ws(b, j);
                match b.get(j) {
                    Some(b',') => j = skip_ws(b, j + 1),
                    Some(b'}') => {
                        j += 1;
                        break;
                    }
                    _ => return fail(j, format!("expected ',' or '}}', found {}", describe(b, j))),
                }
            }
        }
        j = skip_ws(b, j);
        if j < b.len() && b[j] != b'\n' {
            return fail(j, "unexpected text after the JSON object");
        }
        if matched != n {
            let missing = (0..n).find(|&c| self.seen[c] != self.stamp).unwrap_or(0);
            let name = String::from_utf8_lossy(&self.fields[missing].name).into_owned();
            return fail(j, format!("missing field `{name}`"));
        }
        Ok(j)
    }

    fn value(
        &mut self,
        b: &[u8],
        i: usize,
        c: usize,
        column: &mut Column,
        interner: &mut Interner,
    ) -> Scan<usize> {
        let name = String::from_utf8_lossy(&self.fields[c].name).into_owned();
        let mistyped = |what: &str| -> LineError {
            LineError {
                at: i,
                reason: format!("field `{name}`: expected {what}, found {}", describe(b, i)).into(),
            }
        };
        let field_error = |e: FieldError| -> LineError {
            LineError {
                at: i,
                reason: format!("field `{name}`: {e}").into(),
            }
        };
        if b.get(i) == Some(&b'n') {
            let end = literal(b, i, b"null")?;
            if c == self.event_time {
                return Err(mistyped("an event time"));
            }
            column.push_null();
            return Ok(end);
        }
        let end = match &mut column.values {
            ColumnValues::Text(v) => {
                if b.get(i) != Some(&b'"') {
                    return Err(mistyped("TEXT (a string)"));
                }
                let (end, text) = string(b, i + 1, &mut self.scratch)?;
                v.push(interner.intern_utf8(text));
                end
            }
            ColumnValues::BigInt(v) => {
                let (end, integer) =
                    scan_json_number(b, i).map_err(|_| mistyped("BIGINT (an integer)"))?;
                if !integer {
                    return Err(field_error(FieldError::Mistyped(
                        "expected BIGINT (an integer), found a number with a fraction or an exponent",
                    )));
                }
                v.push(parse_i64(&b[i..end]).map_err(|_| field_error(FieldError::Range))?);
                end
            }
            ColumnValues::Double(v) => {
                let (end, _) = scan_json_number(b, i).map_err(|_| mistyped("DOUBLE (a number)"))?;
                v.push(parse_f64(&b[i..end]).map_err(|e| match e {
                    NumberError::Range => field_error(FieldError::Range),
                    _ => mistyped("DOUBLE (a number)"),
                })?);
                end
            }
            ColumnValues::Boolean(v) => match b.get(i) {
                Some(b't') => {
                    let end = literal(b, i, b"true")?;
                    v.push(true);
                    end
                }
                Some(b'f') => {
                    let end = literal(b, i, b"false")?;
                    v.push(false);
                    end
                }
                _ => return Err(mistyped("BOOLEAN (true or false)")),
            },
            ColumnValues::Timestamp(v) => match b.get(i) {
                Some(b'"') => {
                    let (end, text) = string(b, i + 1, &mut self.scratch)?;
                    v.push(timestamp_from_text(text).map_err(field_error)?);
                    end
                }
                Some(b'-' | b'0'..=b'9') => {
                    let (end, integer) =
                        scan_json_number(b, i).map_err(|_| mistyped("a timestamp"))?;
                    if !integer {
                        return Err(mistyped("integer epoch milliseconds or an RFC 3339 string"));
                    }
                    let ms = parse_i64(&b[i..end]).map_err(|_| field_error(FieldError::Range))?;
                    v.push(millis_to_micros(ms).map_err(field_error)?);
                    end
                }
                _ => {
                    return Err(mistyped(
                        "a timestamp (epoch milliseconds or RFC 3339 string)",
                    ));
                }
            },
        };
        column.mark_pushed();
        Ok(end)
    }
}
