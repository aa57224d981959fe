//! Writing HTML by hand, safely: every interpolated string goes through [`Esc`], the
//! one escaping helper, and every page through [`page`], the one layout (header,
//! signed-in client, scripts).
//!
//! No template engine: the pages are a few tables, and `format!` with [`Esc`] keeps
//! what is escaped visible at each interpolation.

use std::fmt::{self, Write as _};

use capstan_core::Timestamp;

use super::assets;
use crate::auth::Caller;

/// Displays a string escaped for HTML text and double- or single-quoted attribute
/// values: `&`, `<`, `>`, `"` and `'` become character references.
#[derive(Debug, Clone, Copy)]
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// The link to a pool's page. Pool ids hold only `a-z 0-9 - _ /`, so the id goes into
/// the path as it is (its `/` included; the dashboard's routes take it that way).
pub fn pool_href(id: &str) -> String {
    format!("/pools/{id}")
}

/// `12:03:04 UTC` for instants of the last day, `2026-11-28 12:03 UTC` before.
pub fn clock(t: Timestamp, now: Timestamp) -> String {
    let s = t.to_string(); // 2026-11-28T12:03:04.123Z
    if (now.unix_ms() - t.unix_ms()).abs() < 86_400_000 {
        format!("{} UTC", &s[11..19])
    } else {
        format!("{} {} UTC", &s[..10], &s[11..16])
    }
}

/// A duration for people: `42 s`, `3 min 20 s`, `2 h 05 min`, `3 d 4 h`.
pub fn age(secs: f64) -> String {
    let s = secs.max(0.0) as i64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A whole page: `title`, the signed-in client (`None` on the sign-in page), `body`
/// (already escaped HTML).
pub fn page(title: &str, who: Option<&Caller>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"htmx-config\" content='{{\"includeIndicatorStyles\":false,\"allowEval\":false,\"allowScriptTags\":false,\"historyCacheSize\":0}}'>\
         <title>{} · capstan</title>\
         <link rel=\"icon\" type=\"image/svg+xml\" href=\"{}\">\
         <link rel=\"stylesheet\" href=\"{}\"><link rel=\"stylesheet\" href=\"{}\">\
         <script src=\"{}\" defer></script><script src=\"{}\" defer></script><script src=\"{}\" defer></script>\
         </head><body><header class=\"top\"><a class=\"brand\" href=\"/\">capstan</a>",
        Esc(title),
        assets::url("favicon.svg"),
        assets::url("uPlot.min.css"),
        assets::url("dashboard.css"),
        assets::url("htmx.min.js"),
        assets::url("uPlot.iife.min.js"),
        assets::url("dashboard.js"),
    );
    if let Some(c) = who {
        let scopes: Vec<String> = c.scopes.iter().map(ToString::to_string).collect();
        let _ = write!(
            out,
            "<nav><a href=\"/\">Pools</a></nav><div class=\"who\">signed in as \
             <span id=\"whoami\">{}</span> <span class=\"scopes\" title=\"the scopes of this API client\">{}</span>\
             <form method=\"post\" action=\"/signout\"><button type=\"submit\">Sign out</button></form></div>",
            Esc(&c.name),
            Esc(&scopes.join(" ")),
        );
    }
    let _ = writeln!(out, "</header><main>{body}</main></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup_or_quote_through() {
        let hostile = r#"ci/x"><script>alert('1')</script>&amp;"#;
        let out = Esc(hostile).to_string();
        assert_eq!(
            out,
            "ci/x&quot;&gt;&lt;script&gt;alert(&#39;1&#39;)&lt;/script&gt;&amp;amp;"
        );
        for c in ['<', '>', '"', '\''] {
            assert!(!out.contains(c), "{c} left in {out}");
        }
        // Plain text, multi-byte text and the empty string pass unchanged.
        assert_eq!(Esc("ci/linux-large é ✓").to_string(), "ci/linux-large é ✓");
        assert_eq!(Esc("").to_string(), "");
    }

    #[test]
    fn durations_and_clocks_read_as_people_write_them() {
        assert_eq!(age(-3.0), "0 s");
        assert_eq!(age(59.9), "59 s");
        assert_eq!(age(200.0), "3 min 20 s");
        assert_eq!(age(7500.0), "2 h 05 min");
        assert_eq!(age(3.0 * 86_400.0 + 4.0 * 3600.0 + 5.0), "3 d 4 h");
        let now = Timestamp::from_unix_secs(1_800_000_000); // 2027-01-15T08:00:00Z
        assert_eq!(clock(now.plus_secs(-63), now), "07:58:57 UTC");
        assert_eq!(
            clock(now.plus_secs(-2 * 86_400), now),
            "2027-01-13 08:00 UTC"
        );
    }
}
