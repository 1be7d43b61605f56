//! Connector configs: one typed struct per connector is the whole definition.
//!
//! A connector's config struct derives `Deserialize` (with `deny_unknown_fields`) and
//! [`schemars::JsonSchema`]; its doc comments are the field docs. From the JSON Schema of that
//! struct this module derives everything else, so nothing is written twice:
//!
//! - the config definition that `available-sources|sinks` and `config-definition` print
//!   ([`ConfigDefinition`]: name, type, default, required, secret, description, aliases);
//! - validation of a user's JSON object ([`ConfigDefinition::check`]): unknown keys, wrong
//!   types and missing fields, each error naming the field, then serde and the config's own
//!   [`ConnectorConfig::validate`] for ranges;
//! - the redacted view ([`ConfigDefinition::redact`]): secret fields as `***`.
//!
//! A field is secret when its type is [`Secret`] (its schema says `writeOnly`). Pulsar IO's key
//! names are accepted as aliases declared next to the field:
//! `#[schemars(extend("x-aliases" = ["tableName"]))]`; [`ConfigDefinition::check`] renames an
//! alias to the field's own name before anything else sees it.

use std::borrow::Cow;
use std::fmt;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::ConnectorError;

/// What secret values look like in every output.
pub const REDACTED: &str = "***";

/// A connector's typed config: deserialized from the user's JSON object after the generic
/// checks, then validated for what types cannot say (ranges, combinations).
pub trait ConnectorConfig: DeserializeOwned + JsonSchema + fmt::Debug + Send + 'static {
    /// Checks what serde does not (ranges, combinations of fields), naming the field.
    fn validate(&self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// A password, token or key: accepted in a config, never shown back, never logged.
///
/// `Debug`, `Display` and serialization print `***`. The value may be a reference, `env:NAME`
/// or `file:/path`, that [`Secret::resolve`] reads on the node that runs the instance.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Returns a secret holding `value` (a value or an `env:`/`file:` reference).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the value as given: a value or a reference. For storage only.
    pub fn as_given(&self) -> &str {
        &self.0
    }

    /// Returns the value, reading an `env:NAME` or `file:/path` reference on this node. The
    /// error names `field` and the reference, never a value.
    pub fn resolve(&self, field: &str) -> Result<String, ConnectorError> {
        resolve_secret(field, &self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Secret")
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // `writeOnly` is JSON Schema's word for "accepted, never returned".
        schemars::json_schema!({"type": "string", "writeOnly": true})
    }
}

/// Resolves a secret value: `env:NAME` reads the environment variable `NAME`, `file:/path`
/// reads the file (without a trailing newline); anything else is the value itself. The error
/// names `field` and the reference, never a value.
pub fn resolve_secret(field: &str, value: &str) -> Result<String, ConnectorError> {
    if let Some(name) = value.strip_prefix("env:") {
        return std::env::var(name).map_err(|_| ConnectorError::InvalidConfig {
            field: field.to_owned(),
            reason: format!("environment variable {name} is not set on this node"),
        });
    }
    if let Some(path) = value.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|error| ConnectorError::InvalidConfig {
                field: field.to_owned(),
                reason: format!("cannot read secret file {path}: {error}"),
            });
    }
    Ok(value.to_owned())
}

/// The JSON type a config field takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// A string; `choices` lists the allowed values when the field is an enumeration.
    String {
        /// The allowed values (empty: any string).
        choices: Vec<String>,
    },
    /// A whole number, at least `minimum` when given.
    Integer {
        /// The smallest allowed value.
        minimum: Option<i64>,
    },
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A list of values of one type.
    List(Box<FieldType>),
    /// An object.
    Object,
    /// Anything JSON.
    Any,
}

