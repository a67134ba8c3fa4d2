//! JSON lexing on one line: whitespace, strings, numbers, literals and skipping whole
//! values, all validating as serde_json would. Line breaks are never whitespace here.

use std::borrow::Cow;

use crate::decode::number::scan_json_number;

/// How deep nested values may go in skipped fields.
const MAX_DEPTH: usize = 128;

/// Where in a line decoding failed and why.
pub struct LineError {
    /// Byte offset in the chunk.
    pub at: usize,
    /// What was expected.
    pub reason: Cow<'static, str>,
}

/// A lexing result.
pub type Scan<T> = Result<T, LineError>;

/// Fails at `at`.
pub fn fail<T>(at: usize, reason: impl Into<Cow<'static, str>>) -> Scan<T> {
    Err(LineError {
        at,
        reason: reason.into(),
    })
}

/// Skips spaces, tabs and carriage returns.
#[inline]
pub fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r') {
        i += 1;
    }
    i
}

/// What the value at `i` looks like, for messages.
pub fn describe(b: &[u8], i: usize) -> &'static str {
    match b.get(i) {
        Some(b'"') => "a string",
        Some(b'-' | b'0'..=b'9') => "a number",
        // Judged by the whole word: `not json` is no `null`.
        Some(b't' | b'f') if b[i..].starts_with(b"true") || b[i..].starts_with(b"false") => {
            "a boolean"
        }
        Some(b'n') if b[i..].starts_with(b"null") => "null",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'\n') | None => "the end of the line",
        Some(_) => "an invalid token",
    }
}

/// Expects `word` at `i`.
#[inline]
pub fn literal(b: &[u8], i: usize, word: &'static [u8]) -> Scan<usize> {
    if b[i..].starts_with(word) {
        Ok(i + word.len())
    } else {
        fail(i, "invalid JSON literal")
    }
}

fn hex4(b: &[u8], i: usize) -> Scan<u32> {
    let mut v = 0u32;
    for k in 0..4 {
        let d = match b.get(i + k) {
            Some(c @ b'0'..=b'9') => c - b'0',
            Some(c @ b'a'..=b'f') => c - b'a' + 10,
            Some(c @ b'A'..=b'F') => c - b'A' + 10,
            _ => return fail(i + k, "invalid \\u escape"),
        };
        v = v * 16 + u32::from(d);
    }
    Ok(v)
}

/// Bytes of a little-endian word that need a closer look inside a JSON string: `"`,
/// `\\`, control characters and non-ASCII. Returns a mask with the high bit of each such
/// byte set; bytes below the first flagged one are never flagged by mistake.
#[inline(always)]
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    // A byte is zero (after the xor), or below 0x20, when subtracting borrows into bit 7.
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    zero(quote) | zero(backslash) | control | (word & HIGH)
}

/// Scans a string whose opening quote is at `i - 1`; returns the index after the closing
/// quote and the unescaped UTF-8 bytes (borrowed from the input when it has no escapes).
/// Plain ASCII is skipped eight bytes at a time.
#[inline]
pub fn string<'a>(b: &'a [u8], i: usize, scratch: &'a mut Vec<u8>) -> Scan<(usize, &'a [u8])> {
    let mut j = i;
    while j + 8 <= b.len() {
        let word = u64::from_le_bytes(b[j..j + 8].try_into().unwrap_or_default());
        let special = special_bytes(word);
        if special == 0 {
            j += 8;
            continue;
        }
        j += special.trailing_zeros() as usize / 8;
        if b[j] == b'"' {
            return Ok((j + 1, &b[i..j]));
        }
        break;
    }
    let mut ascii = true;
    while j < b.len() {
        match b[j] {
            b'"' => {
                let text = &b[i..j];
                if !ascii && std::str::from_utf8(text).is_err() {
                    return fail(i, "invalid UTF-8 in string");
                }
                return Ok((j + 1, text));
            }
            b'\\' => return unescape(b, i, scratch),
            c if c < 0x20 => return fail(j, "control character in string"),
            c => {
                ascii &= c < 0x80;
                j += 1;
            }
        }
    }
    fail(j, "unterminated string")
}

