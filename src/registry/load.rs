//! A registry CSV file to a [`Version`]: a header row naming the columns, then one row
//! per device.

use std::collections::hash_map::Entry;

use super::{Key, Listed, RegistryError, Row, Rows, Value, Version};
use crate::query::registry::RegistryTable;
use crate::types::DataType;

/// Most row errors one load reports: the first few say what is wrong.
const MAX_ERRORS: usize = 10;

/// Reads `table`'s file, keyed by column `key`. Every declared column must be in the
/// header (in any order; other columns are ignored); every row has the header's number
/// of fields, each on its line; an empty field is NULL, except in the key column. Any
/// malformed row refuses the whole file.
pub fn load(table: &RegistryTable, key: usize) -> Result<Version, Vec<RegistryError>> {
    let path = &table.path;
    let file = std::fs::File::open(path).map_err(|source| {
        vec![RegistryError::Read {
            path: path.clone(),
            source,
        }]
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(std::io::BufReader::new(file));
    let header = reader
        .headers()
        .map_err(|e| {
            vec![RegistryError::Row {
                path: path.clone(),
                line: 1,
                message: format!("expected a header row naming the columns: {e}"),
            }]
        })?
        .clone();
    let declared: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    let mut positions = Vec::with_capacity(table.columns.len());
    for column in &table.columns {
        let at = header.iter().position(|h| h == column.name).or_else(|| {
            header
                .iter()
                .position(|h| h.eq_ignore_ascii_case(&column.name))
        });
        match at {
            Some(at) => positions.push(at),
            None => {
                return Err(vec![RegistryError::MissingColumn {
                    path: path.clone(),
                    column: column.name.clone(),
                    declared: declared.join(", "),
                }]);
            }
        }
    }
    // About 40 bytes a row: sized once instead of rehashing a million rows as it grows.
    let guess = reader
        .get_ref()
        .get_ref()
        .metadata()
        .map_or(0, |m| m.len() / 40);
    let mut rows: Rows = Rows::with_capacity_and_hasher(
        usize::try_from(guess).unwrap_or(0).min(1 << 24),
        Default::default(),
    );
    let mut errors = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                errors.push(RegistryError::Row {
                    path: path.clone(),
                    line: e.position().map_or(line, |p| p.line()),
                    message: format!("expected a CSV row: {e}"),
                });
                if errors.len() >= MAX_ERRORS {
                    break;
                }
                continue;
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        let problem = if record.iter().any(|f| f.contains(['\n', '\r'])) {
            // The CSV format lets a quoted field run over lines; here that is a quote
            // left open, which would take the rows after it into one field.
            "a quote opened on this line does not close on it (a field cannot hold a line break)"
                .to_owned()
        } else if record.iter().all(str::is_empty) {
            continue;
        } else if record.len() != header.len() {
            format!(
                "expected {} fields, as the header has, found {}",
                header.len(),
                record.len()
            )
        } else {
            match parse_row(table, &positions, &record, key) {
                Ok(mut row) => match rows.entry(key_text(row.remove(key))) {
                    Entry::Vacant(slot) => {
                        slot.insert(Listed { row, line });
                        continue;
                    }
                    Entry::Occupied(first) => format!(
                        "`{}` {:?} is listed twice (first at line {}); each device has one row",
                        table.columns[key].name,
                        first.key(),
                        first.get().line
                    ),
                },
                Err(message) => message,
            }
        };
        errors.push(RegistryError::Row {
            path: path.clone(),
            line,
            message: problem,
        });
        if errors.len() >= MAX_ERRORS {
            break;
        }
    }
    if errors.is_empty() {
        Ok(Version { rows })
    } else {
        Err(errors)
    }
}

/// The arrangement's key for a key value.
fn key_text(value: Value) -> Key {
    match value {
        Value::Text(t) => t,
        Value::Int(i) => i.to_string(),
        Value::Null | Value::Float(_) | Value::Bool(_) => String::new(),
    }
}

fn parse_row(
    table: &RegistryTable,
    positions: &[usize],
    record: &csv::StringRecord,
    key: usize,
) -> Result<Row, String> {
    table
        .columns
        .iter()
        .zip(positions)
        .enumerate()
        .map(|(i, (column, &at))| {
            let field = record.get(at).unwrap_or("");
            if field.is_empty() {
                return if i == key {
                    Err(format!(
                        "column `{}`: expected the device's key, found an empty field",
                        column.name
                    ))
                } else {
                    Ok(Value::Null)
                };
            }
            let bad =
                |what: &str| format!("column `{}`: expected {what}, found {field:?}", column.name);
            match column.ty {
                DataType::Text => Ok(Value::Text(field.to_owned())),
                DataType::BigInt => field
                    .parse::<i64>()
                    .map(Value::Int)
                    .map_err(|_| bad("a BIGINT")),
                DataType::Double => field
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(|f| Value::Float(f.to_bits()))
                    .ok_or_else(|| bad("a finite DOUBLE")),
                DataType::Boolean => match field.to_ascii_lowercase().as_str() {
                    "true" | "t" | "1" | "yes" => Ok(Value::Bool(true)),
                    "false" | "f" | "0" | "no" => Ok(Value::Bool(false)),
                    _ => Err(bad("a BOOLEAN (true or false)")),
                },
                DataType::Timestamp => Err(bad("a TEXT, BIGINT, DOUBLE or BOOLEAN")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Field;

    fn table(path: std::path::PathBuf) -> RegistryTable {
        RegistryTable {
            name: "devices".into(),
            columns: vec![
                Field {
                    name: "device_id".into(),
                    ty: DataType::Text,
                },
                Field {
                    name: "site".into(),
                    ty: DataType::Text,
                },
                Field {
                    name: "rack".into(),
                    ty: DataType::BigInt,
                },
            ],
            path,
            reload: None,
        }
    }

    #[test]
    fn header_order_is_free_and_extra_columns_are_ignored() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("d.csv");
        std::fs::write(&path, "site,extra,device_id,rack\nlyon,x,d1,4\n,y,d2,\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let version = load(&table(path), 0).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(version.len(), 2);
        assert_eq!(
            version.rows["d1"].row,
            vec![Value::Text("lyon".into()), Value::Int(4)]
        );
        assert_eq!(version.rows["d2"].row, vec![Value::Null, Value::Null]);
    }

    #[test]
    fn malformed_rows_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("d.csv");
        // The errors of loading `text` as the registry file.
        let errors = |text: &str| -> Vec<String> {
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
            load(&table(path.clone()), 0)
                .err()
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let file = path.display();
        assert_eq!(
            errors("device_id,site,rack\nd1,lyon,4\nd2,nice,four\nd1,paris,5\n,x,1\n"),
            vec![
                format!("{file}:3: column `rack`: expected a BIGINT, found \"four\""),
                format!(
                    "{file}:4: `device_id` \"d1\" is listed twice (first at line 2); each device has one row"
                ),
                format!(
                    "{file}:5: column `device_id`: expected the device's key, found an empty field"
                ),
            ]
        );
        // A quote left open would take the rows after it into one field; a row with
        // fewer or more fields than the header is not read as if the rest were empty.
        assert_eq!(
            errors("device_id,site,rack\nd1,\"a,b\",1\nd2,\"open,2\nd3,c,3\nd4,d,4\n"),
            vec![format!(
                "{file}:3: a quote opened on this line does not close on it (a field cannot hold a line break)"
            )]
        );
        assert_eq!(
            errors("device_id,site,rack\nd1,b\nd2,c,2,9\nd3,,\n"),
            vec![
                format!("{file}:2: expected 3 fields, as the header has, found 2"),
                format!("{file}:3: expected 3 fields, as the header has, found 4"),
            ]
        );
        let missing = errors("device_id,rack\nd1,4\n");
        assert_eq!(missing.len(), 1);
        assert!(
            missing[0].ends_with(
                ":1: the header has no column `site`; the registry declares device_id, site, rack"
            ),
            "{}",
            missing[0]
        );
    }
}