impl FieldType {
    fn from_schema(schema: &Map<String, Value>) -> Self {
        // An enum whose variants have docs is oneOf [{const}, …]; an Option of anything is
        // anyOf [it, null].
        if let Some(branches) = schema
            .get("oneOf")
            .or_else(|| schema.get("anyOf"))
            .and_then(Value::as_array)
        {
            let branches: Vec<&Map<String, Value>> = branches
                .iter()
                .filter_map(Value::as_object)
                .filter(|branch| branch.get("type") != Some(&Value::String("null".to_owned())))
                .collect();
            let constants: Vec<String> = branches
                .iter()
                .filter_map(|branch| branch.get("const").and_then(Value::as_str))
                .map(str::to_owned)
                .collect();
            if !constants.is_empty() && constants.len() == branches.len() {
                return Self::String { choices: constants };
            }
            if let [only] = branches.as_slice() {
                return Self::from_schema(only);
            }
            return Self::Any;
        }
        if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
            return Self::String {
                choices: choices
                    .iter()
                    .filter_map(|choice| choice.as_str().map(str::to_owned))
                    .collect(),
            };
        }
        let type_name = match schema.get("type") {
            Some(Value::String(name)) => name.as_str(),
            // `Option<T>` gives ["T", "null"].
            Some(Value::Array(names)) => names
                .iter()
                .filter_map(Value::as_str)
                .find(|name| *name != "null")
                .unwrap_or("null"),
            _ => "",
        };
        match type_name {
            "string" => Self::String {
                choices: Vec::new(),
            },
            "integer" => Self::Integer {
                minimum: schema.get("minimum").and_then(Value::as_i64),
            },
            "number" => Self::Number,
            "boolean" => Self::Boolean,
            "array" => Self::List(Box::new(
                schema
                    .get("items")
                    .and_then(Value::as_object)
                    .map_or(Self::Any, Self::from_schema),
            )),
            "object" => Self::Object,
            _ => Self::Any,
        }
    }

    /// Whether `value` has this type (null is never accepted: absent fields are left out).
    pub fn accepts(&self, value: &Value) -> bool {
        match self {
            Self::String { choices } => value
                .as_str()
                .is_some_and(|text| choices.is_empty() || self.choice(text).is_some()),
            Self::Integer { minimum } => match (value.as_i64(), value.is_u64()) {
                (Some(number), _) => minimum.is_none_or(|least| number >= least),
                // Above i64::MAX: a whole number above any minimum.
                (None, above) => above,
            },
            Self::Number => value.is_number(),
            Self::Boolean => value.is_boolean(),
            Self::List(item) => value
                .as_array()
                .is_some_and(|items| items.iter().all(|each| item.accepts(each))),
            Self::Object => value.is_object(),
            Self::Any => !value.is_null(),
        }
    }

    /// The allowed value `text` names, ignoring case (Pulsar IO writes `UPSERT` where Ferry
    /// writes `upsert`).
    fn choice(&self, text: &str) -> Option<&str> {
        match self {
            Self::String { choices } => choices
                .iter()
                .find(|choice| choice.eq_ignore_ascii_case(text))
                .map(String::as_str),
            _ => None,
        }
    }

    /// The phrase an error uses: "a string", "a whole number of at least 0", …
    pub fn phrase(&self) -> String {
        match self {
            Self::String { choices } if choices.is_empty() => "a string".to_owned(),
            Self::String { choices } => format!("one of {}", choices.join(", ")),
            Self::Integer { minimum: Some(0) } => "a whole number of at least 0".to_owned(),
            Self::Integer { minimum: Some(m) } => format!("a whole number of at least {m}"),
            Self::Integer { minimum: None } => "a whole number".to_owned(),
            Self::Number => "a number".to_owned(),
            Self::Boolean => "true or false".to_owned(),
            Self::List(item) => format!("a list of {}", item.plural()),
            Self::Object => "an object".to_owned(),
            Self::Any => "a value".to_owned(),
        }
    }

    fn plural(&self) -> String {
        match self {
            Self::String { .. } => "strings".to_owned(),
            Self::Integer { .. } => "whole numbers".to_owned(),
            Self::Number => "numbers".to_owned(),
            Self::Boolean => "booleans".to_owned(),
            Self::List(_) => "lists".to_owned(),
            Self::Object => "objects".to_owned(),
            Self::Any => "values".to_owned(),
        }
    }
}

