//! Built-in connectors, one folder each, each behind a cargo feature of the same name (all on
//! by default). Adding one is its folder plus one line in [`builtin!`]'s list below (and its
//! feature in `actors/Cargo.toml`); `README.md` in this folder shows how.
//!
//! - `blackhole`: a sink that counts records and drops them (benchmarks).
//! - `datagen`: deterministic generated records (replayable), the workhorse for tests, demos
//!   and benchmarks.
//! - `file`: a source following the lines of files matching a pattern (replayable) and a sink
//!   appending lines to a file (idempotent).
//! - `postgres`: a sink writing JSON records as rows of a PostgreSQL table, with the input
//!   position in the same transaction (transactional, effectively-once).

use std::sync::OnceLock;

use crate::api::ConnectorError;
use crate::api::registry::Registry;

/// Declares the built-in connectors: for each, its module (behind its feature) and the
/// factories it registers.
macro_rules! builtin {
    ($($feature:literal $module:ident => [$($kind:ident $factory:path),+];)+) => {
        $(
            #[cfg(feature = $feature)]
            pub mod $module;
        )+

        /// Returns a registry of every built-in connector type compiled in.
        pub fn builtin() -> Registry {
            #[allow(unused_mut)] // With no connector feature on, nothing is registered.
            let mut registry = Registry::default();
            $(
                #[cfg(feature = $feature)]
                {
                    $(registry.$kind::<$factory>();)+
                }
            )+
            registry
        }
    };
}

builtin! {
    "blackhole" blackhole => [sink blackhole::Blackhole];
    "datagen" datagen => [source datagen::Datagen];
    "file" file => [source file::FileSourceType, sink file::FileSinkType];
    "postgres" postgres => [sink postgres::Postgres];
}

static INSTALLED: OnceLock<Registry> = OnceLock::new();

/// Installs the registry this process uses (a `ferry` build with connectors of its own), before
/// anything asks for [`registry`]. Fails, giving it back, when one is in use already.
pub fn install(registry: Registry) -> Result<(), Registry> {
    INSTALLED.set(registry)
}

/// Returns the registry this process uses: the installed one, else [`builtin`].
pub fn registry() -> &'static Registry {
    INSTALLED.get_or_init(builtin)
}

/// Decodes a position that is one number, 8 bytes big-endian, written by the `connector` type.
#[allow(dead_code)] // Unused when only some connectors are compiled in.
pub(crate) fn decode_u64_position(connector: &str, position: &[u8]) -> Result<u64, ConnectorError> {
    let bytes: [u8; 8] = position.try_into().map_err(|_| {
        ConnectorError::InvalidPosition(format!(
            "a {connector} position is 8 bytes, got {}",
            position.len()
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Kind;

    #[test]
    fn every_builtin_type_documents_itself_and_every_field() {
        for connector_type in registry().types() {
            assert!(
                !connector_type.description().is_empty(),
                "{} {}",
                connector_type.kind,
                connector_type.name
            );
            for field in &connector_type.definition.fields {
                assert!(
                    !field.description.is_empty(),
                    "{}.{}",
                    connector_type.name,
                    field.name
                );
            }
        }
    }

    #[test]
    fn types_are_found_by_name_and_pulsar_alias_and_wrong_kinds_name_the_field() {
        let registry = registry();
        assert_eq!(
            registry
                .find(Kind::Sink, "jdbc-postgres")
                .expect("alias")
                .name,
            "postgres"
        );
        assert_eq!(
            registry
                .find(Kind::Source, "data-generator")
                .expect("alias")
                .name,
            "datagen"
        );
        let error = registry.find(Kind::Source, "nope").expect_err("unknown");
        assert!(error.to_string().contains("source_type"), "{error}");
        assert!(error.to_string().contains("datagen"), "{error}");
        let error = registry
            .find(Kind::Sink, "datagen")
            .expect_err("a source type");
        assert!(error.to_string().contains("sink_type"), "{error}");
    }

    #[test]
    fn pulsar_config_keys_are_accepted_as_aliases() {
        let postgres = registry()
            .find(Kind::Sink, "jdbc-postgres")
            .expect("postgres");
        let serde_json::Value::Object(config) = serde_json::json!({
            "jdbcUrl": "jdbc:postgresql://127.0.0.1:5432/ferry",
            "userName": "ferry",
            "password": "env:PGPASSWORD",
            "tableName": "events",
            "insertMode": "UPSERT",
            "key": "id",
            "batchSize": 10,
        }) else {
            panic!("an object");
        };
        let canonical = postgres
            .validate(
                &config,
                &crate::api::registry::InstanceContext::single("t/n/c"),
            )
            .expect("valid");
        let keys: Vec<&str> = canonical.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "batch_size",
                "key_column",
                "mode",
                "password",
                "table",
                "url",
                "user"
            ]
        );
        assert_eq!(canonical["mode"], "upsert");
    }
}
