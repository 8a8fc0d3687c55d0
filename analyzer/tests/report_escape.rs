//! Reports are safe to print: whatever a client puts in its tags or SQL
//! (terminal escapes, BEL, C1 controls, bidi overrides), no human-facing
//! format carries it raw, XML formats stay well-formed, and JSON keeps
//! the exact data. Properties of [`escape::for_terminal`] itself, then of
//! every renderer over arbitrary hostile strings, then one pinned example.

mod store_support;

use proptest::prelude::*;
use qproxy_analyzer::report::escape::{self, for_terminal, for_terminal_line, is_unsafe};
use qproxy_analyzer::report::{self, Format, RenderOptions, Report};
use store_support::*;

/// Strings rich in what must not reach a terminal, mixed with markup and
/// ordinary text.
fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\u{1b}[2J".to_string()),
        Just("\u{7}".to_string()),
        Just("\u{1b}]0;pwned\u{7}".to_string()),
        Just("\u{9b}31m".to_string()),
        Just("\u{202e}".to_string()),
        Just("\u{2066}".to_string()),
        Just("\r\n\t\0\u{7f}".to_string()),
        Just("<|`*_&>".to_string()),
        "[a-z /#?=]{0,6}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

/// Characters a terminal shows as themselves.
fn printable() -> impl Strategy<Value = String> {
    "[^\\p{Cc}\u{202a}-\u{202e}\u{2066}-\u{2069}]{0,40}"
}

/// Whether `s` has an unsafe character other than a line feed.
fn has_unsafe(s: &str) -> bool {
    s.chars().any(|c| is_unsafe(c) && c != '\n')
}

/// The fixed report with hostile strings wherever client text lands.
fn report_with(tag: &str, sql: &str) -> Report {
    let mut r = fixed_report();
    for f in &mut r.findings {
        f.query = format!("SELECT {sql} FROM t WHERE id = $1");
        if let Some(req) = &mut f.request {
            req.id = Some(tag.to_string());
            req.route = Some(format!("GET /{tag}"));
        }
        f.table = Some(format!("public.\"{tag}\""));
        f.database = Some(tag.to_string());
        f.details
            .insert(tag.to_string(), serde_json::Value::String(sql.to_string()));
    }
    if let Some(p) = r.findings.iter_mut().find_map(|f| f.parent.as_mut()) {
        p.query = sql.to_string();
    }
    r.runs[0].host = tag.to_string();
    r
}

fn render(r: &Report, format: Format) -> String {
    report::render(r, format, RenderOptions::default())
}

/// `s` without the exact colour sequences the text report writes, so a
/// raw escape from the data cannot hide among them.
fn strip_own_colours(s: &str) -> String {
    [
        "\u{1b}[1m",
        "\u{1b}[2m",
        "\u{1b}[1;31m",
        "\u{1b}[33m",
        "\u{1b}[36m",
        "\u{1b}[0m",
    ]
    .iter()
    .fold(s.to_string(), |acc, seq| acc.replace(seq, ""))
}

proptest! {
    #[test]
    fn escaped_text_has_no_controls_but_line_feeds(s in hostile()) {
        let out = for_terminal(&s);
        prop_assert!(!has_unsafe(&out), "{:?}", out);
        let line = for_terminal_line(&s);
        prop_assert!(!line.chars().any(is_unsafe), "{:?}", line);
        // Line feeds are the only thing the one-line form treats differently.
        prop_assert_eq!(for_terminal_line(&out), line);
    }

    #[test]
    fn printable_text_is_unchanged(s in printable()) {
        prop_assert_eq!(for_terminal(&s), s.as_str());
        prop_assert_eq!(for_terminal_line(&s), s.as_str());
    }

    #[test]
    fn anything_unsafe_is_changed(s in hostile()) {
        prop_assume!(has_unsafe(&s));
        prop_assert_ne!(for_terminal(&s), s.as_str());
    }

    #[test]
    fn no_format_prints_client_controls_raw(tag in hostile(), sql in hostile()) {
        let r = report_with(&tag, &sql);
        for format in [Format::Text, Format::Markdown, Format::Html, Format::Junit, Format::Sarif] {
            let out = render(&r, format);
            prop_assert!(!has_unsafe(&out), "{} output has controls:\n{:?}", format, out);
        }
        let junit = render(&r, Format::Junit);
        prop_assert!(roxmltree::Document::parse(&junit).is_ok(), "JUnit is not XML:\n{}", junit);
    }

    #[test]
    fn json_keeps_the_exact_strings_and_no_raw_controls(tag in hostile(), sql in hostile()) {
        let r = report_with(&tag, &sql);
        let out = render(&r, Format::Json);
        prop_assert!(!has_unsafe(&out), "{:?}", out);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let n1 = &json["findings"][0];
        prop_assert_eq!(n1["request"]["id"].as_str(), Some(tag.as_str()));
        prop_assert_eq!(n1["details"][tag.as_str()].as_str(), Some(sql.as_str()));
    }
}

/// With colour on, the text report's only escapes are its own colours.
#[test]
fn text_colours_are_the_only_escapes() {
    let r = report_with("\u{1b}[2J\u{7}", "\u{1b}]0;x\u{7}\u{1b}[33m");
    let out = report::render_text(&r, true);
    assert!(out.contains("\u{1b}[1m"), "colour is on");
    assert!(!has_unsafe(&strip_own_colours(&out)), "{out:?}");
    assert!(out.contains("\\x1b[2J\\x07"), "{out}");
}

/// What a hostile tag looks like in the formats people read, pinned.
#[test]
fn hostile_tags_shown_as_escapes() {
    let tag = "r1\u{1b}[2J\u{7}\u{202e}gnp.exe";
    let mut r = fixed_report();
    r.findings.truncate(1);
    r.findings[0].table = Some("public.\"a|b\u{1b}[2J\"".into());
    if let Some(req) = &mut r.findings[0].request {
        req.id = Some(tag.into());
        req.route = Some("GET /posts\u{9b}1m".into());
    }
    let text = report::render_text(&r, false);
    let markdown = report::render(&r, Format::Markdown, RenderOptions::default());
    insta::assert_snapshot!(format!("{text}\n---- markdown ----\n{markdown}"));
    assert!(
        text.contains("request r1\\x1b[2J\\x07\\u{202e}gnp.exe"),
        "{text}"
    );
    assert!(
        markdown.contains("| `public.\"a\\|b\\x1b[2J\"` |"),
        "pipes stay escaped in cells: {markdown}"
    );
}

#[test]
fn escaped_report_leaves_the_input_alone() {
    let r = report_with("\u{7}", "x");
    let copy = escape::escaped_report(&r);
    assert_eq!(r.findings[0].database.as_deref(), Some("\u{7}"));
    assert_eq!(copy.findings[0].database.as_deref(), Some("\\x07"));
    assert_eq!(
        copy.findings[0].id, r.findings[0].id,
        "hex ids are untouched"
    );
}