impl fmt::Display for FieldType {
    /// Writes the short name the config definition shows: `string`, `integer`, `list of
    /// strings`, `string (insert|upsert)`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String { choices } if choices.is_empty() => formatter.write_str("string"),
            Self::String { choices } => write!(formatter, "string ({})", choices.join("|")),
            Self::Integer { .. } => formatter.write_str("integer"),
            Self::Number => formatter.write_str("number"),
            Self::Boolean => formatter.write_str("boolean"),
            Self::List(item) => write!(formatter, "list of {}", item.plural()),
            Self::Object => formatter.write_str("object"),
            Self::Any => formatter.write_str("any"),
        }
    }
}

/// One documented config field, derived from the config struct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigField {
    /// The key in the config object.
    pub name: String,
    /// Other keys accepted for it (Pulsar IO's names).
    pub aliases: Vec<String>,
    /// Its JSON type.
    pub field_type: FieldType,
    /// Whether it must be given.
    pub required: bool,
    /// The value used when absent, as JSON text (none when absent means "not set").
    pub default: Option<String>,
    /// A password or token: accepted, never shown back, never logged.
    pub secret: bool,
    /// What it does (the field's doc comment).
    pub description: String,
}

/// A connector type's config definition, derived from its config struct's JSON Schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDefinition {
    /// The config struct's doc comment: what the connector does.
    pub description: String,
    /// The fields, by name.
    pub fields: Vec<ConfigField>,
}

impl ConfigDefinition {
    /// Derives the definition of config struct `C`.
    pub fn of<C: JsonSchema>() -> Self {
        let schema = SchemaSettings::draft2020_12()
            .with(|settings| settings.inline_subschemas = true)
            .into_generator()
            .into_root_schema_for::<C>();
        Self::from_schema(schema.as_value())
    }

