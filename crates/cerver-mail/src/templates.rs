//! The emails the control plane sends. Each has a plain-text body (the link on a line of its
//! own, so that terminals and the spool log can pick it out) and a small HTML alternative in
//! which the link is escaped: it is data, never markup.

use lettre::Address;

use crate::Message;

/// The email that confirms an address at sign-up.
pub fn signup_message(to: &Address, verify_url: &str) -> Message {
    Message {
        to: to.clone(),
        subject: "Confirm your email address for Cerver".into(),
        text_body: format!(
            "Welcome to Cerver!\n\
             \n\
             Open this link to confirm your email address and finish signing up:\n\
             \n\
             {verify_url}\n\
             \n\
             If you did not sign up for Cerver, ignore this email.\n"
        ),
        html_body: Some(html(
            "Welcome to Cerver!",
            "Open this link to confirm your email address and finish signing up:",
            verify_url,
            "Confirm my email address",
            "If you did not sign up for Cerver, ignore this email.",
        )),
    }
}

/// The email that carries a one-time login link.
pub fn login_message(to: &Address, login_url: &str) -> Message {
    Message {
        to: to.clone(),
        subject: "Your Cerver login link".into(),
        text_body: format!(
            "Open this link to log in to Cerver:\n\
             \n\
             {login_url}\n\
             \n\
             The link works once and expires soon. Do not forward this email: anyone with the\n\
             link can log in as you. If you did not ask to log in, ignore this email.\n"
        ),
        html_body: Some(html(
            "Log in to Cerver",
            "Open this link to log in to Cerver:",
            login_url,
            "Log in",
            "The link works once and expires soon. Do not forward this email: anyone with the \
             link can log in as you. If you did not ask to log in, ignore this email.",
        )),
    }
}

/// The shared HTML layout. Only `url` varies at run time; it is escaped for both the
/// attribute and the text it appears in.
fn html(title: &str, lead: &str, url: &str, button: &str, footer: &str) -> String {
    let url = escape_html(url);
    format!(
        "<!DOCTYPE html>\n\
         <html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body style=\"font-family: sans-serif; line-height: 1.5\">\n\
         <h1 style=\"font-size: 1.3em\">{title}</h1>\n\
         <p>{lead}</p>\n\
         <p><a href=\"{url}\">{button}</a></p>\n\
         <p style=\"font-size: 0.9em\">Or copy this address into your browser:<br>{url}</p>\n\
         <p style=\"font-size: 0.9em; color: #555\">{footer}</p>\n\
         </body></html>\n"
    )
}

/// Escapes text for an HTML element or a quoted attribute value.
fn escape_html(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_email;

    #[test]
    fn signup_carries_the_link_in_both_bodies() {
        let to = parse_email("ada@example.com").unwrap();
        let url = "https://cerver.example/verify?token=abc&next=/home";
        let msg = signup_message(&to, url);
        assert_eq!(msg.to, to);
        assert!(msg.text_body.contains(&format!("\n{url}\n")));
        let html = msg.html_body.unwrap();
        assert!(html.contains("href=\"https://cerver.example/verify?token=abc&amp;next=/home\""));
        assert!(!html.contains("abc&next"));
    }

    #[test]
    fn login_carries_the_link() {
        let to = parse_email("ada@example.com").unwrap();
        let msg = login_message(&to, "https://cerver.example/login?t=xyz");
        assert!(msg.subject.contains("login"));
        assert!(msg.text_body.contains("https://cerver.example/login?t=xyz"));
        assert!(
            msg.html_body
                .unwrap()
                .contains("https://cerver.example/login?t=xyz")
        );
    }

    #[test]
    fn hostile_url_cannot_break_out_of_the_html() {
        let to = parse_email("ada@example.com").unwrap();
        let url = "https://x.example/\"><script>alert('x')</script>";
        let html = login_message(&to, url).html_body.unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("/\"><"), "{html}");
        assert!(html.contains("&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    }
}
