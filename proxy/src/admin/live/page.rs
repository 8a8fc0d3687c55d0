//! The live view's page: one HTML document with its CSS and JavaScript
//! inline (no external assets), and the Content-Security-Policy that allows
//! exactly that CSS and script, by hash, and nothing else: no other
//! script, no inline handlers, no images, no frames, no forms, requests
//! only to the admin port itself, and (Trusted Types) no HTML sinks.

use std::sync::OnceLock;

use base64::Engine;
use bytes::Bytes;
use sha2::{Digest, Sha256};

const TEMPLATE: &str = include_str!("page.html");
const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// The page and the CSP header that goes with it.
#[derive(Debug)]
pub struct Page {
    /// The HTML document.
    pub html: Bytes,
    /// The `Content-Security-Policy` value.
    pub csp: String,
}

/// The page, assembled once.
pub fn page() -> &'static Page {
    static PAGE: OnceLock<Page> = OnceLock::new();
    PAGE.get_or_init(|| Page {
        html: Bytes::from(TEMPLATE.replacen("{{STYLE}}", STYLE, 1).replacen(
            "{{SCRIPT}}",
            SCRIPT,
            1,
        )),
        csp: policy(&[SCRIPT], &[STYLE]),
    })
}

/// The policy for `/api/live` and anything else that is not the page.
pub const DATA_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

fn policy(scripts: &[&str], styles: &[&str]) -> String {
    let hashes = |sources: &[&str]| {
        sources
            .iter()
            .map(|s| format!("'sha256-{}'", sha256_base64(s)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'none'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
         require-trusted-types-for 'script'; trusted-types 'none'",
        hashes(scripts),
        hashes(styles)
    )
}

fn sha256_base64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text between the first `<tag>` and `</tag>` of the page.
    fn inline<'a>(html: &'a str, tag: &str) -> &'a str {
        let open = format!("<{tag}>");
        let start = html.find(&open).unwrap() + open.len();
        let end = start + html[start..].find(&format!("</{tag}>")).unwrap();
        &html[start..end]
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style_and_script() {
        let page = page();
        let html = std::str::from_utf8(&page.html).unwrap();
        assert!(!html.contains("{{"), "a placeholder was left in the page");
        for tag in ["script", "style"] {
            let hash = format!("'sha256-{}'", sha256_base64(inline(html, tag)));
            assert!(
                page.csp.contains(&hash),
                "{tag}: {hash} not in {}",
                page.csp
            );
            assert_eq!(
                html.matches(&format!("<{tag}")).count(),
                1,
                "one {tag} only"
            );
        }
        // A hash of known text, so the encoding is the one browsers use.
        assert_eq!(
            sha256_base64("alert(1)"),
            "bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI="
        );
        for directive in [
            "default-src 'none'",
            "connect-src 'self'",
            "img-src 'none'",
            "frame-ancestors 'none'",
            "trusted-types 'none'",
        ] {
            assert!(page.csp.contains(directive), "{directive}");
        }
        assert!(!page.csp.contains("unsafe"));
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let html = std::str::from_utf8(&page().html).unwrap();
        for needle in ["http://", "https://", "src=", "href=", "@import", "url("] {
            assert!(!html.contains(needle), "the page contains {needle}");
        }
        // Client text reaches the page only through textContent.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(sink), "the script uses {sink}");
        }
    }
}
