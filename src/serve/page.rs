//! The status page at `/`: one HTML file in the binary (no CDN, no build step) that
//! watches the queries through the API and starts and stops them with its buttons.

use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;

const INDEX: &str = include_str!("page/index.html");

/// `GET /`.
pub async fn index() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            // Everything the page needs is in it or on this node.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
                ),
            ),
        ],
        INDEX,
    )
}
