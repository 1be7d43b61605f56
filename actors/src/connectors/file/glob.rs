//! The file-name pattern of a `file` source: `*` and `?` in the last path component only.
//!
//! A tiny matcher instead of a crate: the source lists one directory and matches names, so it
//! needs neither recursion nor character classes, and its behaviour stays small enough to
//! document in one line.

use std::path::{Path, PathBuf};

use crate::api::ConnectorError;

/// A directory and a pattern over the names of the files in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileGlob {
    directory: PathBuf,
    pattern: String,
}

impl FileGlob {
    /// Parses `path_glob`: a literal directory, then a file-name pattern where `*` matches any
    /// run of characters and `?` any one. Wildcards in the directory are refused, naming
    /// `field`.
    pub fn parse(field: &str, path_glob: &str) -> Result<Self, ConnectorError> {
        let invalid = |reason: String| ConnectorError::InvalidConfig {
            field: field.to_owned(),
            reason,
        };
        let path = Path::new(path_glob);
        let pattern = path
            .file_name()
            .and_then(|name| name.to_str())
            .filter(|name| !name.is_empty())
            .ok_or_else(|| invalid(format!("{path_glob:?} does not end in a file-name pattern")))?;
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if directory.to_string_lossy().contains(['*', '?']) {
            return Err(invalid(format!(
                "{path_glob:?}: wildcards are allowed in the file name only, not in the directory"
            )));
        }
        Ok(Self {
            directory,
            pattern: pattern.to_owned(),
        })
    }

    /// The directory whose files are matched.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Returns whether the file name `name` matches. As in a shell, a name starting with `.`
    /// (editor swap files, hidden files) matches only a pattern that starts with `.`.
    pub fn matches(&self, name: &str) -> bool {
        if name.starts_with('.') && !self.pattern.starts_with('.') {
            return false;
        }
        wildcard_match(&self.pattern, name)
    }
}

/// Matches `text` against `pattern` (`*`: any run, `?`: any one character), iteratively with
/// backtracking to the last `*`, so the cost stays linear-ish instead of exponential.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    let (mut pattern_at, mut text_at) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while text_at < text.len() {
        match pattern.get(pattern_at) {
            Some('*') => {
                last_star = Some((pattern_at, text_at));
                pattern_at += 1;
            }
            Some(&expected) if expected == '?' || expected == text[text_at] => {
                pattern_at += 1;
                text_at += 1;
            }
            _ => match last_star {
                // Let the last `*` swallow one more character and try again from there.
                Some((star_at, star_text_at)) => {
                    pattern_at = star_at + 1;
                    text_at = star_text_at + 1;
                    last_star = Some((star_at, star_text_at + 1));
                }
                None => return false,
            },
        }
    }
    pattern[pattern_at..]
        .iter()
        .all(|&remaining| remaining == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_question_marks_match_file_names() {
        let glob = FileGlob::parse("path_glob", "/data/in/app-*.log").expect("valid");
        assert_eq!(glob.directory(), Path::new("/data/in"));
        assert!(glob.matches("app-1.log"));
        assert!(glob.matches("app-.log"));
        assert!(glob.matches("app-2024-01-01.log"));
        assert!(!glob.matches("app-1.log.gz"));
        assert!(!glob.matches("other-1.log"));
        let glob = FileGlob::parse("path_glob", "x?y*z*").expect("valid");
        assert_eq!(glob.directory(), Path::new("."));
        assert!(glob.matches("xAyzz"));
        assert!(glob.matches("x-y-z"));
        assert!(!glob.matches("xy-z"));
        assert!(!glob.matches("xAy"));
    }

    #[test]
    fn hidden_files_match_only_a_pattern_starting_with_a_dot() {
        let glob = FileGlob::parse("path_glob", "/d/*").expect("valid");
        assert!(glob.matches("a.log"));
        assert!(!glob.matches(".a.log.swp"));
        let glob = FileGlob::parse("path_glob", "/d/.*").expect("valid");
        assert!(glob.matches(".a.log.swp"));
    }

    #[test]
    fn wildcards_in_the_directory_and_missing_names_are_refused() {
        let error = FileGlob::parse("path_glob", "/data/*/x.log").expect_err("directory glob");
        assert!(
            matches!(&error, ConnectorError::InvalidConfig { field, .. } if field == "path_glob"),
            "{error}"
        );
        assert!(FileGlob::parse("path_glob", "/").is_err());
        assert!(FileGlob::parse("path_glob", "").is_err());
    }
}
