//! Number parsing for decoders: exact, allocation-free on the common path.
//!
//! Doubles with at most 19 significant digits and a small decimal exponent are converted
//! with one multiplication or division by an exact power of ten (Clinger's fast path,
//! correctly rounded); everything else goes to the standard library's parser.

/// Why a number was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberError {
    /// Not a number.
    Syntax,
    /// A fraction or exponent where an integer was required.
    NotInteger,
    /// Outside the 64-bit range, or not finite.
    Range,
}

/// How many of eight little-endian bytes, from the first, are ASCII digits (0..=8).
///
/// Bytes below the first non-digit are exact in both sums (no carry, no borrow), so the
/// lowest flagged byte is exactly the first non-digit.
#[inline(always)]
fn leading_digits(word: u64) -> usize {
    let a = word.wrapping_add(0x4646_4646_4646_4646);
    let b = word.wrapping_sub(0x3030_3030_3030_3030);
    ((a | b) & 0x8080_8080_8080_8080).trailing_zeros() as usize / 8
}

/// The value of eight ASCII digits loaded little-endian (first digit in the low byte).
#[inline(always)]
fn eight_digits_value(v: u64) -> u64 {
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 100 + (1_000_000 << 32);
    const MUL2: u64 = 1 + (10_000 << 32);
    let v = v.wrapping_sub(0x3030_3030_3030_3030);
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let v1 = (v & MASK).wrapping_mul(MUL1);
    let v2 = ((v >> 16) & MASK).wrapping_mul(MUL2);
    (v1.wrapping_add(v2) >> 32) & 0xFFFF_FFFF
}

const POW10_U64: [u64; 16] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
    1_000_000_000_000,
    10_000_000_000_000,
    100_000_000_000_000,
    1_000_000_000_000_000,
];

/// The value of the first `l` (1..=7) digits of `word`: shifted to the top of the word and
/// padded below with '0's, so the eight-digit conversion reads them as a number of `l`
/// digits.
#[inline(always)]
fn partial_value(word: u64, l: usize) -> u64 {
    let padded = (word << (8 * (8 - l))) | (0x3030_3030_3030_3030u64 >> (8 * l));
    eight_digits_value(padded)
}

/// The run of ASCII digits at the start of `s`, at most 19 of them: their value and count.
/// Eight bytes at a time: the digit count of a word comes from one mask, and a partial
/// word is shifted up and padded with '0's so the same multiply-add converts it.
#[inline(always)]
pub fn digit_run(s: &[u8]) -> (u64, usize) {
    // Nearly every number in a reading has fewer than 16 digits and is followed by more
    // of the line: two loads and no loop.
    if let Some(head) = s.first_chunk::<16>() {
        let (w0, w1) = split_words(head);
        let l0 = leading_digits(w0);
        if l0 < 8 {
            return (if l0 == 0 { 0 } else { partial_value(w0, l0) }, l0);
        }
        let l1 = leading_digits(w1);
        if l1 < 8 {
            let high = eight_digits_value(w0);
            return if l1 == 0 {
                (high, 8)
            } else {
                (high * POW10_U64[l1] + partial_value(w1, l1), 8 + l1)
            };
        }
    }
    digit_run_words(s)
}

#[inline(always)]
fn split_words(head: &[u8; 16]) -> (u64, u64) {
    let (a, b) = head.split_at(8);
    (
        u64::from_le_bytes(a.try_into().unwrap_or_default()),
        u64::from_le_bytes(b.try_into().unwrap_or_default()),
    )
}

/// [`digit_run`] for short inputs and long runs: a word at a time, then byte by byte.
#[inline(never)]
fn digit_run_words(s: &[u8]) -> (u64, usize) {
    let mut v = 0u64;
    let mut n = 0;
    while n + 8 <= s.len() {
        let word = u64::from_le_bytes(s[n..n + 8].try_into().unwrap_or_default());
        let l = leading_digits(word);
        if n + l > 19 {
            break;
        }
        if l == 8 {
            v = v * POW10_U64[8] + eight_digits_value(word);
            n += 8;
            continue;
        }
        if l > 0 {
            v = v * POW10_U64[l] + partial_value(word, l);
            n += l;
        }
        return (v, n);
    }
    for &c in &s[n..s.len().min(19)] {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        v = v * 10 + u64::from(d);
        n += 1;
    }
    (v, n)
}

const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The end of the JSON number token starting at `start`, validated against the JSON
/// grammar, and whether it is an integer (no fraction, no exponent).
#[inline]
pub fn scan_json_number(b: &[u8], start: usize) -> Result<(usize, bool), NumberError> {
    let mut i = start;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
        _ => return Err(NumberError::Syntax),
    }
    let mut integer = true;
    if b.get(i) == Some(&b'.') {
        integer = false;
        i += 1;
        let digits = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == digits {
            return Err(NumberError::Syntax);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        integer = false;
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let digits = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == digits {
            return Err(NumberError::Syntax);
        }
    }
    Ok((i, integer))
}

