//! Fuzzing the decoders in the test suite, in bounded time: random bytes and mutations of
//! valid lines (byte flips, truncation, inserted quotes, braces and line breaks, huge
//! numbers, invalid UTF-8, lone carriage returns) never make a decoder panic, and every
//! line is accounted for: good rows + bad records + blank lines = lines.

use proptest::prelude::*;

use super::{CsvDecoder, DecodedChunk, JsonDecoder, LONG_LINE_RAW_BYTES};
use crate::batch::Interner;
use crate::query::{self, SourceSchema};

fn schema() -> SourceSchema {
    match query::parse(
        "fuzz",
        std::path::Path::new("fuzz.sql"),
        "CREATE TABLE r (device_id TEXT, ts TIMESTAMP, bytes BIGINT, lat DOUBLE, up BOOLEAN)
           WITH (event_time = 'ts');
         SELECT COUNT(*) FROM TUMBLE(r, ts, INTERVAL '1' MINUTE) GROUP BY window_start",
    ) {
        Ok(p) => p.source,
        Err(e) => panic!("{e}"),
    }
}

const JSON_LINES: [&str; 4] = [
    r#"{"device_id":"dev-1","ts":1767225600000,"bytes":512,"lat":1.25,"up":true}"#,
    r#"{ "up": false, "lat": 2, "bytes": -7, "ts": "2026-01-01T00:00:02Z", "device_id": "b\u00e9" }"#,
    r#"{"device_id":null,"ts":3000,"bytes":null,"lat":null,"up":null,"extra":[1,{"x":"}"}]}"#,
    r#"{"device_id":"d","ts":1000,"bytes":9223372036854775807,"lat":1e308,"up":true}"#,
];

const CSV_HEADER: &[u8] = b"device_id,ts,bytes,lat,up\n";

const CSV_LINES: [&str; 9] = [
    "dev-1,1767225600000,512,1.25,true",
    "\"b,\"\"quoted\"\"\",2026-01-01T00:00:02Z,-7,2,false",
    ",3000,,,",
    "d,1000,9223372036854775807,1e308,true\r",
    // What the one-pass reader leaves to the careful one: signs, leading zeros, a bare
    // point, a long mantissa, RFC 3339 with an offset.
    "dev-2,1500,+007,-0.5,1",
    "dev-3,0,-12,3.,0",
    "e,2026-01-01T00:00:02.5+01:00,-0,1.2345678901234567,t",
    // Fields quoted as a whole, which the one-pass reader takes too.
    "\"dev-4\",1000,\"12\",1.5,true",
    "\"d,5\",2000,3,\"\",false",
];

/// One way of damaging a line.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, &'static [u8]),
    Remove(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let inserts: &[&'static [u8]] = &[
        b"\"",
        b"{",
        b"}",
        b"[",
        b"]",
        b"\n",
        b"\r",
        b"\r\n",
        b",",
        b"\\",
        b"\xff",
        b"\xc3",
        b"\xed\xa0\x80",
        b"99999999999999999999999999",
        b"-",
        b"1e99999",
        b"\0",
        b"\"\n\"",
        b"\t",
        b" ",
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::sample::select(inserts)).prop_map(|(i, s)| Mutation::Insert(i, s)),
        any::<usize>().prop_map(Mutation::Remove),
    ]
}

fn mutate(line: &mut Vec<u8>, m: &Mutation) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
    match m {
        Mutation::Flip(i, b) if !line.is_empty() => {
            let k = i % line.len();
            line[k] ^= b | 1;
        }
        Mutation::Truncate(i) => line.truncate(at(*i, line.len())),
        Mutation::Insert(i, s) => {
            let k = at(*i, line.len());
            line.splice(k..k, s.iter().copied());
        }
        Mutation::Remove(i) if !line.is_empty() => {
            line.remove(i % line.len());
        }
        _ => {}
    }
}

/// Chunk text built from valid lines, some mutated, some random bytes.
fn chunk(valid: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        4 => (prop::sample::select(valid), prop::collection::vec(mutation(), 0..4)).prop_map(
            |(l, ms)| {
                let mut line = l.as_bytes().to_vec();
                for m in &ms {
                    mutate(&mut line, m);
                }
                line
            }
        ),
        1 => prop::collection::vec(any::<u8>(), 0..40),
        1 => Just(Vec::new()),
    ];
    (prop::collection::vec(line, 0..12), any::<bool>()).prop_map(|(lines, trailing)| {
        let mut text = lines.join(&b'\n');
        if trailing {
            text.push(b'\n');
        }
        text
    })
}

/// The lines of `data` as the decoders count them: split at `\n`, with no empty line
/// after a final `\n`.
fn lines(data: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if data.is_empty() || data.ends_with(b"\n") {
        lines.pop();
    }
    lines
}