    fn from_schema(schema: &Value) -> Self {
        let empty = Map::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let fields = properties
            .iter()
            .map(|(name, property)| {
                let property = property.as_object().unwrap_or(&empty);
                let default = property
                    .get("default")
                    .filter(|value| !value.is_null())
                    .map(Value::to_string);
                ConfigField {
                    name: name.clone(),
                    aliases: property
                        .get("x-aliases")
                        .and_then(Value::as_array)
                        .map(|names| {
                            names
                                .iter()
                                .filter_map(|alias| alias.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                    field_type: FieldType::from_schema(property),
                    required: required.contains(&name.as_str()),
                    default,
                    secret: property.get("writeOnly") == Some(&Value::Bool(true)),
                    description: first_paragraph(
                        property.get("description").and_then(Value::as_str),
                    ),
                }
            })
            .collect();
        Self {
            description: first_paragraph(schema.get("description").and_then(Value::as_str)),
            fields,
        }
    }

    /// Returns the field named `name` (or aliased so).
    pub fn field(&self, name: &str) -> Option<&ConfigField> {
        self.fields
            .iter()
            .find(|field| field.name == name || field.aliases.iter().any(|alias| alias == name))
    }

    /// Checks `config` (a user's JSON object) without building anything and returns it with
    /// aliases renamed to the fields' own names and nulls dropped: unknown keys, a field given
    /// twice (by its name and an alias), wrong types and missing required fields, each error
    /// naming the field.
    pub fn check(&self, config: &Map<String, Value>) -> Result<Map<String, Value>, ConnectorError> {
        let mut canonical = Map::new();
        for (key, value) in config {
            if value.is_null() {
                continue;
            }
            let field = self
                .field(key)
                .ok_or_else(|| ConnectorError::InvalidConfig {
                    field: key.clone(),
                    reason: format!("unknown field (fields: {})", self.names().join(", ")),
                })?;
            if canonical.contains_key(&field.name) {
                return Err(ConnectorError::InvalidConfig {
                    field: field.name.clone(),
                    reason: format!("is given twice (as {} and {key})", field.name),
                });
            }
            if !field.field_type.accepts(value) {
                return Err(ConnectorError::InvalidConfig {
                    field: key.clone(),
                    reason: format!(
                        "must be {}, not {}",
                        field.field_type.phrase(),
                        json_kind(value)
                    ),
                });
            }
            let value = match (
                field.field_type.choice(value.as_str().unwrap_or_default()),
                value,
            ) {
                (Some(choice), Value::String(_)) => Value::String(choice.to_owned()),
                (_, value) => value.clone(),
            };
            canonical.insert(field.name.clone(), value);
        }
        if let Some(missing) = self
            .fields
            .iter()
            .find(|field| field.required && !canonical.contains_key(&field.name))
        {
            return Err(ConnectorError::InvalidConfig {
                field: missing.name.clone(),
                reason: "is required".to_owned(),
            });
        }
        Ok(canonical)
    }

    /// Checks `config` and parses it into `C`, then runs `C`'s own validation.
    pub fn parse<C: ConnectorConfig>(
        &self,
        config: &Map<String, Value>,
    ) -> Result<C, ConnectorError> {
        let canonical = self.check(config)?;
        let parsed: C =
            serde_path_to_error::deserialize(Value::Object(canonical)).map_err(|error| {
                let path = error.path().to_string();
                ConnectorError::InvalidConfig {
                    field: if path == "." {
                        "config".to_owned()
                    } else {
                        path
                    },
                    reason: error.into_inner().to_string(),
                }
            })?;
        parsed.validate()?;
        Ok(parsed)
    }

    /// Returns `config` with every secret field's value replaced by `***`.
    pub fn redact(&self, config: &Map<String, Value>) -> Map<String, Value> {
        config
            .iter()
            .map(|(key, value)| {
                let secret = self.field(key).is_some_and(|field| field.secret);
                let shown = if secret {
                    Value::String(REDACTED.to_owned())
                } else {
                    value.clone()
                };
                (key.clone(), shown)
            })
            .collect()
    }

    /// The fields' names.
    pub fn names(&self) -> Vec<&str> {
        self.fields
            .iter()
            .map(|field| field.name.as_str())
            .collect()
    }
}

/// The first paragraph of a doc comment, on one line.
fn first_paragraph(text: Option<&str>) -> String {
    text.unwrap_or_default()
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Names the JSON kind of `value` for an error: "a string", "an array", …
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(number) if number.is_f64() => "a fractional number",
        Value::Number(number) if number.is_i64() && number.as_i64() < Some(0) => {
            "a negative number"
        }
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    /// Writes rows somewhere.
    ///
    /// More detail that the definition leaves out.
    #[derive(Debug, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // Some fields are only looked at through the schema.
    struct Example {
        /// The table.
        #[schemars(extend("x-aliases" = ["tableName"]))]
        table: String,
        /// How many; absent means endless.
        #[serde(default)]
        count: Option<u64>,
        /// Size of each value.
        #[serde(default = "hundred")]
        size: u32,
        /// The password.
        password: Secret,
        /// How rows are written.
        #[serde(default)]
        mode: Mode,
        /// Column per JSON field.
        #[serde(default)]
        columns: BTreeMap<String, String>,
        /// Hosts.
        #[serde(default)]
        hosts: Vec<String>,
    }

    #[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        #[default]
        Insert,
        Upsert,
    }

    fn hundred() -> u32 {
        100
    }

    impl ConnectorConfig for Example {
        fn validate(&self) -> Result<(), ConnectorError> {
            if self.size == 0 {
                return Err(ConnectorError::InvalidConfig {
                    field: "size".to_owned(),
                    reason: "must be above zero".to_owned(),
                });
            }
            Ok(())
        }
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(object) => object,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn the_definition_comes_from_the_struct() {
        let definition = ConfigDefinition::of::<Example>();
        assert_eq!(definition.description, "Writes rows somewhere.");
        let table = definition.field("table").expect("table");
        assert!(table.required && !table.secret);
        assert_eq!(table.aliases, vec!["tableName".to_owned()]);
        assert_eq!(table.description, "The table.");
        let count = definition.field("count").expect("count");
        assert!(!count.required);
        assert_eq!(count.default, None);
        assert_eq!(count.field_type.to_string(), "integer");
        let size = definition.field("size").expect("size");
        assert_eq!(size.default.as_deref(), Some("100"));
        assert!(definition.field("password").expect("password").secret);
        let mode = definition.field("mode").expect("mode");
        assert_eq!(mode.field_type.to_string(), "string (insert|upsert)");
        assert_eq!(mode.default.as_deref(), Some("\"insert\""));
        assert_eq!(
            definition
                .field("hosts")
                .expect("hosts")
                .field_type
                .to_string(),
            "list of strings"
        );
        assert_eq!(
            definition.field("columns").expect("c").field_type,
            FieldType::Object
        );
    }

    #[test]
    fn each_refusal_names_its_field() {
        let definition = ConfigDefinition::of::<Example>();
        let cases = [
            (json!({"password": "p"}), "table", "is required"),
            (json!({"table": "t"}), "password", "is required"),
            (
                json!({"table": "t", "password": "p", "bogus": 1}),
                "bogus",
                "unknown field",
            ),
            (
                json!({"table": 1, "password": "p"}),
                "table",
                "must be a string",
            ),
            (
                json!({"table": "t", "password": "p", "count": -1}),
                "count",
                "at least 0",
            ),
            (
                json!({"table": "t", "password": "p", "count": 1.5}),
                "count",
                "whole number",
            ),
            (
                json!({"table": "t", "password": "p", "mode": "merge"}),
                "mode",
                "insert, upsert",
            ),
            (
                json!({"table": "t", "password": "p", "hosts": [1]}),
                "hosts",
                "list of strings",
            ),
            (
                json!({"table": "t", "tableName": "u", "password": "p"}),
                "table",
                "twice",
            ),
            (
                json!({"table": "t", "password": "p", "size": 0}),
                "size",
                "above zero",
            ),
            // Past the generic checks, serde still names the field (u32 overflow).
            (
                json!({"table": "t", "password": "p", "size": 5_000_000_000_u64}),
                "size",
                "",
            ),
        ];
        for (config, field, reason) in cases {
            let error = definition
                .parse::<Example>(&object(config.clone()))
                .expect_err(&config.to_string());
            let ConnectorError::InvalidConfig {
                field: named,
                reason: why,
            } = &error
            else {
                panic!("{error}");
            };
            assert_eq!(named, field, "{config}: {error}");
            assert!(why.contains(reason), "{config}: {error}");
        }
    }

    #[test]
    fn aliases_become_the_fields_own_names_and_secrets_are_redacted() {
        let definition = ConfigDefinition::of::<Example>();
        let config = object(json!({"tableName": "t", "password": "hunter2", "count": null}));
        let canonical = definition.check(&config).expect("valid");
        assert_eq!(
            Value::Object(canonical.clone()),
            json!({"table": "t", "password": "hunter2"})
        );
        let parsed: Example = definition.parse(&config).expect("valid");
        assert_eq!(parsed.table, "t");
        assert_eq!(parsed.size, 100);
        assert_eq!(format!("{:?}", parsed.password), "***");
        assert_eq!(parsed.password.to_string(), "***");
        assert_eq!(
            serde_json::to_string(&parsed.password).expect("json"),
            "\"***\""
        );
        assert!(!format!("{parsed:?}").contains("hunter2"));
        assert_eq!(
            parsed.password.resolve("password").expect("plain"),
            "hunter2"
        );
        assert_eq!(
            Value::Object(definition.redact(&canonical)),
            json!({"table": "t", "password": "***"})
        );
    }

    #[test]
    fn secret_references_resolve_from_files_and_the_environment() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").expect("write");
        let secret = Secret::new(format!("file:{}", path.display()));
        assert_eq!(secret.resolve("password").expect("file"), "s3cret");
        let error = Secret::new("env:FERRY_SURELY_UNSET_VARIABLE")
            .resolve("password")
            .expect_err("unset");
        assert!(error.to_string().contains("password"), "{error}");
        assert!(
            error.to_string().contains("FERRY_SURELY_UNSET_VARIABLE"),
            "{error}"
        );
    }
}
