//! HTTP clients for tests: the one way a test builds a `reqwest` client.
//!
//! The workspace builds reqwest with `rustls-no-provider` (ring, no
//! aws-lc-rs), and such a reqwest panics when it builds a client, even one
//! that only ever speaks `http://`, unless a rustls provider is installed
//! for the process. These helpers install ring first, so
//! `reqwest::Client::new()` must not be called directly in tests.

/// A client builder with the process's rustls provider in place.
pub fn client_builder() -> reqwest::ClientBuilder {
    // An `Err` only says a provider is already installed, which is the goal.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// A plain client: `reqwest::Client::new()` for tests, panicking as it
/// does when TLS cannot be set up (which no input can cause).
#[allow(clippy::expect_used)] // the same panic `reqwest::Client::new()` has
pub fn client() -> reqwest::Client {
    client_builder()
        .build()
        .expect("reqwest builds a client with the ring provider installed")
}

/// `path` for a URL's query (`?path=…`): unreserved characters and `/`
/// as they are, every other byte percent-encoded.
pub fn query_value(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Reads an SSE stream to its end as (event name, JSON data) pairs.
pub async fn read_sse(mut response: reqwest::Response) -> Vec<(String, serde_json::Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() {
                events.push((
                    name,
                    serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
                ));
            }
        }
    }
    events
}