/// Checks the accounting of one decoded chunk; `blank` says which lines a decoder skips.
fn accounted(
    c: &DecodedChunk,
    data: &[u8],
    limit: usize,
    blank: impl Fn(&[u8]) -> bool,
) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(data).into_owned();
    let lines = lines(data);
    let blanks = lines
        .iter()
        .filter(|l| l.len() <= limit && blank(l))
        .count();
    prop_assert_eq!(c.lines, lines.len() as u64, "{:?}", text);
    prop_assert_eq!(
        c.batch.len + c.bad.len() + blanks,
        lines.len(),
        "{:?}: {:?}",
        text,
        c.bad
    );
    // Every reading comes from one good line, so dead letters of readings rejected
    // after decoding can name their line.
    prop_assert_eq!(
        super::clock::good_line_starts(data, &c.bad).len(),
        c.batch.len,
        "{:?}: {:?}",
        text,
        c.bad
    );
    prop_assert!(c.batch.columns.iter().all(|col| col.len() == c.batch.len));
    prop_assert!(
        c.bad.windows(2).all(|w| w[0].line < w[1].line),
        "{:?}",
        c.bad
    );
    for b in &c.bad {
        prop_assert!(b.line < c.lines);
        // Raw text is bounded: a line within the limit (as lossy UTF-8, up to 3 bytes
        // per input byte) or the head of a longer one.
        prop_assert!(b.raw.len() <= 3 * limit.max(LONG_LINE_RAW_BYTES));
    }
    Ok(())
}

fn json_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

fn csv_blank(line: &[u8]) -> bool {
    line.is_empty() || line == b"\r"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn json_decoder_accounts_for_every_line(data in chunk(&JSON_LINES), limit in prop_oneof![Just(1 << 20), 8usize..120]) {
        let mut interner = Interner::new();
        let mut decoder = JsonDecoder::new(&schema()).with_max_line_bytes(limit);
        // Twice through one decoder: the second pass takes the learned-shape fast path.
        for _ in 0..2 {
            let c = decoder.decode(&data, &mut interner);
            accounted(&c, &data, limit, json_blank)?;
        }
    }

    #[test]
    fn csv_decoder_accounts_for_every_line(data in chunk(&CSV_LINES), limit in prop_oneof![Just(1 << 20), 8usize..120]) {
        let mut interner = Interner::new();
        let mut decoder = match CsvDecoder::new(&schema(), CSV_HEADER) {
            Ok(d) => d.with_max_line_bytes(limit),
            Err(e) => panic!("{e}"),
        };
        let c = decoder.decode(&data, &mut interner);
        accounted(&c, &data, limit, csv_blank)?;
    }
}

#[test]
fn valid_lines_decode_whole() {
    let schema = schema();
    let mut interner = Interner::new();
    let json = JSON_LINES.join("\n");
    let c = JsonDecoder::new(&schema).decode(json.as_bytes(), &mut interner);
    assert_eq!((c.batch.len, c.bad.len()), (4, 0), "{:?}", c.bad);
    let csv = CSV_LINES.join("\n");
    let c = match CsvDecoder::new(&schema, CSV_HEADER) {
        Ok(mut d) => d.decode(csv.as_bytes(), &mut interner),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        (c.batch.len, c.bad.len()),
        (CSV_LINES.len(), 0),
        "{:?}",
        c.bad
    );
}

/// Everything a decoded chunk holds, comparable: rows as values, bad records.
fn contents(c: &DecodedChunk, interner: &Interner) -> (Vec<String>, Vec<String>, u64) {
    let rows = (0..c.batch.len)
        .map(|r| {
            let row: Vec<_> = c
                .batch
                .columns
                .iter()
                .map(|col| col.value(r, interner))
                .collect();
            format!("{row:?}")
        })
        .collect();
    let bad = c
        .bad
        .iter()
        .map(|b| format!("{}: {} [{}]", b.line, b.reason, b.raw))
        .collect();
    (rows, bad, c.lines)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Splitting a line without quotes at its commas gives what the full parser gives.
    #[test]
    fn csv_split_at_commas_agrees_with_the_full_parser(data in chunk(&CSV_LINES), limit in prop_oneof![Just(1 << 20), 8usize..120]) {
        let decode = |split: bool| {
            let mut interner = Interner::new();
            let mut decoder = match CsvDecoder::new(&schema(), CSV_HEADER) {
                Ok(d) => d.with_max_line_bytes(limit),
                Err(e) => panic!("{e}"),
            };
            decoder.split_plain = split;
            let c = decoder.decode(&data, &mut interner);
            contents(&c, &interner)
        };
        prop_assert_eq!(decode(true), decode(false));
    }
}