#[cold]
fn unescape<'a>(b: &'a [u8], start: usize, out: &'a mut Vec<u8>) -> Scan<(usize, &'a [u8])> {
    out.clear();
    let mut j = start;
    while j < b.len() {
        match b[j] {
            b'"' => {
                if std::str::from_utf8(out).is_err() {
                    return fail(start, "invalid UTF-8 in string");
                }
                return Ok((j + 1, out));
            }
            b'\\' => {
                let c = match b.get(j + 1) {
                    Some(b'"') => '"',
                    Some(b'\\') => '\\',
                    Some(b'/') => '/',
                    Some(b'b') => '\u{8}',
                    Some(b'f') => '\u{c}',
                    Some(b'n') => '\n',
                    Some(b'r') => '\r',
                    Some(b't') => '\t',
                    Some(b'u') => {
                        let hi = hex4(b, j + 2)?;
                        let (code, used) = if (0xD800..0xDC00).contains(&hi) {
                            if b.get(j + 6) != Some(&b'\\') || b.get(j + 7) != Some(&b'u') {
                                return fail(j, "unpaired surrogate in \\u escape");
                            }
                            let lo = hex4(b, j + 8)?;
                            if !(0xDC00..0xE000).contains(&lo) {
                                return fail(j, "unpaired surrogate in \\u escape");
                            }
                            (0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00), 12)
                        } else {
                            (hi, 6)
                        };
                        let Some(c) = char::from_u32(code) else {
                            return fail(j, "invalid \\u escape");
                        };
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        j += used;
                        continue;
                    }
                    _ => return fail(j, "invalid escape in string"),
                };
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                j += 2;
            }
            c if c < 0x20 => return fail(j, "control character in string"),
            c => {
                out.push(c);
                j += 1;
            }
        }
    }
    fail(j, "unterminated string")
}

/// Skips one JSON value starting at `i`, validating it.
pub fn skip_value(b: &[u8], i: usize, depth: usize, scratch: &mut Vec<u8>) -> Scan<usize> {
    match b.get(i) {
        Some(b'"') => string(b, i + 1, scratch).map(|(end, _)| end),
        Some(b'-' | b'0'..=b'9') => scan_json_number(b, i)
            .map(|(end, _)| end)
            .or_else(|_| fail(i, "invalid number")),
        Some(b't') => literal(b, i, b"true"),
        Some(b'f') => literal(b, i, b"false"),
        Some(b'n') => literal(b, i, b"null"),
        Some(open @ (b'{' | b'[')) => {
            if depth >= MAX_DEPTH {
                return fail(i, "JSON nested too deeply");
            }
            let (object, close) = if *open == b'{' {
                (true, b'}')
            } else {
                (false, b']')
            };
            let mut j = skip_ws(b, i + 1);
            if b.get(j) == Some(&close) {
                return Ok(j + 1);
            }
            loop {
                if object {
                    if b.get(j) != Some(&b'"') {
                        return fail(j, "expected a field name in double quotes");
                    }
                    j = skip_ws(b, string(b, j + 1, scratch)?.0);
                    if b.get(j) != Some(&b':') {
                        return fail(j, "expected ':'");
                    }
                    j = skip_ws(b, j + 1);
                }
                j = skip_ws(b, skip_value(b, j, depth + 1, scratch)?);
                match b.get(j) {
                    Some(b',') => j = skip_ws(b, j + 1),
                    Some(c) if *c == close => return Ok(j + 1),
                    _ => {
                        return fail(
                            j,
                            if object {
                                "expected ',' or '}'"
                            } else {
                                "expected ',' or ']'"
                            },
                        );
                    }
                }
            }
        }
        _ => fail(
            i,
            format!("expected a JSON value, found {}", describe(b, i)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn a_token_is_described_by_its_whole_word() {
        assert_eq!(describe(b"null}", 0), "null");
        assert_eq!(describe(b"not json", 0), "an invalid token");
        assert_eq!(describe(b"false,", 0), "a boolean");
        assert_eq!(describe(b"fals", 0), "an invalid token");
        assert_eq!(describe(b"\"x\"", 0), "a string");
        assert_eq!(describe(b"", 0), "the end of the line");
    }
}
