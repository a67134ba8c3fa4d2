//! Fuzzing the planner in the test suite, in bounded time: random text and mutations of
//! a valid query file never make planning panic, and every mistake is reported as
//! `file:line:column: ...` (or names the file).

use std::path::Path;

use proptest::prelude::*;

const VALID: &str = "CREATE TABLE readings (
    device_id  TEXT,
    ts         TIMESTAMP,
    bytes_in   BIGINT,
    latency_ms DOUBLE
) WITH (event_time = 'ts', max_out_of_orderness = '5s');

SELECT device_id, window_start, window_end,
       COUNT(*) AS readings, SUM(bytes_in) AS bytes_in, AVG(latency_ms) AS avg_latency_ms
FROM HOP(readings, ts, INTERVAL '10' SECOND, INTERVAL '1' MINUTE)
WHERE bytes_in > 0 AND (device_id LIKE 'dev-%' OR latency_ms BETWEEN 1 AND 2)
GROUP BY device_id, window_start, window_end
HAVING SUM(bytes_in) * 8.0 / 60 > 1;
";

const TOKENS: &[&str] = &[
    "(",
    ")",
    "'",
    "\"",
    ",",
    ";",
    "--",
    "/*",
    "*/",
    "\n",
    "NOT ",
    "- ",
    "+",
    "*",
    "/",
    "((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((",
    "INTERVAL '0' SECOND",
    "INTERVAL '1' MICROSECOND",
    "'1us'",
    "99999999999999999999",
    "HOP",
    "TUMBLE",
    "SESSION",
    "SELECT",
    "FROM",
    "GROUP BY",
    "WHERE",
    "CAST(",
    "é",
    "\u{0}",
];

fn mutated() -> impl Strategy<Value = String> {
    let edit = (any::<usize>(), 0usize..3, prop::sample::select(TOKENS));
    prop::collection::vec(edit, 1..6).prop_map(|edits| {
        let mut text = VALID.to_owned();
        for (at, kind, token) in edits {
            let mut k = at % (text.len() + 1);
            while !text.is_char_boundary(k) {
                k -= 1;
            }
            match kind {
                0 => text.insert_str(k, token),
                1 => text.truncate(k),
                _ => {
                    let mut end = (k + token.len()).min(text.len());
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    text.replace_range(k..end, "");
                }
            }
        }
        text
    })
}

fn check(text: &str) -> Result<(), TestCaseError> {
    if let Err(e) = super::parse("fuzz", Path::new("fuzz.sql"), text) {
        let message = e.to_string();
        prop_assert!(message.starts_with("fuzz.sql:"), "{}", message);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn mutated_queries_plan_or_fail_with_a_position(text in mutated()) {
        check(&text)?;
    }

    #[test]
    fn random_text_fails_with_a_position(text in "[ -~\n]{0,200}") {
        check(&text)?;
    }
}