/// An integer at the start of `s` (`-?(0|[1-9][0-9]*)`) of at most 18 digits, so it
/// cannot overflow: its length and value. `None` for anything else, and when a fraction
/// or an exponent follows, so a caller never takes `1.5` for `1`.
#[inline(always)]
pub fn integer_prefix(s: &[u8]) -> Option<(usize, i64)> {
    let negative = s.first() == Some(&b'-');
    let digits = &s[usize::from(negative)..];
    let (v, n) = digit_run(digits);
    if n == 0
        || n > 18
        || (n > 1 && digits[0] == b'0')
        || matches!(digits.get(n), Some(b'.' | b'e' | b'E'))
    {
        return None;
    }
    let v = v as i64;
    Some((usize::from(negative) + n, if negative { -v } else { v }))
}

/// What [`decimal_prefix`] found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decimal {
    /// A decimal of at most 15 digits and no exponent: its length and its value, which
    /// is what [`parse_f64`] gives for the same token.
    Short(usize, f64),
    /// A number with an exponent or more digits: for the careful parser.
    Long,
    /// Not a number in JSON's grammar (`.5`, `01`, `1.`).
    Invalid,
}

/// The decimal number at the start of `s`, converted in the pass that scans it.
#[inline(always)]
pub fn decimal_prefix(s: &[u8]) -> Decimal {
    let negative = s.first() == Some(&b'-');
    let at = usize::from(negative);
    let (int, int_digits) = digit_run(&s[at..]);
    if int_digits == 0 || (int_digits > 1 && s[at] == b'0') {
        return Decimal::Invalid;
    }
    let mut j = at + int_digits;
    let (mut mantissa, mut frac_digits) = (int, 0);
    if s.get(j) == Some(&b'.') {
        let (frac, n) = digit_run(&s[j + 1..]);
        if n == 0 {
            return Decimal::Invalid;
        }
        frac_digits = n;
        mantissa = if n < 16 {
            int.wrapping_mul(POW10_U64[n]).wrapping_add(frac)
        } else {
            0
        };
        j += 1 + n;
    }
    if matches!(s.get(j), Some(b'e' | b'E')) || int_digits + frac_digits > 15 {
        return Decimal::Long;
    }
    // At most 15 digits: the mantissa and the power of ten are exact, so one division is
    // correctly rounded.
    let v = mantissa as f64 / POW10[frac_digits];
    Decimal::Short(j, if negative { -v } else { v })
}

/// Parses a whole token as a signed 64-bit integer (`-?[0-9]+`).
#[inline]
pub fn parse_i64(token: &[u8]) -> Result<i64, NumberError> {
    let (negative, digits) = match token.first() {
        Some(b'-') => (true, &token[1..]),
        Some(b'+') => (false, &token[1..]),
        _ => (false, token),
    };
    if digits.is_empty() {
        return Err(NumberError::Syntax);
    }
    if digits.len() <= 18 {
        // Eighteen digits cannot overflow: take them a word at a time.
        let (v, n) = digit_run(digits);
        if n == digits.len() {
            let v = v as i64;
            return Ok(if negative { -v } else { v });
        }
    }
    // Accumulate negatively so that i64::MIN parses.
    let mut v: i64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return Err(if matches!(c, b'.' | b'e' | b'E') {
                NumberError::NotInteger
            } else {
                NumberError::Syntax
            });
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_sub(i64::from(d)))
            .ok_or(NumberError::Range)?;
    }
    if negative {
        Ok(v)
    } else {
        v.checked_neg().ok_or(NumberError::Range)
    }
}

/// Parses a whole token as a finite double.
#[inline]
pub fn parse_f64(token: &[u8]) -> Result<f64, NumberError> {
    let mut i = 0;
    let negative = match token.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let mut mantissa: u64 = 0;
    let mut digits = 0u32;
    let mut exponent: i32 = 0;
    let start = i;
    while i < token.len() && token[i].is_ascii_digit() {
        if digits < 19 {
            mantissa = mantissa * 10 + u64::from(token[i] - b'0');
            if mantissa != 0 {
                digits += 1;
            }
        } else {
            return slow_f64(token);
        }
        i += 1;
    }
    let int_digits = i - start;
    let mut frac_digits = 0;
    if i < token.len() && token[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < token.len() && token[i].is_ascii_digit() {
            if digits < 19 {
                mantissa = mantissa * 10 + u64::from(token[i] - b'0');
                if mantissa != 0 {
                    digits += 1;
                }
                exponent -= 1;
            } else {
                return slow_f64(token);
            }
            i += 1;
        }
        frac_digits = i - frac_start;
    }
    if int_digits + frac_digits == 0 {
        return slow_f64(token);
    }
    if i < token.len() {
        // An exponent or anything unusual ("inf", "1_000") goes the careful way.
        return slow_f64(token);
    }
    let value = if mantissa >> 53 != 0 {
        return slow_f64(token);
    } else if exponent == 0 {
        mantissa as f64
    } else if -exponent <= 22 {
        mantissa as f64 / POW10[(-exponent) as usize]
    } else {
        return slow_f64(token);
    };
    Ok(if negative { -value } else { value })
}

