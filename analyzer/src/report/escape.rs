//! Making text from the traffic safe to print.
//!
//! Request tags, routes, database names and SQL come from clients, and a
//! client can put anything in them: `\x1b[2J` clears the terminal that
//! shows a report or tails the log, BEL rings it, other escapes retitle
//! the window or fake output, and the bidi overrides (U+202A..U+202E,
//! U+2066..U+2069) reorder what a reviewer reads in a PR comment. So every
//! renderer shows such characters as visible escapes ([`for_terminal`]),
//! through [`escaped_report`], before any format-specific escaping (markdown
//! punctuation, XML entities) applies; and the proxy's log lines for
//! findings do the same. JSON keeps the data exact, escaped the JSON way
//! ([`json_invisibles`]).

use std::borrow::Cow;
use std::fmt::Write as _;

use super::Report;
use crate::finding::Finding;

/// Whether `c` must not reach a terminal or a rendered page as itself:
/// C0 controls, DEL, C1 controls, and the bidi embedding, override and
/// isolate characters. Line feed is one of them; [`for_terminal`] lets it
/// through where a line break is meant.
pub fn is_unsafe(c: char) -> bool {
    matches!(c, '\0'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every [`is_unsafe`] character except `\n` written as a
/// visible escape: `\t`, `\r`, `\x1b` for the other C0 controls and DEL,
/// `\u{85}` for C1 controls, `\u{202e}` for bidi controls. Text without
/// them comes back unchanged (and borrowed). For multi-line text (SQL,
/// suggestions); see [`for_terminal_line`] for one-line values.
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

/// [`for_terminal`] that also writes `\n` as an escape, for values that
/// must stay on one line (table cells, tags, log fields).
pub fn for_terminal_line(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

fn escape(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| is_unsafe(c) && !(keep_newlines && c == '\n');
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            c if !unsafe_char(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c <= '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    Cow::Owned(out)
}

/// A copy of `report` with every string that came from the store passed
/// through [`for_terminal`] (multi-line text) or [`for_terminal_line`]
/// (names, tags, ids): what every human-facing renderer draws from.
pub fn escaped_report(report: &Report) -> Report {
    let mut out = report.clone();
    for run in &mut out.runs {
        line(&mut run.instance);
        line(&mut run.host);
        line(&mut run.version);
        line(&mut run.summary.catalog);
    }
    line(&mut out.summary.catalog);
    for f in &mut out.findings {
        escape_finding(f);
    }
    out
}

fn escape_finding(f: &mut Finding) {
    line(&mut f.id);
    line(&mut f.fingerprint);
    text(&mut f.query);
    f.table.iter_mut().for_each(line);
    f.columns.iter_mut().for_each(line);
    if let Some(r) = &mut f.request {
        r.id.iter_mut().for_each(line);
        r.route.iter_mut().for_each(line);
        r.correlation.iter_mut().for_each(line);
    }
    if let Some(p) = &mut f.parent {
        line(&mut p.fingerprint);
        text(&mut p.query);
    }
    f.suggestion.iter_mut().for_each(text);
    f.database.iter_mut().for_each(line);
    let details = std::mem::take(&mut f.details);
    f.details = details
        .into_iter()
        .map(|(k, mut v)| {
            json_value(&mut v);
            (for_terminal_line(&k).into_owned(), v)
        })
        .collect();
}

fn json_value(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => text(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(json_value),
        serde_json::Value::Object(map) => {
            let entries = std::mem::take(map);
            *map = entries
                .into_iter()
                .map(|(k, mut v)| {
                    json_value(&mut v);
                    (for_terminal_line(&k).into_owned(), v)
                })
                .collect();
        }
        _ => {}
    }
}

fn line(s: &mut String) {
    if let Cow::Owned(escaped) = for_terminal_line(s) {
        *s = escaped;
    }
}

fn text(s: &mut String) {
    if let Cow::Owned(escaped) = for_terminal(s) {
        *s = escaped;
    }
}

/// `json` (serde_json output) with the characters serde_json leaves raw
/// but a terminal would act on (DEL, C1 controls, bidi controls) written
/// as `\uXXXX` escapes. Outside strings JSON is ASCII punctuation and
/// whitespace, so these can only be inside strings, where the escape
/// decodes to the very same character: the data is unchanged.
pub fn json_invisibles(json: String) -> String {
    if !json.chars().any(is_unsafe) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        // serde_json already escaped C0 controls inside strings; the raw
        // ones left are the newlines and indentation of pretty printing.
        if is_unsafe(c) && c > '\u{1f}' {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_become_visible_escapes() {
        assert_eq!(for_terminal("a\x1b[2Jb\x07"), "a\\x1b[2Jb\\x07");
        assert_eq!(for_terminal("x\u{202e}y\u{2066}"), "x\\u{202e}y\\u{2066}");
        assert_eq!(for_terminal("\u{85}\u{9b}\u{7f}"), "\\u{85}\\u{9b}\\x7f");
        assert_eq!(for_terminal("a\tb\r\nc"), "a\\tb\\r\nc");
        assert_eq!(for_terminal_line("a\nb"), "a\\nb");
        assert_eq!(for_terminal("\0"), "\\x00");
    }

    #[test]
    fn clean_text_is_borrowed_unchanged() {
        let s = "SELECT \"é\" FROM t WHERE a = $1 -- \\x1b ✓";
        assert!(matches!(for_terminal(s), Cow::Borrowed(x) if x == s));
        assert!(matches!(for_terminal_line(s), Cow::Borrowed(x) if x == s));
    }

    #[test]
    fn json_keeps_its_data_and_loses_its_invisibles() {
        let value = serde_json::json!({"route": "/a\u{202e}b\u{9b}c\u{7f}", "bell": "\u{7}"});
        let raw = serde_json::to_string_pretty(&value).unwrap();
        let safe = json_invisibles(raw);
        assert!(!safe.chars().any(|c| is_unsafe(c) && c != '\n'), "{safe}");
        assert!(
            safe.contains("\\u202e") && safe.contains("\\u009b"),
            "{safe}"
        );
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value);
    }
}
