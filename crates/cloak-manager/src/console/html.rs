//! HTML text for the console's pages: escaping (every value from a request or the database goes
//! through `e`), times, form fields that carry their label and their error, pagination.

use std::fmt::Write;

use crate::error::Error;

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn e(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a query-string component.
pub fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `YYYY-MM-DDTHH:MM:SSZ` of Unix seconds.
pub fn iso(ts: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ts) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => ts.to_string(),
    }
}

/// A time: UTC in the markup and on hover; the script shows it in the user's time zone.
pub fn time(ts: i64) -> String {
    let iso = iso(ts);
    let text = iso.replacen('T', " ", 1).replace('Z', " UTC");
    format!(r#"<time datetime="{iso}" title="{iso} (UTC)">{text}</time>"#)
}

/// An error the console shows: the field it names (if any), the API's `type` and `detail`.
#[derive(Debug, Default)]
pub struct Problem {
    pub field: Option<String>,
    pub kind: String,
    pub detail: String,
    /// Whether a field of the form displayed it (otherwise the form shows it on top).
    pub placed: std::sync::atomic::AtomicBool,
}

impl Problem {
    pub fn from_error(err: &Error) -> Problem {
        let field = match err {
            // The conversion option checks name the option at the start of the reason.
            Error::InvalidField { field, reason } if field == "options" => Some(
                reason
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .filter(|w| !w.is_empty())
                    .unwrap_or(field)
                    .to_string(),
            ),
            Error::InvalidField { field, .. } => Some(field.clone()),
            Error::Unauthenticated(_) => Some("password".into()),
            _ => None,
        };
        let detail = match err {
            Error::InvalidField { reason, .. } => reason.clone(),
            e if e.status().is_server_error() => {
                "the manager failed; the log has the details (see the request id)".into()
            }
            e => e.to_string(),
        };
        Problem {
            field,
            kind: err.code().into(),
            detail,
            placed: Default::default(),
        }
    }

    /// Whether this error names the input `name` (or something inside it), or names it without
    /// the prefix of its object (option checks name `cpu_count` for
    /// `nitro_enclaves_options.cpu_count`).
    pub fn names(&self, name: &str) -> bool {
        match &self.field {
            Some(f) => {
                f == name
                    || f.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('[') || rest.starts_with('.'))
                    || name
                        .strip_suffix(f.as_str())
                        .is_some_and(|head| head.ends_with('.'))
            }
            None => false,
        }
    }
}

/// What a form shows again after a refused submission: the values typed and the error.
#[derive(Debug, Default)]
pub struct Refill {
    pub values: Vec<(String, String)>,
    pub problem: Option<std::sync::Arc<Problem>>,
    /// Which form on the page was submitted (pages with several forms).
    pub form: String,
}

impl Refill {
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn problem_for(&self, form: &str, name: &str) -> Option<&Problem> {
        self.problem
            .as_deref()
            .filter(|p| self.form == form && p.names(name))
    }

    /// The error of `form` that no field showed, as an alert (call after the fields).
    pub fn unplaced(&self, form: &str) -> String {
        match &self.problem {
            Some(p)
                if self.form == form && !p.placed.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                p.placed.store(true, std::sync::atomic::Ordering::Relaxed);
                format!(
                    r#"<p class="error" role="alert"><strong>{}</strong>: {}</p>"#,
                    e(&p.kind),
                    e(&p.detail)
                )
            }
            _ => String::new(),
        }
    }
}

/// Kinds of input the console's forms use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Password,
    Number,
    TextArea,
    Checkbox,
}

