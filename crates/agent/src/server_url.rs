//! The server's base URL: validated once, then turned into the enrolment
//! endpoint and the WebSocket endpoint, keeping any path prefix so the
//! server can sit behind a reverse proxy at `https://example.com/backups/`.

use std::fmt;

use reqwest::Url;

use crate::error::AgentError;

/// Path of the enrolment endpoint, below the server's base URL.
const ENROLL_PATH: &str = "/api/v1/agents/enroll";

/// Path of the agent WebSocket endpoint, below the server's base URL.
const WS_PATH: &str = "/ws/agent";

/// A validated `http://` or `https://` server base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    url: Url,
}

impl ServerUrl {
    /// Validates a server URL as an operator typed it.
    pub(crate) fn parse(text: &str) -> Result<Self, AgentError> {
        let invalid = |reason: &str| AgentError::InvalidServerUrl {
            url: text.to_owned(),
            reason: reason.to_owned(),
        };
        let url = Url::parse(text.trim()).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(
                "it must start with http:// or https:// (e.g. http://backup.example.com:8080)",
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("it has no host name"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("it must not contain a user name or password"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "it must not contain a query (`?…`) or fragment (`#…`)",
            ));
        }
        Ok(ServerUrl { url })
    }

    /// Whether talking to the server needs TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// `POST` here to enrol.
    pub(crate) fn enroll_url(&self) -> Url {
        self.below(ENROLL_PATH)
    }

    /// The agent WebSocket endpoint: `ws://` for `http://`, `wss://` for
    /// `https://`.
    pub(crate) fn ws_url(&self) -> Url {
        let mut url = self.below(WS_PATH);
        let scheme = if self.is_tls() { "wss" } else { "ws" };
        // http→ws and https→wss are both "special" schemes, which `Url`
        // always lets us swap between; the fallback can only be reached if
        // that rule changed, and then the connect error names the URL.
        if url.set_scheme(scheme).is_err() {
            return url;
        }
        url
    }

    /// Where the server offers the agent binary for `platform` (a name
    /// [`rm_protocol::upgrade::is_platform`] accepts).
    pub(crate) fn download_url(&self, platform: &str) -> Url {
        self.below(&format!("/download/agent/{platform}"))
    }

    /// Where the agent posts the data of download `id` (see
    /// [`rm_protocol::downloads`]).
    pub(crate) fn upload_url(&self, id: &rm_core::DownloadId) -> Url {
        self.below(&rm_protocol::downloads::upload_path(&id.to_string()))
    }

    /// `url` as the upload URL of download `id` on another server of this
    /// agent's cluster: the same scheme as this server (the agent token
    /// never goes over plain HTTP when the server is HTTPS), no user,
    /// query or fragment, and exactly the upload path of `id`. The host is
    /// the server's to choose (its `--internal-url`).
    pub(crate) fn other_upload_url(
        &self,
        url: &str,
        id: &rm_core::DownloadId,
    ) -> Result<Url, String> {
        let parsed = Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if parsed.scheme() != self.url.scheme() {
            return Err(format!(
                "{url:?} is not {}:// like this agent's server",
                self.url.scheme()
            ));
        }
        if !parsed.username().is_empty()
            || parsed.password().is_some()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
            || parsed.host_str().is_none_or(str::is_empty)
        {
            return Err(format!("{url:?} must be a plain server URL"));
        }
        let expected = rm_protocol::downloads::upload_path(&id.to_string());
        if !parsed.path().ends_with(&expected) {
            return Err(format!("{url:?} is not the upload URL of download {id}"));
        }
        Ok(parsed)
    }

    fn below(&self, path: &str) -> Url {
        let mut url = self.url.clone();
        let prefix = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{prefix}{path}"));
        url
    }
}

impl fmt::Display for ServerUrl {
    /// The normalised URL without a trailing slash, as stored in `agent.json`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str().trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> ServerUrl {
        ServerUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn another_servers_upload_url_needs_the_scheme_and_the_exact_path() {
        let url = parsed("https://backup.example.com");
        let id = rm_core::DownloadId::new();
        let good = format!("https://10.0.0.2:8443/agent/v1/downloads/{id}");
        assert_eq!(
            url.other_upload_url(&good, &id).map(|u| u.to_string()),
            Ok(good.clone())
        );
        for bad in [
            format!("http://10.0.0.2:8080/agent/v1/downloads/{id}"),
            format!("https://u:p@10.0.0.2/agent/v1/downloads/{id}"),
            format!("https://10.0.0.2/agent/v1/downloads/{id}?x=1"),
            format!(
                "https://10.0.0.2/agent/v1/downloads/{}",
                rm_core::DownloadId::new()
            ),
            String::from("not a url"),
        ] {
            assert!(url.other_upload_url(&bad, &id).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_becomes_ws() {
        let url = parsed("http://127.0.0.1:8080");
        assert_eq!(url.ws_url().as_str(), "ws://127.0.0.1:8080/ws/agent");
        assert_eq!(
            url.enroll_url().as_str(),
            "http://127.0.0.1:8080/api/v1/agents/enroll"
        );
        assert!(!url.is_tls());
    }

    #[test]
    fn https_becomes_wss() {
        let url = parsed("https://backup.example.com");
        assert_eq!(url.ws_url().as_str(), "wss://backup.example.com/ws/agent");
        assert!(url.is_tls());
    }

    #[test]
    fn trailing_slash_does_not_double() {
        let url = parsed("http://example.com:8080/");
        assert_eq!(url.ws_url().as_str(), "ws://example.com:8080/ws/agent");
        assert_eq!(url.to_string(), "http://example.com:8080");
    }

    #[test]
    fn path_prefix_is_kept() {
        for text in ["http://example.com/backups", "http://example.com/backups/"] {
            let url = parsed(text);
            assert_eq!(url.ws_url().as_str(), "ws://example.com/backups/ws/agent");
            assert_eq!(
                url.enroll_url().as_str(),
                "http://example.com/backups/api/v1/agents/enroll"
            );
            assert_eq!(url.to_string(), "http://example.com/backups");
        }
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for text in [
            "",
            "example.com:8080",
            "ftp://example.com",
            "ws://example.com",
            "http://",
            "http://user:pw@example.com",
            "http://example.com/?x=1",
            "http://example.com/#frag",
            "not a url",
        ] {
            match ServerUrl::parse(text) {
                Err(e @ AgentError::InvalidServerUrl { .. }) => {
                    assert!(e.to_string().contains("invalid server URL"), "{e}")
                }
                other => panic!("{text:?} should be refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn scheme_error_says_what_to_use() {
        let err = ServerUrl::parse("ftp://example.com")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("http://")));
    }
}
