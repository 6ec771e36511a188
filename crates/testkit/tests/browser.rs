//! The UI test harness end to end, on pages served by a tiny axum server in
//! this test (nothing of restic-manager's UI): navigate, fill, click, wait for
//! text, screenshot, requested URLs and console errors.

use std::time::{Duration, Instant};

use anyhow::Context;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use rm_testkit::Browser;

const LIMIT: Duration = Duration::from_secs(5);

/// A form whose button writes "hello <name>" into #out, with a stylesheet of
/// its own so that the page loads a resource besides itself.
const FORM_PAGE: &str = r#"<!doctype html>
<html><head><title>form</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/style.css">
</head><body>
<input id="name" value="placeholder">
<button id="go" type="button">Go</button>
<p id="out"></p>
<script>
document.getElementById('go').addEventListener('click', function () {
  document.getElementById('out').textContent = 'hello ' + document.getElementById('name').value;
});
</script>
</body></html>"#;

const ERROR_PAGE: &str = r#"<!doctype html>
<html><head><title>error</title><link rel="icon" href="data:,"></head>
<body><p id="done">loaded</p><script>console.error("boom");</script></body></html>"#;

async fn serve() -> anyhow::Result<String> {
    let app = Router::new()
        .route("/", get(|| async { Html(FORM_PAGE) }))
        .route("/error", get(|| async { Html(ERROR_PAGE) }))
        .route(
            "/style.css",
            get(|| async {
                (
                    [("content-type", "text/css")],
                    "body { font-family: sans-serif; }",
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(origin)
}

#[tokio::test]
async fn drives_a_page_end_to_end() -> anyhow::Result<()> {
    let origin = serve().await?;
    let started = Instant::now();
    let browser = Browser::start().await?;
    let start_time = started.elapsed();

    browser.goto(&format!("{origin}/")).await?;
    browser.wait_for("#name", LIMIT).await?;
    browser.fill("#name", "world").await?;
    browser.click("#go").await?;
    browser.wait_for_text("#out", "hello world", LIMIT).await?;

    let shot = browser.screenshot("harness form").await?;
    assert_eq!(
        shot.file_name().and_then(|n| n.to_str()),
        Some("harness_form.png")
    );
    let png = std::fs::read(&shot).with_context(|| format!("reading {}", shot.display()))?;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG: {}", shot.display());

    let urls = browser.requested_urls().await?;
    assert!(
        urls.iter().any(|u| u.ends_with("/style.css")),
        "the stylesheet is missing from {urls:?}"
    );
    for url in &urls {
        assert!(
            url.starts_with(&format!("{origin}/")),
            "{url} is not on {origin}"
        );
    }
    assert_eq!(browser.console_errors().await?, Vec::<String>::new());

    browser.goto(&format!("{origin}/error")).await?;
    browser.wait_for_text("#done", "loaded", LIMIT).await?;
    let errors = browser.console_errors().await?;
    assert!(
        errors.iter().any(|e| e.contains("boom")),
        "no \"boom\" among console errors {errors:?}"
    );

    let wait_fails = browser
        .wait_for_text("#done", "never there", Duration::from_millis(200))
        .await;
    let message = format!("{:#}", wait_fails.err().context("waiting should fail")?);
    assert!(message.contains("\"loaded\""), "{message}");

    browser.close().await?;
    eprintln!(
        "browser started in {start_time:?}, whole test {:?}",
        started.elapsed()
    );
    Ok(())
}
