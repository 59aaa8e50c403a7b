//! The dashboard: one embedded HTML shell for every page, and its script and style sheet
//! (`gateway/dashboard/`), served from the binary. The pages hold no data: the script asks the
//! JSON API for everything, with the browser's cookies and the CSRF header, so what a page can
//! show or change is decided by the same pipeline and policies as any API call.
//!
//! Every response of the gateway carries the strict Content-Security-Policy
//! ([`crate::web::security`]); the shell has no inline script or style, so it needs nothing
//! looser.

use axum::http::header;
use axum::response::IntoResponse;

use super::Handlers;

const INDEX: &str = include_str!("../../dashboard/index.html");
const APP_JS: &str = include_str!("../../dashboard/app.js");
const APP_CSS: &str = include_str!("../../dashboard/app.css");

/// The page paths (axum syntax), each answered with the shell; the script routes on the path.
pub const PAGES: &[&str] = &[
    "/",
    "/signup",
    "/check-email",
    "/verify-email",
    "/login",
    "/forgot-password",
    "/reset-password",
    "/account",
    "/accept-invitation",
    "/orgs",
    "/orgs/{org}",
    "/orgs/{org}/settings",
    "/orgs/{org}/members",
    "/orgs/{org}/api-keys",
    "/orgs/{org}/zones",
    "/orgs/{org}/audit",
];

pub fn handlers() -> Handlers {
    let mut handlers = Handlers::new()
        .get("/assets/app.js", || async {
            asset("text/javascript; charset=utf-8", APP_JS)
        })
        .get("/assets/app.css", || async {
            asset("text/css; charset=utf-8", APP_CSS)
        });
    for page in PAGES {
        handlers = handlers.get(page, || async {
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX)
        });
    }
    handlers
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type)], body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CSP allows no inline script or style: the shell must have none, and must load the
    /// script and style sheet from this origin.
    #[test]
    fn the_shell_has_no_inline_script_or_style() {
        let lower = INDEX.to_ascii_lowercase();
        assert!(!lower.contains("<style"));
        assert!(!lower.contains(" style="));
        assert!(!lower.contains(" on"), "no inline event handler attributes");
        for tag in lower.split("<script").skip(1) {
            let open = tag.split('>').next().unwrap_or_default();
            assert!(
                open.contains("src=\"/assets/"),
                "inline script: <script{open}>"
            );
        }
        assert!(lower.contains("src=\"/assets/app.js\""));
        assert!(lower.contains("href=\"/assets/app.css\""));
        for text in [APP_JS, APP_CSS, INDEX] {
            assert!(
                !text.contains("http://") && !text.contains("//cdn"),
                "no third-party origin"
            );
        }
        assert!(!APP_JS.contains("localStorage") && !APP_JS.contains("sessionStorage"));
        assert!(!APP_JS.contains("eval(") && !APP_JS.contains("new Function"));
    }
}
