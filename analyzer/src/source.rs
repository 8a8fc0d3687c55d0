//! Where in the application a statement was issued, as the tagging
//! libraries say it in their SQL comments.
//!
//! Three spellings are read (the keys are matched in
//! [`crate::correlation::tags`]):
//! - Rails 7.1+ `ActiveRecord::QueryLogs` `source_location`, and the
//!   marginalia gem's `line`: one backtrace line,
//!   `app/models/user.rb:12:in 'User#orders'` (Ruby before 3.4 quotes the
//!   method as `` `orders' ``; the `:in ...` part may be missing).
//! - OpenTelemetry's code attributes, as sqlcommenter integrations copy
//!   them: `code.filepath`, `code.lineno`, `code.function` (and the newer
//!   semantic-convention names `code.file.path`, `code.line.number`,
//!   `code.function.name`).
//!
//! A location is a hint for a person (and a SARIF code-scanning UI), never
//! part of a finding's identity: the same problem reached from two call
//! sites is one finding, shown with the location seen last.

use serde::{Deserialize, Serialize};

/// A place in the application's source: a file, and when known the line
/// and the function.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceLocation {
    /// The file as the application named it (usually relative to the
    /// application's root, e.g. `app/models/user.rb`).
    pub file: String,
    /// 1-based line number.
    pub line: Option<u64>,
    /// The function, method or block.
    pub function: Option<String>,
}

impl SourceLocation {
    /// Reads one backtrace line (Rails `source_location`, marginalia
    /// `line`): `FILE:LINE`, optionally followed by `:in 'FUNCTION'`.
    /// `None` when there is no `:LINE` after a non-empty file.
    pub fn from_backtrace_line(s: &str) -> Option<SourceLocation> {
        let s = s.trim();
        // The first `:<digits>` that ends the text or is followed by `:`
        // ends the file; a Windows drive (`C:/app`) has no digits there.
        let bytes = s.as_bytes();
        let mut search = 0;
        while let Some(colon) = s[search..].find(':').map(|i| search + i) {
            let digits = bytes[colon + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let after = colon + 1 + digits;
            if digits > 0 && (after == s.len() || bytes[after] == b':') {
                let file = s[..colon].trim();
                if file.is_empty() {
                    return None;
                }
                let line = s[colon + 1..after].parse().ok().filter(|n| *n > 0);
                let function = s[after..]
                    .strip_prefix(":in ")
                    .map(|f| f.trim().trim_matches(['\'', '`', '"']).trim())
                    .filter(|f| !f.is_empty())
                    .map(str::to_string);
                return Some(SourceLocation {
                    file: file.to_string(),
                    line,
                    function,
                });
            }
            search = colon + 1;
        }
        None
    }

    /// Builds a location from OpenTelemetry-style parts: a file is
    /// required; a line that is not a positive number is dropped.
    pub fn from_parts(
        file: &str,
        line: Option<&str>,
        function: Option<&str>,
    ) -> Option<SourceLocation> {
        let file = file.trim();
        if file.is_empty() {
            return None;
        }
        Some(SourceLocation {
            file: file.to_string(),
            line: line
                .and_then(|l| l.trim().parse::<u64>().ok())
                .filter(|n| *n > 0),
            function: function
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_string),
        })
    }
}

impl std::fmt::Display for SourceLocation {
    /// `file:line in function`, the parts that are known.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(function) = &self.function {
            write!(f, " in {function}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(file: &str, line: Option<u64>, function: Option<&str>) -> SourceLocation {
        SourceLocation {
            file: file.into(),
            line,
            function: function.map(Into::into),
        }
    }

    #[test]
    fn rails_and_marginalia_backtrace_lines() {
        // Ruby 3.4 quoting, with the class.
        assert_eq!(
            SourceLocation::from_backtrace_line("app/models/user.rb:12:in 'User#orders'"),
            Some(loc("app/models/user.rb", Some(12), Some("User#orders")))
        );
        // Ruby before 3.4: a backtick and a quote.
        assert_eq!(
            SourceLocation::from_backtrace_line(
                "/app/controllers/orders_controller.rb:7:in `block in index'"
            ),
            Some(loc(
                "/app/controllers/orders_controller.rb",
                Some(7),
                Some("block in index")
            ))
        );
        assert_eq!(
            SourceLocation::from_backtrace_line("lib/tasks/report.rake:3"),
            Some(loc("lib/tasks/report.rake", Some(3), None))
        );
        // A drive letter is part of the file.
        assert_eq!(
            SourceLocation::from_backtrace_line("C:/app/x.rb:9:in 'y'"),
            Some(loc("C:/app/x.rb", Some(9), Some("y")))
        );
        // A colon in a directory name that is not followed by digits.
        assert_eq!(
            SourceLocation::from_backtrace_line("app/a:b/c.rb:1"),
            Some(loc("app/a:b/c.rb", Some(1), None))
        );
    }

    #[test]
    fn backtrace_lines_without_a_line_number_are_not_locations() {
        for s in [
            "",
            "app/models/user.rb",
            ":12:in 'x'",
            "app/models/user.rb:x12",
            "app/x.rb:12abc",
        ] {
            assert_eq!(SourceLocation::from_backtrace_line(s), None, "{s:?}");
        }
        // Line 0 is no line; the file still is.
        assert_eq!(
            SourceLocation::from_backtrace_line("a.rb:0"),
            Some(loc("a.rb", None, None))
        );
    }

    #[test]
    fn opentelemetry_parts() {
        assert_eq!(
            SourceLocation::from_parts("src/orders.py", Some("42"), Some("list_orders")),
            Some(loc("src/orders.py", Some(42), Some("list_orders")))
        );
        assert_eq!(
            SourceLocation::from_parts("src/orders.py", Some("forty"), Some(" ")),
            Some(loc("src/orders.py", None, None))
        );
        assert_eq!(SourceLocation::from_parts(" ", Some("1"), None), None);
    }

    #[test]
    fn displays_the_known_parts() {
        assert_eq!(loc("a.rb", Some(3), Some("x")).to_string(), "a.rb:3 in x");
        assert_eq!(loc("a.rb", None, None).to_string(), "a.rb");
    }
}