/// One labelled form field with its help text and, if the last submission failed on it, the
/// error beside it (`aria-invalid`, `aria-describedby`).
#[allow(clippy::too_many_arguments)]
pub fn field(
    out: &mut String,
    refill: &Refill,
    form: &str,
    name: &str,
    label: &str,
    kind: Kind,
    value: &str,
    help: &str,
) {
    let id = format!("{form}-{}", name.replace(['.', '[', ']'], "-"));
    let value = refill
        .value(name)
        .filter(|_| refill.form == form && kind != Kind::Password)
        .unwrap_or(value);
    let problem = refill.problem_for(form, name);
    let mut described = Vec::new();
    if !help.is_empty() {
        described.push(format!("{id}-help"));
    }
    if problem.is_some() {
        described.push(format!("{id}-error"));
    }
    let aria = if described.is_empty() {
        String::new()
    } else {
        format!(r#" aria-describedby="{}""#, described.join(" "))
    };
    let invalid = if problem.is_some() {
        r#" aria-invalid="true""#
    } else {
        ""
    };
    out.push_str(r#"<div class="field">"#);
    match kind {
        Kind::Checkbox => {
            let checked = if value == "on" || value == "true" {
                " checked"
            } else {
                ""
            };
            let _ = write!(
                out,
                r#"<input type="checkbox" id="{id}" name="{n}"{checked}{aria}{invalid}> <label for="{id}">{l}</label>"#,
                n = e(name),
                l = e(label)
            );
        }
        Kind::TextArea => {
            let _ = write!(
                out,
                r#"<label for="{id}">{l}</label><textarea id="{id}" name="{n}" rows="3"{aria}{invalid}>{v}</textarea>"#,
                n = e(name),
                l = e(label),
                v = e(value)
            );
        }
        _ => {
            let (ty, extra) = match kind {
                Kind::Password => ("password", r#" autocomplete="new-password""#),
                Kind::Number => ("text", r#" inputmode="numeric""#),
                _ => ("text", ""),
            };
            let _ = write!(
                out,
                r#"<label for="{id}">{l}</label><input type="{ty}" id="{id}" name="{n}" value="{v}"{extra}{aria}{invalid}>"#,
                n = e(name),
                l = e(label),
                v = if kind == Kind::Password {
                    String::new()
                } else {
                    e(value)
                }
            );
        }
    }
    if !help.is_empty() {
        let _ = write!(out, r#"<p class="help" id="{id}-help">{}</p>"#, e(help));
    }
    if let Some(p) = problem {
        p.placed.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = write!(
            out,
            r#"<p class="error" id="{id}-error" role="alert"><strong>{}</strong>: {}</p>"#,
            e(&p.kind),
            e(&p.detail)
        );
    }
    out.push_str("</div>");
}

/// A labelled `<select>`.
pub fn select(
    out: &mut String,
    form: &str,
    name: &str,
    label: &str,
    options: &[(&str, &str)],
    selected: &str,
) {
    let id = format!("{form}-{name}");
    let _ = write!(
        out,
        r#"<div class="field"><label for="{id}">{}</label><select id="{id}" name="{}">"#,
        e(label),
        e(name)
    );
    for (v, l) in options {
        let sel = if *v == selected { " selected" } else { "" };
        let _ = write!(out, r#"<option value="{}"{sel}>{}</option>"#, e(v), e(l));
    }
    out.push_str("</select></div>");
}

/// The hidden CSRF field every form that changes something carries.
pub fn csrf(token: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, e(token))
}

/// Previous / next links of a server-side page; `base` is the path with its other parameters.
pub fn pager(base: &str, offset: i64, limit: i64, count: i64) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    let pages = ((count + limit - 1) / limit).max(1);
    let page = offset / limit + 1;
    let mut out = format!(
        r#"<nav class="pager" aria-label="pages"><span>page {page} of {pages} ({count} in all)</span> "#
    );
    if offset > 0 {
        let prev = (offset - limit).max(0);
        let _ = write!(
            out,
            r#"<a href="{}{sep}offset={prev}" rel="prev">previous</a> "#,
            e(base)
        );
    }
    if offset + limit < count {
        let _ = write!(
            out,
            r#"<a href="{}{sep}offset={}" rel="next">next</a>"#,
            e(base),
            offset + limit
        );
    }
    out.push_str("</nav>");
    out
}

/// A status as a badge (text plus colour, never colour alone).
pub fn badge(status: &str) -> String {
    let class = match status {
        "WHITELISTED" | "SUCCESS" | "ISSUED" | "APPROVED" | "SUCCEEDED" | "ACTIVE" => "ok",
        "REJECTED" | "DENIED" | "FAILED" | "CANCELLED" | "DISABLED" => "bad",
        _ => "wait",
    };
    format!(r#"<span class="badge {class}">{}</span>"#, e(status))
}

/// A long value in full with a copy button.
pub fn copyable(label: &str, value: &str) -> String {
    format!(
        r#"<div class="measure"><span class="mlabel">{l}</span> <code>{v}</code> <button type="button" class="copy" data-copy="{v}" aria-label="Copy {l}">Copy</button></div>"#,
        l = e(label),
        v = e(value)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_attributes() {
        assert_eq!(
            e(r#"<a href="x" onclick='y'>&"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;"
        );
    }

    #[test]
    fn times_are_utc_in_markup() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert!(time(86400 + 61).contains(r#"datetime="1970-01-02T00:01:01Z""#));
    }

    #[test]
    fn a_problem_names_its_field_and_the_fields_inside() {
        let p = Problem {
            field: Some("approval_policy.approvers[1]".into()),
            ..Default::default()
        };
        assert!(p.names("approval_policy.approvers"));
        assert!(p.names("approval_policy"));
        assert!(!p.names("approval_policy.n"));
        let p = Problem {
            field: Some("cpu_count".into()),
            ..Default::default()
        };
        assert!(p.names("nitro_enclaves_options.cpu_count"));
        assert!(!p.names("nitro_enclaves_options.xcpu_count"));
    }
}
