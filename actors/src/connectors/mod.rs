//! Built-in connectors, one module each.
//!
//! - [`blackhole`]: a sink that counts records and drops them (benchmarks).
//! - [`datagen`]: deterministic generated records (replayable), the workhorse for tests,
//!   demos and benchmarks.
//! - [`file`]: a source following the lines of files matching a pattern (replayable) and a
//!   sink appending lines to a file (idempotent).
//! - [`postgres`]: a sink writing JSON records as rows of a PostgreSQL table, with the input
//!   position in the same transaction (transactional, effectively-once).

pub mod blackhole;
pub mod datagen;
pub mod file;
pub mod postgres;

use serde_json::Value;

use crate::api::ConnectorError;
use crate::api::registry::{ConfigField, FieldType};

/// Decodes a position that is one number, 8 bytes big-endian, written by the `connector` type.
pub(crate) fn decode_u64_position(connector: &str, position: &[u8]) -> Result<u64, ConnectorError> {
    let bytes: [u8; 8] = position.try_into().map_err(|_| {
        ConnectorError::InvalidPosition(format!(
            "a {connector} position is 8 bytes, got {}",
            position.len()
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Refuses a config value whose JSON type is not its field's declared type, naming the field.
///
/// Run before `registry::parse_config`: serde's "invalid type" message quotes the value, not
/// the key, so parsing alone would name the value as the field.
pub(crate) fn check_field_types(
    fields: &[ConfigField],
    config: &Value,
) -> Result<(), ConnectorError> {
    let Some(object) = config.as_object() else {
        return Ok(()); // parse_config reports a config that is not an object.
    };
    for field in fields {
        let Some(value) = object.get(field.name) else {
            continue;
        };
        let fits = match field.field_type {
            FieldType::String => value.is_string(),
            FieldType::Integer => value.is_u64() || value.is_i64(),
            FieldType::Boolean => value.is_boolean(),
            FieldType::StringList => value
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_string)),
            FieldType::Object => value.is_object(),
        };
        if !fits {
            return Err(ConnectorError::InvalidConfig {
                field: field.name.to_owned(),
                reason: format!("must be a {}, got {value}", field.field_type),
            });
        }
    }
    Ok(())
}
