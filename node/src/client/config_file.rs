//! Connector configs given as files (`--source-config-file`, `--sink-config-file`): JSON, or
//! YAML as `pulsar-admin` users keep them.
//!
//! JSON (a `.json` file, or text that starts with `{`) goes to the node as it is, so the node's
//! own errors name what is wrong with it. Anything else is read as YAML 1.2 and sent as the
//! equivalent JSON object; a YAML error names the file, line and column. Plain scalars keep
//! their YAML 1.2 meaning (`yes`, `on` and `y` stay strings), and numbers spelled `0755` or
//! `1_000` stay strings rather than turning into a number nobody wrote.

use std::path::Path;

use serde_json::Value;
use serde_saphyr::MessageFormatter;

/// Why a config file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is not valid YAML.
    #[error("{path}:{line}:{column}: {reason}")]
    Yaml {
        /// The file.
        path: String,
        /// 1-based line of the problem.
        line: u64,
        /// 1-based column of the problem.
        column: u64,
        /// What is wrong there.
        reason: String,
    },
    /// The file holds YAML, but not a mapping of field names to values.
    #[error("{path}: the config must be a mapping of field names to values, not {found}")]
    NotAMapping {
        /// The file.
        path: String,
        /// What it holds instead.
        found: &'static str,
    },
}

/// Returns the config held in the file at `path` as the JSON text the admin API takes.
pub fn read(path: &Path) -> Result<String, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigFileError::Unreadable {
        path: path.display().to_string(),
        reason: error.to_string(),
    })?;
    to_json(path, &text)
}

/// Returns `text`, read from `path`, as the JSON text the admin API takes.
pub fn to_json(path: &Path, text: &str) -> Result<String, ConfigFileError> {
    if is_json(path, text) {
        return Ok(text.to_owned());
    }
    let options = serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        with_snippet: false,
    };
    let value: Value = serde_saphyr::from_str_with_options(text, options).map_err(|error| {
        let location = error.location();
        ConfigFileError::Yaml {
            path: path.display().to_string(),
            line: location.map_or(1, |location| location.line()),
            column: location.map_or(1, |location| location.column()),
            reason: serde_saphyr::UserMessageFormatter
                .format_message(&error)
                .into_owned(),
        }
    })?;
    let found = match value {
        // A file of comments only sets nothing: the type's defaults apply.
        Value::Null => return Ok("{}".to_owned()),
        Value::Object(_) => return Ok(value.to_string()),
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
    };
    Err(ConfigFileError::NotAMapping {
        path: path.display().to_string(),
        found,
    })
}

/// Returns whether the file is JSON: named `.json`, or starting with `{`.
fn is_json(path: &Path, text: &str) -> bool {
    let json_name = path
        .extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| extension.eq_ignore_ascii_case("json"));
    json_name
        || text
            .trim_start_matches('\u{feff}')
            .trim_start()
            .starts_with('{')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<Value, ConfigFileError> {
        to_json(Path::new("conf/source.yaml"), text)
            .map(|json| serde_json::from_str(&json).expect("the converted config is JSON"))
    }

    #[test]
    fn a_yaml_mapping_becomes_the_same_json_object() {
        let config = yaml(
            "# datagen\n\
             count: 1000\n\
             seed: 7\n\
             rate: 2.5\n\
             enabled: true\n\
             name: \"gen\"\n\
             tags: [a, b]\n\
             nested:\n  key: value\n\
             password: env:DB_PASSWORD\n\
             empty: null\n",
        )
        .expect("valid");
        assert_eq!(
            config,
            serde_json::json!({
                "count": 1000,
                "seed": 7,
                "rate": 2.5,
                "enabled": true,
                "name": "gen",
                "tags": ["a", "b"],
                "nested": {"key": "value"},
                "password": "env:DB_PASSWORD",
                "empty": null,
            })
        );
    }

    #[test]
    fn yaml_scalars_keep_their_yaml_1_2_meaning() {
        let config =
            yaml("a: yes\nb: on\nc: y\nd: 0755\ne: 1_000\nf: 'true'\ng: 0x1F\n").expect("valid");
        assert_eq!(
            config,
            serde_json::json!({
                "a": "yes", "b": "on", "c": "y", "d": "0755", "e": "1_000", "f": "true", "g": 31,
            })
        );
    }

    #[test]
    fn a_yaml_file_of_comments_only_sets_nothing() {
        assert_eq!(yaml("# nothing set yet\n"), Ok(serde_json::json!({})));
        assert_eq!(yaml(""), Ok(serde_json::json!({})));
    }

    #[test]
    fn yaml_errors_name_the_file_line_and_column() {
        let cases = [
            (
                "count: 1\n seed: [7\n",
                2,
                6,
                "mapping values are not allowed in this context",
            ),
            (
                "count: 1\ncount: 2\n",
                2,
                1,
                "duplicate mapping key `count` is not allowed here",
            ),
            ("path: \"unterminated\n", 1, 7, "unclosed quote"),
            ("rate: .nan\n", 1, 7, "value `.nan` is not a finite number"),
            (
                "count: 1\n---\nseed: 2\n",
                3,
                1,
                "only single YAML document expected but multiple found",
            ),
        ];
        for (text, line, column, reason) in cases {
            let error = yaml(text).expect_err(text);
            assert_eq!(
                error,
                ConfigFileError::Yaml {
                    path: "conf/source.yaml".to_owned(),
                    line,
                    column,
                    reason: reason.to_owned(),
                },
                "{text:?}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("conf/source.yaml:{line}:{column}: ")),
                "{error}"
            );
        }
    }

    #[test]
    fn a_yaml_document_that_is_not_a_mapping_is_refused() {
        assert_eq!(
            yaml("- count\n- seed\n")
                .expect_err("a sequence")
                .to_string(),
            "conf/source.yaml: the config must be a mapping of field names to values, not a \
             sequence"
        );
        assert!(matches!(
            yaml("just words\n"),
            Err(ConfigFileError::NotAMapping {
                found: "a string",
                ..
            })
        ));
    }

    #[test]
    fn json_goes_to_the_node_as_it_is() {
        // The node names what is wrong with JSON (here the missing value), so it gets the text
        // unchanged, whatever the file is called.
        let broken = "{\"count\": }";
        assert_eq!(
            to_json(Path::new("source.yaml"), broken),
            Ok(broken.to_owned())
        );
        let indented = "\u{feff}\n  {\"count\": 1}\n";
        assert_eq!(
            to_json(Path::new("conf"), indented),
            Ok(indented.to_owned())
        );
        let list = "[1, 2]";
        assert_eq!(to_json(Path::new("source.JSON"), list), Ok(list.to_owned()));
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let error = read(Path::new("/nonexistent/ferry/source.yaml")).expect_err("missing");
        assert!(
            error
                .to_string()
                .starts_with("cannot read /nonexistent/ferry/source.yaml: "),
            "{error}"
        );
    }
}