#[cold]
fn slow_f64(token: &[u8]) -> Result<f64, NumberError> {
    let text = std::str::from_utf8(token).map_err(|_| NumberError::Syntax)?;
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(NumberError::Range),
        Err(_) => Err(NumberError::Syntax),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn integers() {
        assert_eq!(parse_i64(b"0"), Ok(0));
        assert_eq!(parse_i64(b"-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), Err(NumberError::Range));
        assert_eq!(parse_i64(b"1.5"), Err(NumberError::NotInteger));
        assert_eq!(parse_i64(b""), Err(NumberError::Syntax));
        assert_eq!(parse_i64(b"-"), Err(NumberError::Syntax));
    }

    #[test]
    fn digit_runs() {
        assert_eq!(digit_run(b"1767225598112,"), (1_767_225_598_112, 13));
        assert_eq!(digit_run(b"12345678"), (12_345_678, 8));
        assert_eq!(digit_run(b"0000000012345678x"), (12_345_678, 16));
        assert_eq!(digit_run(b"7x"), (7, 1));
        assert_eq!(digit_run(b"x"), (0, 0));
        assert_eq!(
            digit_run(b"1234567890123456789012"),
            (1_234_567_890_123_456_789, 19)
        );
        assert_eq!(digit_run(b"1234/678"), (1234, 4));
        assert_eq!(digit_run(b"1234:678"), (1234, 4));
    }

    #[test]
    fn json_number_grammar() {
        assert_eq!(scan_json_number(b"12,", 0), Ok((2, true)));
        assert_eq!(scan_json_number(b"-0.5e+3}", 0), Ok((7, false)));
        assert_eq!(scan_json_number(b"01", 0), Ok((1, true)));
        assert!(scan_json_number(b"1.", 0).is_err());
        assert!(scan_json_number(b"-", 0).is_err());
        assert!(scan_json_number(b"1e", 0).is_err());
    }

    proptest! {
        #[test]
        fn doubles_match_std(v in proptest::num::f64::NORMAL | proptest::num::f64::ZERO) {
            let text = format!("{v}");
            prop_assert_eq!(parse_f64(text.as_bytes()), Ok(text.parse::<f64>().unwrap_or_default()));
            let short = format!("{v:.3}");
            prop_assert_eq!(parse_f64(short.as_bytes()), Ok(short.parse::<f64>().unwrap_or_default()));
        }

        #[test]
        fn decimal_text_matches_std(int in 0u64..10_000_000_000, frac in 0u32..1_000_000, neg in any::<bool>()) {
            let text = format!("{}{int}.{frac:06}", if neg { "-" } else { "" });
            prop_assert_eq!(parse_f64(text.as_bytes()), Ok(text.parse::<f64>().unwrap_or_default()));
        }

        #[test]
        fn digit_runs_match_std(digits in "[0-9]{0,25}", tail in "([^0-9][ -~]{0,20})?") {
            let text = format!("{digits}{tail}");
            let n = digits.len().min(19);
            let want = if n == 0 { 0 } else { digits[..n].parse::<u64>().unwrap_or_default() };
            prop_assert_eq!(digit_run(text.as_bytes()), (want, n));
        }

        #[test]
        fn integer_prefixes_match_std(v in any::<i64>(), tail in "([,}\n.eE][ -~]{0,20})?") {
            let digits = v.unsigned_abs().to_string().len();
            let text = format!("{v}{tail}");
            let fraction = matches!(tail.as_bytes().first(), Some(b'.' | b'e' | b'E'));
            let want = (digits <= 18 && !fraction).then_some((v.to_string().len(), v));
            prop_assert_eq!(integer_prefix(text.as_bytes()), want);
        }

        #[test]
        fn decimal_prefixes_match_std(int in 0u64..100_000_000, frac in "[0-9]{1,7}", neg in any::<bool>(), tail in "([,}\neE][ -~]{0,20})?") {
            let number = format!("{}{int}.{frac}", if neg { "-" } else { "" });
            let text = format!("{number}{tail}");
            let want = number.parse::<f64>().unwrap_or_default();
            let exponent = matches!(tail.as_bytes().first(), Some(b'e' | b'E'));
            let digits = int.to_string().len() + frac.len();
            match decimal_prefix(text.as_bytes()) {
                Decimal::Short(n, v) => {
                    prop_assert!(!exponent && digits <= 15);
                    prop_assert_eq!((n, v), (number.len(), want));
                }
                Decimal::Long => prop_assert!(exponent || digits > 15),
                Decimal::Invalid => prop_assert!(false, "{text} is a number"),
            }
        }

        #[test]
        fn integers_match_std(v in any::<i64>()) {
            prop_assert_eq!(parse_i64(v.to_string().as_bytes()), Ok(v));
        }
    }
}
